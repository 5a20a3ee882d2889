package snapshotter

import (
	"context"
	"fmt"
	"iter"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// tailLimit is the most events a batched tail read returns per aggregate.
// A rebuild whose tail is longer reads the rest with ReadEvents. The
// worker's tails are about a threshold long, so nearly every rebuild gets
// all its events from the batched read, and a batch holds at most
// ReadBatch × tailLimit events in memory.
const tailLimit = 256

// snapRead and tailRead are the calls the read batchers take.
type snapRead struct {
	typ string
	id  uuid.UUID
}

type tailRead struct {
	typ   string
	id    uuid.UUID
	after int64
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

// workerEvents is the event store the worker's repositories read through:
// the tails of rebuilds go through a read batcher when the store can read
// many tails at once (nil: each read on its own).
type workerEvents struct {
	eventsource.EventStore
	tails *batcher[tailRead, []eventsource.RecordedEvent]
}

// ReadEvents implements eventsource.EventStore. With a tail batcher, the
// first tailLimit events come from a batched read and the rest, if any,
// from the store's ReadEvents.
func (e *workerEvents) ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[eventsource.RecordedEvent, error] {
	if e.tails == nil {
		return e.EventStore.ReadEvents(ctx, typ, id, after)
	}
	if err := eventsource.ValidateStream(typ, id); err != nil {
		return eventsource.ErrorSeq(err)
	}
	after = max(after, 0)
	return func(yield func(eventsource.RecordedEvent, error) bool) {
		tail, err := e.tails.do(ctx, tailRead{typ, id, after})
		if err != nil {
			yield(eventsource.RecordedEvent{}, err)
			return
		}
		for _, rec := range tail {
			if !yield(rec, nil) {
				return
			}
		}
		if len(tail) < tailLimit {
			return
		}
		for rec, err := range e.EventStore.ReadEvents(ctx, typ, id, tail[len(tail)-1].Version) {
			if !yield(rec, err) {
				return
			}
		}
	}
}

// workerStore is workerEvents and workerSnapshots over one store that
// holds both (pgstore, memstore.Store): the repository sees one store, so
// it keeps loading a snapshot and its events in one round trip.
type workerStore struct {
	*workerEvents
	*workerSnapshots
	loader eventsource.SnapshotLoader
}

// LoadSnapshotAndEvents implements eventsource.SnapshotLoader.
func (s *workerStore) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, iter.Seq2[eventsource.RecordedEvent, error], error) {
	return s.loader.LoadSnapshotAndEvents(ctx, typ, id, schemaVersion)
}

var (
	_ eventsource.SnapshotStore  = (*workerSnapshots)(nil)
	_ eventsource.EventStore     = (*workerEvents)(nil)
	_ eventsource.EventStore     = (*workerStore)(nil)
	_ eventsource.SnapshotStore  = (*workerStore)(nil)
	_ eventsource.SnapshotLoader = (*workerStore)(nil)
)

// Read kinds, the "read" attribute of evsnap.worker.read.batch.size.
var (
	readSnapshots = metric.WithAttributes(attribute.String("read", "snapshots"))
	readTails     = metric.WithAttributes(attribute.String("read", "tails"))
)

// repoStores returns the event and snapshot stores the worker uses: cfg's
// own, wrapped where the stores have a batch capability that WriteBatch
// and ReadBatch allow.
func repoStores(cfg *Config, writeSizes, readSizes metric.Int64Histogram) (eventsource.EventStore, eventsource.SnapshotStore) {
	snaps := &workerSnapshots{SnapshotStore: cfg.Snapshots}
	if bs, ok := cfg.Snapshots.(eventsource.SnapshotBatchSaver); ok && cfg.WriteBatch > 1 {
		snaps.writes = newGroupCommit(bs, cfg.Snapshots, cfg.WriteBatch, writeSizes)
	}
	if bg, ok := cfg.Snapshots.(eventsource.SnapshotBatchGetter); ok && cfg.ReadBatch > 1 {
		snaps.reads = newBatcher(cfg.ReadBatch, readSizes, readSnapshots, batchGetSnapshots(bg))
	}
	events := &workerEvents{EventStore: cfg.Events}
	if tr, ok := cfg.Events.(eventsource.EventTailReader); ok && cfg.ReadBatch > 1 {
		events.tails = newBatcher(cfg.ReadBatch, readSizes, readTails, batchReadTails(tr))
	}
	wrapSnaps, wrapEvents := snaps.writes != nil || snaps.reads != nil, events.tails != nil
	if !wrapSnaps && !wrapEvents {
		return cfg.Events, cfg.Snapshots
	}
	if l, ok := cfg.Events.(eventsource.SnapshotLoader); ok && sameValue(cfg.Events, cfg.Snapshots) {
		s := &workerStore{workerEvents: events, workerSnapshots: snaps, loader: l}
		return s, s
	}
	var (
		ev eventsource.EventStore    = cfg.Events
		sn eventsource.SnapshotStore = cfg.Snapshots
	)
	if wrapEvents {
		ev = events
	}
	if wrapSnaps {
		sn = snaps
	}
	return ev, sn
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

// batchReadTails reads a batch of tail reads with one ReadTails call per
// aggregate type.
func batchReadTails(r eventsource.EventTailReader) func(context.Context, []*call[tailRead, []eventsource.RecordedEvent]) {
	return func(ctx context.Context, batch []*call[tailRead, []eventsource.RecordedEvent]) {
		for _, part := range byType(batch, func(r tailRead) string { return r.typ }) {
			reads := make([]eventsource.TailRead, len(part))
			for i, c := range part {
				reads[i] = eventsource.TailRead{AggregateID: c.in.id, After: c.in.after}
			}
			tails, err := r.ReadTails(ctx, part[0].in.typ, reads, tailLimit)
			if err == nil && len(tails) != len(reads) {
				err = fmt.Errorf("event store returned %d tails for %d reads", len(tails), len(reads))
			}
			for i, c := range part {
				if err != nil {
					c.err = err
				} else {
					c.out, c.err = tails[i], nil
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
