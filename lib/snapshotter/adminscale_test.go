package snapshotter_test

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"math"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// rowCounter is a real store that counts the aggregates its listings
// yield, and can count them (it passes CountAggregates on).
type rowCounter struct {
	*memstore.Store
	listed atomic.Int64
}

func (c *rowCounter) ListAggregates(ctx context.Context, typ string, opts eventsource.ListOptions) iter.Seq2[eventsource.AggregateInfo, error] {
	return func(yield func(eventsource.AggregateInfo, error) bool) {
		for in, err := range c.Store.ListAggregates(ctx, typ, opts) {
			if err == nil {
				c.listed.Add(1)
			}
			if !yield(in, err) {
				return
			}
		}
	}
}

// accounts stores n Account aggregates of 1 to 9 events (raw appends:
// stats read no events) with ids from newID; those with i%3 != 0 get a
// snapshot at their head, the others none.
func accounts(t *testing.T, s eventsource.Store, n int, newID func() uuid.UUID) []uuid.UUID {
	t.Helper()
	ctx := context.Background()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = newID()
		events := make([]eventsource.NewEvent, 1+i%9)
		for j := range events {
			events[j] = eventsource.NewEvent{ID: uuid.New(), Type: "MoneyDeposited", Payload: []byte(`{"amount":1}`)}
		}
		res, err := s.Append(ctx, exampledomain.AccountType, ids[i], eventsource.NoStream, events)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 != 0 {
			if _, err := s.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: ids[i], AggregateType: exampledomain.AccountType, Version: res.LastVersion,
				SchemaVersion: 1, EventID: events[len(events)-1].ID, State: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ids
}

func accountWorker(t *testing.T, s eventsource.Store) *snapshotter.Worker {
	t.Helper()
	cfg := snapshotter.DefaultConfig()
	cfg.Store = s
	w, err := snapshotter.New(cfg, snapshotter.For[exampledomain.Account](exampledomain.NewRegistry(), eventsource.DefaultPolicy()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

// Stats estimates from a bounded sample, whatever the number of
// aggregates, and says so; a type of at most twice the sample, or Exact,
// reads every aggregate.
func TestStatsSamples(t *testing.T) {
	ctx := context.Background()
	s := &rowCounter{Store: memstore.New()}
	const n = 3000
	accounts(t, s, n, uuid.New)
	w := accountWorker(t, s)

	st, err := w.Stats(ctx, exampledomain.AccountType, snapshotter.StatsOptions{Stalest: 3, Sample: 200})
	if err != nil {
		t.Fatal(err)
	}
	// Two samples: the lowest id, then probes of 200+8 aggregates, each;
	// one probe does unless it lands near the highest id (about 7% of the
	// time), and seven, fewer than one listing of the type, leave a
	// margin no run of this test will reach.
	if got := s.listed.Load(); got >= n {
		t.Errorf("an estimated Stats listed %d aggregates of %d; want fewer than one listing of them", got, n)
	}
	if st.Sampled != 200 || st.Aggregates != n || st.AggregatesEstimated {
		t.Errorf("Stats = %d aggregates (estimated %v) from a sample of %d; want %d counted, a sample of 200", st.Aggregates, st.AggregatesEstimated, st.Sampled, n)
	}
	// 2,000 have a snapshot: the estimate is 2,000 ± a margin of about 200
	// (95%); a quarter off is five standard errors.
	if math.Abs(float64(st.Snapshots-2000)) > 500 || st.SnapshotsMargin < 100 || st.SnapshotsMargin > 300 {
		t.Errorf("estimated snapshots %d ± %d; want about 2000 ± 200", st.Snapshots, st.SnapshotsMargin)
	}
	if sum := st.EventsBehind.Buckets[0] + st.EventsBehind.Buckets[1]; math.Abs(float64(sum-n)) > 2 {
		t.Errorf("buckets %v add up to %d, want them scaled to %d aggregates", st.EventsBehind.Buckets, sum, n)
	}
	if len(st.Stalest) != 3 || st.Stalest[0].Behind() < st.Stalest[2].Behind() || st.Stalest[2].Behind() < 1 {
		t.Errorf("stalest of the sample = %+v", st.Stalest)
	}

	exact, err := w.Stats(ctx, exampledomain.AccountType, snapshotter.StatsOptions{Stalest: 3, Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	if exact.Sampled != 0 || exact.Aggregates != n || exact.Snapshots != 2000 || exact.NewestSchema[1] != 2000 || exact.EventsBehind.Max != 7 {
		t.Errorf("exact Stats = %+v", exact)
	}
	whole, err := w.Stats(ctx, exampledomain.AccountType, snapshotter.StatsOptions{Stalest: 3, Sample: n / 2})
	if err != nil {
		t.Fatal(err)
	}
	if whole.Sampled != 0 || whole.Aggregates != exact.Aggregates || whole.Snapshots != exact.Snapshots || whole.EventsBehind != exact.EventsBehind ||
		len(whole.Stalest) != 3 || whole.Stalest[0] != exact.Stalest[0] {
		t.Errorf("Stats of a type of twice the sample = %+v, want the exact %+v", whole, exact)
	}
	if _, err := w.Stats(ctx, exampledomain.AccountType, snapshotter.StatsOptions{Sample: -1}); !errors.Is(err, snapshotter.ErrInvalidConfig) || !strings.Contains(err.Error(), "sample -1") {
		t.Errorf("Stats with a negative sample: %v; want ErrInvalidConfig naming it", err)
	}
}

// A sample of time-ordered (UUIDv7) ids, which fill a sliver of the id
// space, still finds distinct aggregates: probes above the highest id lower
// the bound instead of landing on the first aggregate.
func TestVerifySamplesTimeOrderedIDs(t *testing.T) {
	ctx := context.Background()
	s := &rowCounter{Store: memstore.New()}
	const n = 5000
	accounts(t, s, n, func() uuid.UUID { return uuid.Must(uuid.NewV7()) })
	w := accountWorker(t, s)
	rep, err := w.Verify(ctx, exampledomain.AccountType, 50)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 50 {
		t.Errorf("Verify(sample 50) checked %d aggregates, want 50 distinct", rep.Checked)
	}
	// The lowest id, then at most 4×50+128 probes of 1+8 aggregates.
	if got, most := s.listed.Load(), int64(1+(4*50+128)*9); got > most {
		t.Errorf("Verify(sample 50) listed %d aggregates of %d; want at most %d", got, n, most)
	}
}

// A prune goes in batches in id order, reports its progress, stops when
// its context ends, and resumes after its Last without deleting anything
// twice or leaving anything behind.
func TestPruneResumes(t *testing.T) {
	store := memstore.New()
	ctx := context.Background()
	var ids []uuid.UUID
	for range 50 {
		id := uuid.New()
		ids = append(ids, id)
		for sv := 1; sv <= 2; sv++ {
			if _, err := store.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: exampledomain.AccountType, Version: 3, SchemaVersion: sv, EventID: uuid.New(), State: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	w := accountWorker(t, store)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var calls []snapshotter.PruneResult
	first, err := w.Prune(cctx, exampledomain.AccountType, 2, snapshotter.PruneOptions{Batch: 7, Progress: func(r snapshotter.PruneResult) {
		calls = append(calls, r)
		if len(calls) == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || first.Done || first.Batches != 3 || first.Deleted != 21 || first.Last != calls[2].Last {
		t.Fatalf("Prune stopped after 3 batches = %+v, %v; want 21 deleted, not done, canceled", first, err)
	}
	for _, id := range ids {
		gone, _ := store.GetSnapshot(ctx, exampledomain.AccountType, id, 1)
		if done := bytes.Compare(id[:], first.Last[:]) <= 0; done != (gone == nil) {
			t.Fatalf("after the stopped prune (last %s), %s has its schema 1 row: %v", first.Last, id, gone != nil)
		}
	}
	rest, err := w.Prune(ctx, exampledomain.AccountType, 2, snapshotter.PruneOptions{Batch: 7, After: first.Last})
	if err != nil || !rest.Done || first.Deleted+rest.Deleted != 50 || rest.Batches != 5 {
		t.Fatalf("resumed Prune = %+v, %v; want the other 29 in 5 batches", rest, err)
	}
	if n := store.SnapshotStore.Count(); n != 50 {
		t.Fatalf("%d snapshot rows left, want the 50 of schema 2", n)
	}
	if _, err := w.Prune(ctx, exampledomain.AccountType, 2, snapshotter.PruneOptions{Batch: -1}); !errors.Is(err, snapshotter.ErrInvalidConfig) || !strings.Contains(err.Error(), "-1") {
		t.Fatalf("Prune with batch -1: %v; want ErrInvalidConfig naming it", err)
	}
}

// A rebuild stopped part way resumes after its Last: every aggregate is
// rebuilt once across the two runs.
func TestRebuildResumes(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	reg := exampledomain.NewRegistry()
	repo, _ := eventsource.NewRepository[exampledomain.Account](store, reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	defer repo.Close(ctx)
	for range 30 {
		a := repo.New(uuid.New())
		_ = a.Open("r", 0)
		if err := repo.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	w := accountWorker(t, store)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	first, err := w.Rebuild(cctx, exampledomain.AccountType, snapshotter.RebuildOptions{Rate: 1e6, Progress: func(p snapshotter.RebuildProgress) {
		if p.Rebuilt == 10 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || first.Rebuilt != 10 || first.Last == uuid.Nil {
		t.Fatalf("stopped Rebuild = %+v, %v; want 10 rebuilt and canceled", first, err)
	}
	rest, err := w.Rebuild(ctx, exampledomain.AccountType, snapshotter.RebuildOptions{Rate: 1e6, After: first.Last})
	if err != nil || rest.Rebuilt != 20 || rest.Failed != 0 {
		t.Fatalf("resumed Rebuild = %+v, %v; want the other 20", rest, err)
	}
	if n := store.SnapshotStore.Count(); n != 30 {
		t.Fatalf("%d snapshots after the two runs, want 30", n)
	}
	if _, err := w.Rebuild(ctx, exampledomain.AccountType, snapshotter.RebuildOptions{ID: uuid.New(), After: first.Last}); !errors.Is(err, snapshotter.ErrInvalidConfig) {
		t.Fatalf("Rebuild with an id and a point to resume after: %v; want ErrInvalidConfig", err)
	}
}
