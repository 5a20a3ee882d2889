package storekit

import (
	"bytes"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// DefaultKeptSchemaVersions is how many schema versions' snapshots the
// stores of this module keep per aggregate unless told otherwise: the
// current schema version and the previous one, so that the previous
// version of an application, during a rolling deploy or after a rollback,
// still finds its own snapshots. Each backend has an option to change it
// (memstore, sqlitestore and pgstore's WithKeptSchemaVersions).
const DefaultKeptSchemaVersions = 2

// ValidateKeptSchemaVersions checks a store's kept-schema-versions option:
// at least 1 (1 keeps only the newest schema version's snapshot, as
// releases before decision 28 did) and at most
// [eventsource.MaxSchemaVersion]. The error matches
// eventsource.ErrInvalidOption and names the value.
func ValidateKeptSchemaVersions(kept int) error {
	if kept < 1 || kept > eventsource.MaxSchemaVersion {
		return fmt.Errorf("%w: kept schema versions %d; keep from 1 to %d (MaxSchemaVersion) schema versions' snapshots per aggregate (default %d)",
			eventsource.ErrInvalidOption, kept, eventsource.MaxSchemaVersion, DefaultKeptSchemaVersions)
	}
	return nil
}

// SchemaKept reports whether a snapshot of schema version schema is kept
// when its aggregate's newest schema version is newest and the store keeps
// kept schema versions: schema > newest-kept (see
// [eventsource.SnapshotStore], Kept schema versions). A store deletes the
// rows it does not keep and refuses to write them.
func SchemaKept(schema, newest, kept int) bool {
	return int64(schema) > int64(newest)-int64(kept)
}

// ResolveSnapshotBatch validates a batch for
// [eventsource.SnapshotStore.SaveSnapshots] and resolves snapshots of the
// same aggregate within it: it returns the indexes of the snapshots to
// write, at most one per row (aggregate and schema version), in batch
// order. Later snapshots of a row replace earlier ones they supersede, as
// if the batch were saved one by one, and a snapshot whose schema version
// another snapshot of its aggregate in the batch puts out of the kept
// window (see [SchemaKept]) is dropped. The store then checks each
// against what it holds. Stores call it first.
func ResolveSnapshotBatch(snaps []eventsource.Snapshot, kept int) ([]int, error) {
	type aggKey struct {
		typ string
		id  uuid.UUID
	}
	type rowKey struct {
		aggKey
		schema int
	}
	winner := make(map[rowKey]int, len(snaps))
	newest := make(map[aggKey]int, len(snaps))
	for i := range snaps {
		if err := snaps[i].Validate(); err != nil {
			return nil, fmt.Errorf("snapshot %d of the batch: %w", i, err)
		}
		a := aggKey{snaps[i].AggregateType, snaps[i].AggregateID}
		k := rowKey{a, snaps[i].SchemaVersion}
		if w, dup := winner[k]; !dup || snaps[i].Supersedes(&snaps[w]) {
			winner[k] = i
		}
		newest[a] = max(newest[a], snaps[i].SchemaVersion)
	}
	out := make([]int, 0, len(winner))
	for i := range snaps {
		a := aggKey{snaps[i].AggregateType, snaps[i].AggregateID}
		if winner[rowKey{a, snaps[i].SchemaVersion}] == i && SchemaKept(snaps[i].SchemaVersion, newest[a], kept) {
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
