package storekit

import (
	"bytes"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// ResolveSnapshotBatch validates a batch for
// [eventsource.SnapshotStore.SaveSnapshots] and
// resolves snapshots of the same aggregate within it: it returns the
// indexes of the snapshots to write, one per aggregate, in batch order.
// Later snapshots of an aggregate replace earlier ones they supersede, as
// if the batch were saved one by one. Stores call it first.
func ResolveSnapshotBatch(snaps []eventsource.Snapshot) ([]int, error) {
	type key struct {
		typ string
		id  uuid.UUID
	}
	winner := make(map[key]int, len(snaps))
	for i := range snaps {
		if err := snaps[i].Validate(); err != nil {
			return nil, fmt.Errorf("snapshot %d of the batch: %w", i, err)
		}
		k := key{snaps[i].AggregateType, snaps[i].AggregateID}
		if w, dup := winner[k]; !dup || snaps[i].Supersedes(&snaps[w]) {
			winner[k] = i
		}
	}
	out := make([]int, 0, len(winner))
	for i := range snaps {
		if winner[key{snaps[i].AggregateType, snaps[i].AggregateID}] == i {
			out = append(out, i)
		}
	}
	return out, nil
}

// DistinctIDs returns ids without repeats, in the order they first
// appear: the ids a store reads for GetSnapshots.
func DistinctIDs(ids []uuid.UUID) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(ids))
	seen := make(map[uuid.UUID]struct{}, len(ids))
	for _, id := range ids {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// SnapshotsInOrder lays out what a store found for GetSnapshots (by
// aggregate id) in the order asked: snaps[i] is found[ids[i]], nil when
// there is none. An id asked for more than once gets its own copy each
// time after the first, so no two callers share a snapshot.
func SnapshotsInOrder(ids []uuid.UUID, found map[uuid.UUID]*eventsource.Snapshot) []*eventsource.Snapshot {
	snaps := make([]*eventsource.Snapshot, len(ids))
	given := make(map[uuid.UUID]bool, len(found))
	for i, id := range ids {
		s := found[id]
		if s == nil {
			continue
		}
		if given[id] {
			c := *s
			c.State = bytes.Clone(s.State)
			s = &c
		}
		given[id] = true
		snaps[i] = s
	}
	return snaps
}
