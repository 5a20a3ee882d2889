package memstore

import (
	"bytes"
	"context"
	"slices"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

var (
	_ eventsource.AggregateCounter = (*Store)(nil)
	_ eventsource.SnapshotPruner   = (*Store)(nil)
)

// CountAggregates implements [eventsource.AggregateCounter]: always an
// exact count, O(aggregates of every type).
func (s *Store) CountAggregates(ctx context.Context, typ string, _ bool) (eventsource.AggregateCount, error) {
	if err := storekit.ValidateCount(typ); err != nil {
		return eventsource.AggregateCount{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventsource.AggregateCount{}, err
	}
	s.EventStore.mu.RLock()
	defer s.EventStore.mu.RUnlock()
	var n int64
	for k, stream := range s.EventStore.streams {
		if k.typ == typ && stream.n > 0 {
			n++
		}
	}
	return eventsource.AggregateCount{N: n}, nil
}

// PruneSnapshots implements [eventsource.SnapshotPruner]. A call covers
// the limit lowest ids above after among the aggregates with a snapshot
// of any type, as pgstore's does; it sorts every stored id, so it costs
// O(snapshots log snapshots).
// A batch that deleted a snapshot removes the sweep marks of the pruned
// schema versions, as DeleteSnapshotsByType does.
func (s *Store) PruneSnapshots(ctx context.Context, typ string, schemaVersionBelow int, after uuid.UUID, limit int) (eventsource.PruneBatch, error) {
	b, err := s.SnapshotStore.PruneSnapshots(ctx, typ, schemaVersionBelow, after, limit)
	if err == nil && b.Deleted > 0 {
		s.dropMarks(typ, schemaVersionBelow)
	}
	return b, err
}

// PruneSnapshots is [Store.PruneSnapshots] on the snapshot store alone.
func (s *SnapshotStore) PruneSnapshots(ctx context.Context, typ string, schemaVersionBelow int, after uuid.UUID, limit int) (eventsource.PruneBatch, error) {
	var b eventsource.PruneBatch
	if err := storekit.ValidatePrune(typ, schemaVersionBelow, limit); err != nil {
		return b, err
	}
	if err := ctx.Err(); err != nil {
		return b, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []uuid.UUID
	for k := range s.rows {
		if bytes.Compare(k.id[:], after[:]) > 0 {
			ids = append(ids, k.id)
		}
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	ids = slices.Compact(ids) // one per type with a snapshot
	if len(ids) <= limit {
		b.Done = true
	} else {
		ids = ids[:limit]
	}
	if len(ids) == 0 {
		return b, nil
	}
	b.Last = ids[len(ids)-1]
	for _, id := range ids {
		b.Deleted += s.deleteBelow(streamKey{typ, id}, schemaVersionBelow)
	}
	return b, nil
}
