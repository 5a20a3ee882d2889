package memstore

import (
	"context"
	"iter"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

// Store is an [eventsource.Store]: an event store and a snapshot store
// together, which can also list aggregates with their head and snapshot
// versions, and an [eventsource.SweepStore], which keeps its streams in
// change order and the reconciliation sweep's marks.
type Store struct {
	*EventStore
	*SnapshotStore
	marks *sweepMarks
}

var _ eventsource.SweepStore = (*Store)(nil)

// New returns an empty Store. Options configure its snapshot store; an
// invalid one panics (see [NewSnapshotStore]).
func New(opts ...Option) *Store {
	return &Store{EventStore: NewEventStore(), SnapshotStore: NewSnapshotStore(opts...), marks: newSweepMarks()}
}

// Clear removes every event, snapshot and sweep mark.
func (s *Store) Clear() {
	s.EventStore.Clear()
	s.SnapshotStore.Clear()
	s.marks.clear()
}

// ListAggregates implements [eventsource.Store]. It takes a
// consistent copy of the heads first, so it costs O(aggregates of typ).
func (s *Store) ListAggregates(ctx context.Context, typ string, opts eventsource.ListOptions) iter.Seq2[eventsource.AggregateInfo, error] {
	if err := storekit.ValidateList(typ, opts); err != nil {
		return func(yield func(eventsource.AggregateInfo, error) bool) {
			yield(eventsource.AggregateInfo{}, err)
		}
	}
	return func(yield func(eventsource.AggregateInfo, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(eventsource.AggregateInfo{}, err)
			return
		}
		var infos []eventsource.AggregateInfo
		s.EventStore.mu.RLock()
		for k, st := range s.EventStore.streams {
			if k.typ == typ && st.n > 0 {
				infos = append(infos, eventsource.AggregateInfo{AggregateID: k.id, HeadVersion: st.n})
			}
		}
		s.EventStore.mu.RUnlock()
		s.SnapshotStore.mu.RLock()
		for i := range infos {
			rows := s.SnapshotStore.rows[streamKey{typ, infos[i].AggregateID}]
			for j := len(rows) - 1; j >= 0; j-- { // newest schema first
				if opts.SchemaVersion == 0 || rows[j].SchemaVersion == opts.SchemaVersion {
					infos[i].SnapshotVersion = rows[j].Version
					infos[i].SnapshotSchemaVersion = rows[j].SchemaVersion
					break
				}
			}
		}
		s.SnapshotStore.mu.RUnlock()
		infos = storekit.FilterAndSort(infos, opts)
		for _, in := range infos {
			if !yield(in, nil) {
				return
			}
		}
	}
}

// LoadSnapshotAndEvents implements [eventsource.Store] as
// [eventsource.Split] of its halves does: the snapshot, then the events
// as ReadEvents streams them.
func (s *Store) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, iter.Seq2[eventsource.RecordedEvent, error], error) {
	return eventsource.Split(s.EventStore, s.SnapshotStore).LoadSnapshotAndEvents(ctx, typ, id, schemaVersion)
}
