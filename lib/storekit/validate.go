package storekit

import (
	"fmt"
	"iter"

	"github.com/evsnap/evsnap/internal/jsonvalid"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// MaxAggregateTypeLen is the longest aggregate type name, in bytes, that
// every store accepts (the tutorial's snapshot table has varchar(255)).
const MaxAggregateTypeLen = 255

// ValidateStream checks the arguments every store method takes, as an error
// matching eventsource.ErrInvalidArgument. Stores call it first.
func ValidateStream(typ string, id uuid.UUID) error {
	if typ == "" {
		return fmt.Errorf("%w: empty aggregate type", eventsource.ErrInvalidArgument)
	}
	if len(typ) > MaxAggregateTypeLen {
		return fmt.Errorf("%w: aggregate type %.40q… is longer than %d bytes", eventsource.ErrInvalidArgument, typ, MaxAggregateTypeLen)
	}
	if id == uuid.Nil {
		return fmt.Errorf("%w: nil aggregate id for %s", eventsource.ErrInvalidArgument, typ)
	}
	return nil
}

// ValidateAppend checks Append's arguments, as an error matching
// eventsource.ErrInvalidArgument: an event id repeated within the append is a
// [*eventsource.DuplicateEventIDError] with InBatch set. Stores call it first, and need
// only find the ids that are already stored.
func ValidateAppend(typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) error {
	if err := ValidateStream(typ, id); err != nil {
		return err
	}
	if expected < eventsource.AnyVersion {
		return fmt.Errorf("%w: expected version %d for %s %s; use a version >= 0 or AnyVersion", eventsource.ErrInvalidArgument, expected, typ, id)
	}
	if len(events) == 0 {
		return fmt.Errorf("%w: append to %s %s with no events", eventsource.ErrInvalidArgument, typ, id)
	}
	for i := range events {
		e := &events[i]
		if e.Type == "" {
			return fmt.Errorf("%w: event %d of append to %s %s has an empty type", eventsource.ErrInvalidArgument, i, typ, id)
		}
		if e.ID == uuid.Nil {
			return fmt.Errorf("%w: event %d (%s) of append to %s %s has a nil id", eventsource.ErrInvalidArgument, i, e.Type, typ, id)
		}
		if len(e.Payload) == 0 {
			return fmt.Errorf("%w: event %d (%s) of append to %s %s has an empty payload", eventsource.ErrInvalidArgument, i, e.Type, typ, id)
		}
		if !jsonvalid.Valid(e.Payload) {
			return fmt.Errorf("%w: event %d (%s, id %s) of append to %s %s: payload is not valid JSON", eventsource.ErrInvalidArgument, i, e.Type, e.ID, typ, id)
		}
	}
	if dup, ok := repeatedID(events); ok {
		return &eventsource.DuplicateEventIDError{EventID: dup, AggregateType: typ, AggregateID: id, InBatch: true}
	}
	return nil
}

// repeatedID returns the first event id that appears a second time in
// events, if any. Appends are mostly a few events, compared pairwise
// without allocating; longer ones go through a set.
func repeatedID(events []eventsource.NewEvent) (uuid.UUID, bool) {
	if len(events) <= 16 {
		for i := 1; i < len(events); i++ {
			for j := range i {
				if events[i].ID == events[j].ID {
					return events[i].ID, true
				}
			}
		}
		return uuid.Nil, false
	}
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i := range events {
		if _, dup := seen[events[i].ID]; dup {
			return events[i].ID, true
		}
		seen[events[i].ID] = struct{}{}
	}
	return uuid.Nil, false
}

// ValidateDeleteByType checks DeleteSnapshotsByType's arguments, as an error
// matching eventsource.ErrInvalidArgument. Stores call it first.
func ValidateDeleteByType(typ string, schemaVersionBelow int) error {
	if typ == "" {
		return fmt.Errorf("%w: empty aggregate type", eventsource.ErrInvalidArgument)
	}
	if schemaVersionBelow < 0 || schemaVersionBelow > eventsource.MaxSchemaVersion {
		return fmt.Errorf("%w: schema version below %d for %s; use a schema version from 1 to %d (MaxSchemaVersion), or 0 for every schema version", eventsource.ErrInvalidArgument, schemaVersionBelow, typ, eventsource.MaxSchemaVersion)
	}
	return nil
}

// ValidateSchemaVersion checks a schema version argument (such as
// LoadSnapshotAndEvents' schemaVersion), as an error matching
// eventsource.ErrInvalidArgument that names the value and the range 1 to
// [eventsource.MaxSchemaVersion]. Stores call it first.
func ValidateSchemaVersion(schemaVersion int) error {
	if schemaVersion < 1 || schemaVersion > eventsource.MaxSchemaVersion {
		return fmt.Errorf("%w: schema version %d; schema versions run from 1 to %d (MaxSchemaVersion)", eventsource.ErrInvalidArgument, schemaVersion, eventsource.MaxSchemaVersion)
	}
	return nil
}

// ValidateGetSnapshots checks GetSnapshots' arguments, as an error
// matching eventsource.ErrInvalidArgument. Stores call it first.
func ValidateGetSnapshots(typ string, schemaVersion int, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return fmt.Errorf("%w: no aggregate ids to read the snapshots of (%s)", eventsource.ErrInvalidArgument, typ)
	}
	for i, id := range ids {
		if err := ValidateStream(typ, id); err != nil {
			return fmt.Errorf("id %d of the batch: %w", i, err)
		}
	}
	if err := ValidateSchemaVersion(schemaVersion); err != nil {
		return fmt.Errorf("snapshots of %s: %w", typ, err)
	}
	return nil
}

// ValidateList checks ListAggregates' arguments, as an error matching
// eventsource.ErrInvalidArgument: a non-empty type and a
// ListOptions.SchemaVersion from 0 (the newest each aggregate has) to
// [eventsource.MaxSchemaVersion]. Stores call it first and yield its
// error.
func ValidateList(typ string, opts eventsource.ListOptions) error {
	if typ == "" {
		return fmt.Errorf("%w: list aggregates of an empty aggregate type", eventsource.ErrInvalidArgument)
	}
	if opts.SchemaVersion < 0 || opts.SchemaVersion > eventsource.MaxSchemaVersion {
		return fmt.Errorf("%w: list aggregates of %s with the snapshots of schema version %d; use a schema version from 1 to %d (MaxSchemaVersion), or 0 for each aggregate's newest",
			eventsource.ErrInvalidArgument, typ, opts.SchemaVersion, eventsource.MaxSchemaVersion)
	}
	return nil
}

// ErrorSeq returns a sequence that yields only err. Stores use it to report
// invalid arguments from ReadEvents.
func ErrorSeq(err error) iter.Seq2[eventsource.RecordedEvent, error] {
	return func(yield func(eventsource.RecordedEvent, error) bool) {
		yield(eventsource.RecordedEvent{}, err)
	}
}
