package storekit

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// MaxSweepMarkNameLen is the longest sweep mark name, in bytes, that every
// store accepts.
const MaxSweepMarkNameLen = 255

// ValidateScan checks ScanAggregates' arguments, as an error matching
// eventsource.ErrInvalidArgument. Stores call it first.
func ValidateScan(typ string, opts eventsource.ScanOptions) error {
	switch {
	case typ == "":
		return fmt.Errorf("%w: scan aggregates of an empty aggregate type", eventsource.ErrInvalidArgument)
	case len(typ) > MaxAggregateTypeLen:
		return fmt.Errorf("%w: aggregate type %.40q… is longer than %d bytes", eventsource.ErrInvalidArgument, typ, MaxAggregateTypeLen)
	case opts.SchemaVersion < 1 || opts.SchemaVersion > eventsource.MaxSchemaVersion:
		return fmt.Errorf("%w: scan aggregates of %s against the snapshots of schema version %d; schema versions run from 1 to %d (MaxSchemaVersion)",
			eventsource.ErrInvalidArgument, typ, opts.SchemaVersion, eventsource.MaxSchemaVersion)
	case opts.MinBehind < 0:
		return fmt.Errorf("%w: scan aggregates of %s at least %d behind; MinBehind must not be negative", eventsource.ErrInvalidArgument, typ, opts.MinBehind)
	case opts.Examine < 1 || opts.Examine > eventsource.MaxScanExamine:
		return fmt.Errorf("%w: scan examining %d aggregates of %s; Examine runs from 1 to %d (MaxScanExamine)", eventsource.ErrInvalidArgument, opts.Examine, typ, eventsource.MaxScanExamine)
	case opts.After.Seq < 0:
		return fmt.Errorf("%w: scan %s after change position %d; positions are not negative", eventsource.ErrInvalidArgument, typ, opts.After.Seq)
	}
	return nil
}

// ValidateSweepMarkKey checks a sweep mark's key, as an error matching
// eventsource.ErrInvalidArgument.
func ValidateSweepMarkKey(key eventsource.SweepMarkKey) error {
	switch {
	case key.Name == "":
		return fmt.Errorf("%w: sweep mark of %s with an empty name", eventsource.ErrInvalidArgument, key.AggregateType)
	case len(key.Name) > MaxSweepMarkNameLen:
		return fmt.Errorf("%w: sweep mark name %.40q… is longer than %d bytes", eventsource.ErrInvalidArgument, key.Name, MaxSweepMarkNameLen)
	case key.AggregateType == "":
		return fmt.Errorf("%w: sweep mark %s of an empty aggregate type", eventsource.ErrInvalidArgument, key.Name)
	case len(key.AggregateType) > MaxAggregateTypeLen:
		return fmt.Errorf("%w: aggregate type %.40q… is longer than %d bytes", eventsource.ErrInvalidArgument, key.AggregateType, MaxAggregateTypeLen)
	case key.SchemaVersion < 1 || key.SchemaVersion > eventsource.MaxSchemaVersion:
		return fmt.Errorf("%w: sweep mark %s of %s schema version %d; schema versions run from 1 to %d (MaxSchemaVersion)",
			eventsource.ErrInvalidArgument, key.Name, key.AggregateType, key.SchemaVersion, eventsource.MaxSchemaVersion)
	}
	return nil
}

// ValidateSweepMark checks PutSweepMark's arguments, as an error matching
// eventsource.ErrInvalidArgument. Stores call it first.
func ValidateSweepMark(key eventsource.SweepMarkKey, m eventsource.SweepMark) error {
	if err := ValidateSweepMarkKey(key); err != nil {
		return err
	}
	switch {
	case m.Generation < 0:
		return fmt.Errorf("%w: sweep mark %s/%s: generation %d is negative", eventsource.ErrInvalidArgument, key.Name, key.AggregateType, m.Generation)
	case m.Threshold < 0:
		return fmt.Errorf("%w: sweep mark %s/%s: threshold %d is negative", eventsource.ErrInvalidArgument, key.Name, key.AggregateType, m.Threshold)
	case m.After.Seq < 0:
		return fmt.Errorf("%w: sweep mark %s/%s: change position %d is negative", eventsource.ErrInvalidArgument, key.Name, key.AggregateType, m.After.Seq)
	case m.Changes && m.FullAfter != uuid.Nil:
		return fmt.Errorf("%w: sweep mark %s/%s: a full pass position (%s) on a mark whose full pass has ended", eventsource.ErrInvalidArgument, key.Name, key.AggregateType, m.FullAfter)
	}
	return nil
}

// NextPosition returns the change position a store hands out as a scan's
// Horizon when every change committed so far has a Seq of at most seq (a
// store whose changes commit in Seq order: SQLite, memory): every later
// change, whose Seq is greater, comes after it.
func NextPosition(seq int64) eventsource.ChangePosition {
	return eventsource.ChangePosition{Seq: seq, ID: maxID}
}

// maxID is the greatest uuid: (seq, maxID) comes after every change of seq.
var maxID = uuid.UUID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// NewSweepGeneration returns a new sweep mark generation: a random number
// from 1 to 2^63-1, which in practice no mark has had.
func NewSweepGeneration() int64 {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		if g := int64(binary.BigEndian.Uint64(b[:]) >> 1); g > 0 {
			return g
		}
	}
}

// FinishScanPage completes a ScanAggregates page read with opts, whose
// Behind the store has filled in any order: it sets Examined, End (fewer
// than opts.Examine examined) and the cursor of the page's order to the
// last aggregate examined (last, which the store names when examined > 0:
// its id, in id order, or its change position) or, when none was, to
// where the page started, leaving the other order's cursor zero; and it
// sorts Behind in the page's order.
func FinishScanPage(page *eventsource.ScanPage, opts eventsource.ScanOptions, examined int, last eventsource.ChangePosition) {
	page.Examined, page.End = examined, examined < opts.Examine
	page.NextID, page.Next = uuid.Nil, eventsource.ChangePosition{}
	switch {
	case opts.ByID && examined > 0:
		page.NextID = last.ID
	case opts.ByID:
		page.NextID = opts.AfterID
	case examined > 0:
		page.Next = last
	default:
		page.Next = opts.After
	}
	slices.SortFunc(page.Behind, func(x, y eventsource.ScannedAggregate) int {
		if opts.ByID {
			return compareIDs(x.AggregateID, y.AggregateID)
		}
		return x.Changed.Compare(y.Changed)
	})
}
