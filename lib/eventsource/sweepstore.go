package eventsource

import (
	"bytes"
	"cmp"
	"context"
	"errors"

	"github.com/google/uuid"
)

// ErrSweepMarkMoved: [SweepStore.PutSweepMark] found a stored mark of
// another generation than the one the caller read (another sweeper wrote
// it, or [SnapshotStore.DeleteSnapshotsByType] removed it); nothing was
// written. Read the mark again and start from it.
var ErrSweepMarkMoved = errors.New("eventsource: the sweep mark moved")

// MaxScanExamine is the most aggregates one [SweepStore.ScanAggregates]
// page examines.
const MaxScanExamine = 10_000

// SweepStore is a [Store] that keeps its streams in change order, so the
// snapshotter's reconciliation sweep can examine only the aggregates whose
// streams changed since its last pass instead of every aggregate, and
// that keeps the sweep's marks (where each sweep stands) beside the data
// they describe. The backends (memstore, sqlitestore, pgstore) implement
// it; the snapshotter finds it by type assertion and lists every
// aggregate with [Store.ListAggregates] on a store without it, or on one
// whose SweepStore methods return an error matching
// [errors.ErrUnsupported] (a wrapper may implement the interface and
// return that when the store it wraps does not). See
// docs/decisions/0037-sweep-costs-what-changed.md.
//
// # Change order
//
// Every append moves its stream to the end of the change order, at a
// [ChangePosition] after every position the store has handed out in a
// [ScanPage] before the append committed. So do DeleteSnapshot and
// DeleteStaleSnapshot when they remove a snapshot: an aggregate can fall
// behind without an append. (A save that removes rows out of the kept
// schema versions does not: the schema versions it removes can no longer
// be written while the newer row that removed them is stored.)
// DeleteSnapshotsByType removes the sweep marks of the schema versions it
// removes the snapshots of (those below schemaVersionBelow, every schema
// version of the type for 0), whether or not it found snapshots, and
// after them (in the same transaction where the store has them), so the
// sweeps of those versions start over with a full pass.
// Aggregates last changed before the store kept a change order (stored
// before the migration that added it) have none: only a scan in id order
// examines them.
type SweepStore interface {
	Store

	// ScanAggregates examines up to opts.Examine aggregates of typ, in
	// change order after opts.After or, with opts.ByID, in id order after
	// opts.AfterID, and returns those whose snapshot of
	// opts.SchemaVersion is at least opts.MinBehind behind the head, in
	// the order examined, with where the next page starts. It reads no
	// events, and each page is one read (one statement, or one read
	// transaction): its cost grows with opts.Examine, not with the
	// number of aggregates stored. In change order, a page examines only
	// changes whose place is final: no change committed later can come
	// before the page's last position (on PostgreSQL, where transactions
	// commit out of the order they began in, a page stops short of the
	// changes of transactions still open). An empty typ, a schema version
	// outside 1 to [MaxSchemaVersion], a negative MinBehind or an Examine
	// outside 1 to [MaxScanExamine] is an error matching
	// ErrInvalidArgument.
	ScanAggregates(ctx context.Context, typ string, opts ScanOptions) (ScanPage, error)

	// GetSweepMark returns the stored sweep mark of key, or the zero
	// SweepMark (Generation 0) when there is none. A mark the store cannot
	// vouch for (on PostgreSQL, one written on another database cluster,
	// whose change positions mean nothing here: the data was restored
	// into another cluster) is returned with its Generation and no
	// content, so the caller starts over and can overwrite it. An invalid
	// key is an error matching ErrInvalidArgument.
	GetSweepMark(ctx context.Context, key SweepMarkKey) (SweepMark, error)

	// PutSweepMark stores m as key's mark if the stored mark's generation
	// is m.Generation (0: there is none), and returns the new mark's
	// generation: a random positive number, so in practice one the key
	// never had, even after DeleteSnapshotsByType removed its mark. When
	// the stored generation differs it writes nothing and returns an
	// error matching [ErrSweepMarkMoved]. The compare and the write are
	// atomic. An invalid key, a negative Generation, Threshold or
	// After.Seq, or a FullAfter with Changes set, is an error matching
	// ErrInvalidArgument.
	PutSweepMark(ctx context.Context, key SweepMarkKey, m SweepMark) (generation int64, err error)
}

