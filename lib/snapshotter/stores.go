package snapshotter

import (
	"context"
	"fmt"
	"iter"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
)

// readsInFlight is how many batched decision reads run at once.
const readsInFlight = 2

// snapRead is the call the read batcher takes.
type snapRead struct {
	typ string
	id  uuid.UUID
}

// workerSnapshots is the snapshot store the worker decides and writes
// through: its saves go through the group commit and its reads through a
// read batcher when the store has the batch capabilities (nil: each call
// on its own).
type workerSnapshots struct {
	eventsource.SnapshotStore
	writes *groupCommit
	reads  *batcher[snapRead, *eventsource.Snapshot]
}

// SaveSnapshot implements eventsource.SnapshotStore.
func (s *workerSnapshots) SaveSnapshot(ctx context.Context, snap eventsource.Snapshot) (bool, error) {
	if s.writes == nil {
		return s.SnapshotStore.SaveSnapshot(ctx, snap)
	}
	return s.writes.save(ctx, snap)
}

// GetSnapshot implements eventsource.SnapshotStore.
func (s *workerSnapshots) GetSnapshot(ctx context.Context, typ string, id uuid.UUID) (*eventsource.Snapshot, error) {
	if s.reads == nil {
		return s.SnapshotStore.GetSnapshot(ctx, typ, id)
	}
	// A bad argument fails alone here, never the batch it would join.
	if err := eventsource.ValidateStream(typ, id); err != nil {
		return nil, err
	}
	return s.reads.do(ctx, snapRead{typ, id})
}

// workerStore is workerSnapshots over a store that holds the events too
// (pgstore, memstore.Store): the repository sees one store, so it keeps
// loading a snapshot and its events in one round trip.
type workerStore struct {
	eventsource.EventStore
	*workerSnapshots
	loader eventsource.SnapshotLoader
}

// LoadSnapshotAndEvents implements eventsource.SnapshotLoader.
func (s *workerStore) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, iter.Seq2[eventsource.RecordedEvent, error], error) {
	return s.loader.LoadSnapshotAndEvents(ctx, typ, id, schemaVersion)
}

var (
	_ eventsource.SnapshotStore  = (*workerSnapshots)(nil)
	_ eventsource.EventStore     = (*workerStore)(nil)
	_ eventsource.SnapshotStore  = (*workerStore)(nil)
	_ eventsource.SnapshotLoader = (*workerStore)(nil)
)

// repoStores returns the event and snapshot stores the worker uses: cfg's
// own, or, where the snapshot store has a batch capability that
// WriteBatch or ReadBatch allows, a wrapper that batches its writes or its
// reads.
func repoStores(cfg *Config, writeSizes, readSizes metric.Int64Histogram) (eventsource.EventStore, eventsource.SnapshotStore) {
	snaps := &workerSnapshots{SnapshotStore: cfg.Snapshots}
	if bs, ok := cfg.Snapshots.(eventsource.SnapshotBatchSaver); ok && cfg.WriteBatch > 1 {
		snaps.writes = newGroupCommit(bs, cfg.Snapshots, cfg.WriteBatch, writeSizes)
	}
	if bg, ok := cfg.Snapshots.(eventsource.SnapshotBatchGetter); ok && cfg.ReadBatch > 1 {
		snaps.reads = newBatcher(cfg.ReadBatch, readsInFlight, readSizes, batchGetSnapshots(bg))
	}
	if snaps.writes == nil && snaps.reads == nil {
		return cfg.Events, cfg.Snapshots
	}
	if l := sharedLoader(cfg); l != nil {
		s := &workerStore{EventStore: cfg.Events, workerSnapshots: snaps, loader: l}
		return s, s
	}
	return cfg.Events, snaps
}

// sharedLoader returns cfg's store as a SnapshotLoader when one store
// holds the events and the snapshots and can read both in one round trip;
// nil otherwise.
func sharedLoader(cfg *Config) eventsource.SnapshotLoader {
	if l, ok := cfg.Events.(eventsource.SnapshotLoader); ok && sameValue(cfg.Events, cfg.Snapshots) {
		return l
	}
	return nil
}

// byType splits a batch by aggregate type, keeping the calls' order; a
// worker usually sees one type, so there is usually one part.
func byType[In, Out any](batch []*call[In, Out], typ func(In) string) [][]*call[In, Out] {
	if len(batch) == 0 {
		return nil
	}
	first := typ(batch[0].in)
	for _, c := range batch[1:] {
		if typ(c.in) != first {
			index := map[string]int{}
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
// call per aggregate type.
func batchGetSnapshots(g eventsource.SnapshotBatchGetter) func(context.Context, []*call[snapRead, *eventsource.Snapshot]) {
	return func(ctx context.Context, batch []*call[snapRead, *eventsource.Snapshot]) {
		for _, part := range byType(batch, func(r snapRead) string { return r.typ }) {
			ids := make([]uuid.UUID, len(part))
			for i, c := range part {
				ids[i] = c.in.id
			}
			snaps, err := g.GetSnapshots(ctx, part[0].in.typ, ids)
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

// sameValue reports whether the two stores are one value (false for
// incomparable values instead of a panic).
func sameValue(a eventsource.EventStore, b eventsource.SnapshotStore) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return any(a) == any(b)
}
