package eventsource

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/google/uuid"
)

// Split returns a [Store] whose events are in events and whose snapshots
// are in snapshots: for an application that keeps them apart (events in
// PostgreSQL, snapshots in a cache or another database). It panics if
// either is nil.
//
// Its LoadSnapshotAndEvents reads the snapshot with GetSnapshot and then
// returns ReadEvents from the version the Store contract says, so a load
// costs two round trips (one to each store). Its ListAggregates yields one
// error matching [errors.ErrUnsupported]: no single query can see both
// halves, so the snapshotter's reconciliation sweep, stats, verify and
// rebuild of a whole type need a store that holds both. Everything else
// (loads, saves, snapshots in every mode, the worker's handling of
// notices, rebuilding one aggregate, pruning) works on a split store.
func Split(events EventStore, snapshots SnapshotStore) Store {
	if events == nil {
		panic("eventsource.Split: nil event store")
	}
	if snapshots == nil {
		panic("eventsource.Split: nil snapshot store")
	}
	return splitStore{events, snapshots}
}

// splitStore is what Split returns.
type splitStore struct {
	EventStore
	SnapshotStore
}

// LoadSnapshotAndEvents implements [Store]: GetSnapshot of schemaVersion's
// row, then ReadEvents from the snapshot's version (or from 1).
func (s splitStore) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*Snapshot, iter.Seq2[RecordedEvent, error], error) {
	if err := validateSchemaVersion(schemaVersion); err != nil {
		return nil, nil, err
	}
	snap, err := s.GetSnapshot(ctx, typ, id, schemaVersion)
	if err != nil {
		return nil, nil, err
	}
	from := int64(1)
	if snap != nil && snap.SchemaVersion == schemaVersion { // a SnapshotStore that keeps its contract returns no other
		from = snap.Version
	}
	return snap, s.ReadEvents(ctx, typ, id, from-1), nil
}

// ListAggregates implements [Store]: it yields one error matching
// errors.ErrUnsupported.
func (s splitStore) ListAggregates(context.Context, string, ListOptions) iter.Seq2[AggregateInfo, error] {
	return func(yield func(AggregateInfo, error) bool) {
		yield(AggregateInfo{}, errSplitCannotList)
	}
}

var errSplitCannotList = fmt.Errorf("eventsource: a store made by Split cannot list aggregates (its events and snapshots are in separate stores): %w", errors.ErrUnsupported)
