package snapshotter

import (
	"context"
	"errors"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"go.opentelemetry.io/otel/metric"
)

// groupCommit writes the snapshots of concurrent rebuilds together, with
// one SaveSnapshots call: one round trip and one commit for the batch (see
// batcher for how batches form). If a batch fails because one of its
// snapshots is invalid, its snapshots are written one by one, so that one
// fails alone.
type groupCommit struct {
	store eventsource.SnapshotStore
	*batcher[eventsource.Snapshot, bool]
}

func newGroupCommit(store eventsource.SnapshotStore, max int, sizes metric.Int64Histogram) *groupCommit {
	g := &groupCommit{store: store}
	g.batcher = newBatcher(max, 1, sizes, g.write)
	return g
}

// save writes s, alone or in a batch, and returns SaveSnapshot's result
// for it.
func (g *groupCommit) save(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	return g.do(ctx, s)
}

// write saves a batch with one SaveSnapshots call.
func (g *groupCommit) write(ctx context.Context, batch []*call[eventsource.Snapshot, bool]) {
	n := len(batch)
	snaps := make([]eventsource.Snapshot, n)
	for i, c := range batch {
		snaps[i] = c.in
	}
	stored, err := g.store.SaveSnapshots(ctx, snaps)
	if err == nil && len(stored) != n {
		err = fmt.Errorf("snapshot store returned %d results for a batch of %d", len(stored), n)
	}
	switch {
	case err == nil:
		for i, c := range batch {
			c.out, c.err = stored[i], nil
		}
	case n > 1 && errors.Is(err, eventsource.ErrInvalidArgument):
		// One bad snapshot fails its whole batch; write them one by one so
		// it fails alone and the others are not held back with it.
		for _, c := range batch {
			c.out, c.err = g.store.SaveSnapshot(ctx, c.in)
		}
	default:
		for _, c := range batch {
			c.err = err
		}
	}
}
