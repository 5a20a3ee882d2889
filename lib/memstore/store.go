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
// versions.
type Store struct {
	*EventStore
	*SnapshotStore
}

var _ eventsource.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store {
	return &Store{EventStore: NewEventStore(), SnapshotStore: NewSnapshotStore()}
}

// Clear removes every event and snapshot.
func (s *Store) Clear() {
	s.EventStore.Clear()
	s.SnapshotStore.Clear()
}

// ListAggregates implements [eventsource.Store]. It takes a
// consistent copy of the heads first, so it costs O(aggregates of typ).
func (s *Store) ListAggregates(ctx context.Context, typ string, opts eventsource.ListOptions) iter.Seq2[eventsource.AggregateInfo, error] {
	if typ == "" {
		return func(yield func(eventsource.AggregateInfo, error) bool) {
			yield(eventsource.AggregateInfo{}, storekit.ValidateStream(typ, uuid.Nil))
		}
	}
	return func(yield func(eventsource.AggregateInfo, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(eventsource.AggregateInfo{}, err)
			return
		}
		var infos []eventsource.AggregateInfo
		s.EventStore.mu.RLock()
		for k, stream := range s.EventStore.streams {
			if k.typ == typ && len(stream) > 0 {
				infos = append(infos, eventsource.AggregateInfo{AggregateID: k.id, HeadVersion: int64(len(stream))})
			}
		}
		s.EventStore.mu.RUnlock()
		s.SnapshotStore.mu.RLock()
		for i := range infos {
			if sn, ok := s.SnapshotStore.snaps[streamKey{typ, infos[i].AggregateID}]; ok {
				infos[i].SnapshotVersion = sn.Version
				infos[i].SnapshotSchemaVersion = sn.SchemaVersion
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