// ChangePosition is a place in a [SweepStore]'s change order: Seq orders
// the changes (on PostgreSQL the 64-bit id of the transaction that made
// the change, on SQLite and in memory a counter per store or type) and ID,
// the aggregate's, orders the changes one Seq holds. The zero
// ChangePosition comes before every change.
type ChangePosition struct {
	Seq int64
	ID  uuid.UUID
}

// Compare returns -1, 0 or +1 as p comes before, at or after q in change
// order.
func (p ChangePosition) Compare(q ChangePosition) int {
	if c := cmp.Compare(p.Seq, q.Seq); c != 0 {
		return c
	}
	return bytes.Compare(p.ID[:], q.ID[:])
}

// IsZero reports whether p is the zero position, before every change.
func (p ChangePosition) IsZero() bool { return p == ChangePosition{} }

// ScanOptions selects what [SweepStore.ScanAggregates] examines.
type ScanOptions struct {
	// SchemaVersion is the schema version of the snapshots measured
	// (from 1 to [MaxSchemaVersion]): an aggregate without a snapshot of
	// it is HeadVersion behind.
	SchemaVersion int
	// MinBehind keeps the aggregates at least this many events behind
	// their heads; 0 keeps every aggregate examined.
	MinBehind int64
	// Examine is how many aggregates the page examines at most, from 1 to
	// [MaxScanExamine].
	Examine int
	// ByID examines the aggregates in ascending id order after AfterID
	// (uuid.Nil: from the first), every aggregate of the type whatever
	// its change position; otherwise in change order after After.
	ByID    bool
	AfterID uuid.UUID
	After   ChangePosition
}

// ScannedAggregate is an aggregate a scan found at least MinBehind
// behind.
type ScannedAggregate struct {
	AggregateInfo
	// Changed is the aggregate's change position: where its stream last
	// changed (the zero position for an aggregate last changed before
	// the store kept a change order).
	Changed ChangePosition
}

// ScanPage is one page of [SweepStore.ScanAggregates].
type ScanPage struct {
	// Behind holds the aggregates examined that are at least MinBehind
	// behind, in the order examined.
	Behind []ScannedAggregate
	// Examined counts the aggregates examined (at most Examine).
	Examined int
	// End reports that the page examined fewer than Examine aggregates:
	// in id order there is no aggregate after NextID, in change order no
	// change after Next whose place is final yet.
	End bool
	// NextID (in id order) is the last id examined, or AfterID when none
	// was; Next (in change order) the last change position examined, or
	// After when none was. The next page starts after it.
	NextID uuid.UUID
	Next   ChangePosition
	// Horizon is a change position that every change committed after the
	// page's read comes after (on PostgreSQL, the changes of transactions
	// still open when the page was read come after it too). A full pass
	// in id order takes its first page's Horizon as where the passes in
	// change order resume once it ends: every change the full pass may
	// have missed comes after it.
	Horizon ChangePosition
}

// SweepMarkKey names a sweep mark: the sweeper (the snapshotter's durable
// consumer name, so fleets of different consumers keep their own) and the
// aggregate type and schema version of the snapshots it sweeps.
type SweepMarkKey struct {
	Name          string
	AggregateType string
	SchemaVersion int
}

// SweepMark is where the reconciliation sweep of one [SweepMarkKey]
// stands, as a [SweepStore] keeps it. Its zero value, with Generation 0,
// is "no mark": a full pass from the first aggregate is due.
type SweepMark struct {
	// Generation identifies the stored mark; 0 for none. The store sets
	// it; PutSweepMark takes the generation the caller read.
	Generation int64
	// Threshold is the highest MinBehind the passes since the mark's full
	// pass began used: every aggregate the mark has passed was, after its
	// last change, found less than that far behind or snapshotted.
	Threshold int64
	// Changes is false while a full pass in id order is under way (or
	// due), true once it has ended and the passes examine the changes
	// after After.
	Changes bool
	// FullAfter is, during a full pass, the last id it examined (uuid.Nil:
	// it starts at the first aggregate).
	FullAfter uuid.UUID
	// After is, once Changes, the last change position examined; during
	// a full pass, where the passes in change order resume once it ends
	// (its first page's Horizon).
	After ChangePosition
}
