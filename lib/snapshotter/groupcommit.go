package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
)

// groupCommit writes the snapshots of concurrent rebuilds together, with
// one SaveSnapshots call: one round trip and one commit for the batch.
//
// It has no timer and no goroutine of its own. A save that finds no write
// in flight leads: it writes at once, taking whatever else is queued. Saves
// that arrive while a write is in flight queue, and the first of them leads
// the next write as soon as the current one returns. Under light load a
// snapshot is written alone and without delay; under load the batches grow
// by themselves, up to max.
//
// A batch is written under its leader's context. The worker gives every
// rebuild the same context, so that is the context of every save in it.
type groupCommit struct {
	store  eventsource.SnapshotBatchSaver
	single eventsource.SnapshotStore // the same store, for one-by-one writes
	max    int
	sizes  metric.Int64Histogram // nil: not recorded

	mu      sync.Mutex
	queue   []*pendingSave
	writing bool
}

type pendingSave struct {
	snap   eventsource.Snapshot
	stored bool
	err    error
	// done receives true when a write has settled this save, or false when
	// the save must lead the next write.
	done chan bool
}

// errWriteIncomplete is what the saves of a batch get when its write
// panicked instead of returning.
var errWriteIncomplete = errors.New("snapshotter: the batched snapshot write did not complete")

// save queues s, writes it (leading a batch or waiting for the one that
// takes it) and returns SaveSnapshot's result for it.
func (g *groupCommit) save(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	p := &pendingSave{snap: s, done: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	lead := !g.writing
	g.writing = true
	g.mu.Unlock()
	if !lead && <-p.done {
		return p.stored, p.err
	}
	// A leader is always at the head of the queue: the first write's
	// leader found it empty, and later leaders are promoted from its head.
	g.write(ctx)
	return p.stored, p.err
}

// write takes up to max saves from the head of the queue, writes them and
// settles them, after handing the lead to the next queued save (if any).
func (g *groupCommit) write(ctx context.Context) {
	g.mu.Lock()
	n := min(len(g.queue), g.max)
	batch := g.queue[:n:n]
	g.queue = append([]*pendingSave(nil), g.queue[n:]...)
	g.mu.Unlock()

	defer func() {
		// Hand over even if the store panicked, or the queue would stall.
		g.mu.Lock()
		var next *pendingSave
		if len(g.queue) > 0 {
			next = g.queue[0]
		} else {
			g.writing = false
		}
		g.mu.Unlock()
		if next != nil {
			next.done <- false
		}
		for _, p := range batch[1:] {
			p.done <- true
		}
	}()
	if g.sizes != nil {
		g.sizes.Record(ctx, int64(n))
	}
	snaps := make([]eventsource.Snapshot, n)
	for i, p := range batch {
		snaps[i] = p.snap
		p.err = errWriteIncomplete // until the write says otherwise
	}
	stored, err := g.store.SaveSnapshots(ctx, snaps)
	if err == nil && len(stored) != n {
		err = fmt.Errorf("snapshot store returned %d results for a batch of %d", len(stored), n)
	}
	switch {
	case err == nil:
		for i, p := range batch {
			p.stored, p.err = stored[i], nil
		}
	case n > 1 && errors.Is(err, eventsource.ErrInvalidArgument):
		// One bad snapshot fails its whole batch; write them one by one so
		// it fails alone and the others are not held back with it.
		for _, p := range batch {
			p.stored, p.err = g.single.SaveSnapshot(ctx, p.snap)
		}
	default:
		for _, p := range batch {
			p.err = err
		}
	}
}

// batchingSnapshots is the snapshot store the worker's repositories write
// through: reads go to the store, writes through the group commit.
type batchingSnapshots struct {
	eventsource.SnapshotStore
	gc *groupCommit
}

func (b *batchingSnapshots) SaveSnapshot(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	return b.gc.save(ctx, s)
}

// batchingStore is batchingSnapshots for a store that holds both the
// events and the snapshots (pgstore): the repository sees one store, so it
// keeps loading the snapshot and the events in one round trip.
type batchingStore struct {
	eventsource.EventStore
	batchingSnapshots
	loader eventsource.SnapshotLoader
}

func (b *batchingStore) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, iter.Seq2[eventsource.RecordedEvent, error], error) {
	return b.loader.LoadSnapshotAndEvents(ctx, typ, id, schemaVersion)
}

var (
	_ eventsource.SnapshotStore  = (*batchingSnapshots)(nil)
	_ eventsource.EventStore     = (*batchingStore)(nil)
	_ eventsource.SnapshotLoader = (*batchingStore)(nil)
)

// repoStores returns the event and snapshot stores the worker's
// repositories use: cfg's own, or, when the snapshot store can save
// batches and WriteBatch allows it, wrappers that group the writes.
func repoStores(cfg *Config, sizes metric.Int64Histogram) (eventsource.EventStore, eventsource.SnapshotStore) {
	bs, ok := cfg.Snapshots.(eventsource.SnapshotBatchSaver)
	if !ok || cfg.WriteBatch <= 1 {
		return cfg.Events, cfg.Snapshots
	}
	snaps := batchingSnapshots{SnapshotStore: cfg.Snapshots, gc: &groupCommit{store: bs, single: cfg.Snapshots, max: cfg.WriteBatch, sizes: sizes}}
	if l, ok := cfg.Events.(eventsource.SnapshotLoader); ok && sameValue(cfg.Events, cfg.Snapshots) {
		s := &batchingStore{EventStore: cfg.Events, batchingSnapshots: snaps, loader: l}
		return s, s
	}
	return cfg.Events, &snaps
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
