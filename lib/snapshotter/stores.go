package snapshotter

import (
	"context"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
)

// readsInFlight is how many batched decision reads run at once.
const readsInFlight = 2

// snapRead is the call the read batcher takes: the snapshot of typ/id of
// schema version schema.
type snapRead struct {
	typ    string
	schema int
	id     uuid.UUID
}

// workerStore is the store the worker decides and writes through: cfg's
// Store, whose snapshot saves go through the group commit and whose
// snapshot reads go through a read batcher (when WriteBatch and ReadBatch
// allow; nil: each call on its own). Everything else, LoadSnapshotAndEvents
// included, goes to the store as it is.
type workerStore struct {
	eventsource.Store
	writes *groupCommit
	reads  *batcher[snapRead, *eventsource.Snapshot]
}

var _ eventsource.Store = (*workerStore)(nil)

// SaveSnapshot implements eventsource.Store.
func (s *workerStore) SaveSnapshot(ctx context.Context, snap eventsource.Snapshot) (bool, error) {
	if s.writes == nil {
		return s.Store.SaveSnapshot(ctx, snap)
	}
	return s.writes.save(ctx, snap)
}

// GetSnapshot implements eventsource.Store.
func (s *workerStore) GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, error) {
	if s.reads == nil {
		return s.Store.GetSnapshot(ctx, typ, id, schemaVersion)
	}
	// A bad argument fails alone here, never the batch it would join.
	if err := storekit.ValidateStream(typ, id); err != nil {
		return nil, err
	}
	if err := storekit.ValidateSchemaVersion(schemaVersion); err != nil {
		return nil, err
	}
	return s.reads.do(ctx, snapRead{typ, schemaVersion, id})
}

// newWorkerStore returns the store the worker and its per-type
// repositories use: cfg.Store, with its snapshot writes and reads batched
// where WriteBatch and ReadBatch allow.
func newWorkerStore(cfg *Config, writeSizes, readSizes metric.Int64Histogram) eventsource.Store {
	if cfg.WriteBatch <= 1 && cfg.ReadBatch <= 1 {
		return cfg.Store
	}
	s := &workerStore{Store: cfg.Store}
	if cfg.WriteBatch > 1 {
		s.writes = newGroupCommit(cfg.Store, cfg.WriteBatch, writeSizes)
	}
	if cfg.ReadBatch > 1 {
		s.reads = newBatcher(cfg.ReadBatch, readsInFlight, readSizes, batchGetSnapshots(cfg.Store))
	}
	return s
}

// byType splits a batch by aggregate type (or any comparable key that
// must be the same within a part), keeping the calls' order; a worker
// usually sees one type, so there is usually one part.
func byType[In, Out any, K comparable](batch []*call[In, Out], typ func(In) K) [][]*call[In, Out] {
	if len(batch) == 0 {
		return nil
	}
	first := typ(batch[0].in)
	for _, c := range batch[1:] {
		if typ(c.in) != first {
			index := map[K]int{}
			var parts [][]*call[In, Out]
			for _, c := range batch {
				t := typ(c.in)
				i, ok := index[t]
				if !ok {
					i = len(parts)
					index[t] = i
					parts = append(parts, nil)
				}
				parts[i] = append(parts[i], c)
			}
			return parts
		}
	}
	return [][]*call[In, Out]{batch}
}

// batchGetSnapshots reads a batch of decision reads with one GetSnapshots
// call per aggregate type and schema version.
func batchGetSnapshots(g eventsource.SnapshotStore) func(context.Context, []*call[snapRead, *eventsource.Snapshot]) {
	type row struct {
		typ    string
		schema int
	}
	return func(ctx context.Context, batch []*call[snapRead, *eventsource.Snapshot]) {
		for _, part := range byType(batch, func(r snapRead) row { return row{r.typ, r.schema} }) {
			ids := make([]uuid.UUID, len(part))
			for i, c := range part {
				ids[i] = c.in.id
			}
			snaps, err := g.GetSnapshots(ctx, part[0].in.typ, part[0].in.schema, ids)
			if err == nil && len(snaps) != len(ids) {
				err = fmt.Errorf("snapshot store returned %d snapshots for %d ids", len(snaps), len(ids))
			}
			for i, c := range part {
				if err != nil {
					c.err = err
				} else {
					c.out, c.err = snaps[i], nil
				}
			}
		}
	}
}
