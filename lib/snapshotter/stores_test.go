package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
)

// gatedReads is a real memstore whose batched reads pass a gate, and which
// counts the reads that did not batch.
type gatedReads struct {
	*memstore.Store
	gate
	singleGets int
}

func (g *gatedReads) GetSnapshots(ctx context.Context, typ string, schemaVersion int, ids []uuid.UUID) ([]*eventsource.Snapshot, error) {
	if err := g.pass(len(ids)); err != nil {
		return nil, err
	}
	return g.Store.GetSnapshots(ctx, typ, schemaVersion, ids)
}

func (g *gatedReads) GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, error) {
	g.mu.Lock()
	g.singleGets++
	g.mu.Unlock()
	return g.Store.GetSnapshot(ctx, typ, id, schemaVersion)
}

// readStores returns the worker's wrappers over a gated memstore.
func readStores(t *testing.T) (*gatedReads, *workerStore) {
	t.Helper()
	g := &gatedReads{Store: memstore.New()}
	cfg := DefaultConfig()
	cfg.Store = g
	ws, ok := newWorkerStore(&cfg, nil, nil).(*workerStore)
	if !ok || ws.reads == nil {
		t.Fatalf("newWorkerStore: %T, want reads batched", ws)
	}
	return g, ws
}

// holdFirstReads starts one call per batch slot of b, whose batched reads
// are held at the gate, then the others, which queue behind them, and
// releases the gate once they have queued. first(i) is the i-th slot's
// call.
func holdFirstReads(t *testing.T, g *gatedReads, b interface{ pending() int }, slots int, first func(i int), others []func()) {
	t.Helper()
	g.mu.Lock()
	g.entered, g.release = make(chan struct{}, 100), make(chan struct{})
	g.mu.Unlock()
	var firsts sync.WaitGroup
	for i := range slots {
		firsts.Add(1)
		go func() {
			defer firsts.Done()
			first(i)
		}()
		<-g.entered
	}
	var wg sync.WaitGroup
	for _, f := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.pending() < len(others) {
		if time.Now().After(deadline) {
			t.Fatalf("%d reads queued, want %d", b.pending(), len(others))
		}
		time.Sleep(time.Millisecond)
	}
	close(g.release)
	wg.Wait()
	firsts.Wait()
}

// slotSizes is the batch sizes of slots batches of one, then one of n.
func slotSizes(slots, n int) []int {
	out := slices.Repeat([]int{1}, slots)
	return append(out, n)
}

func TestReadBatcherBatchesDecisionReads(t *testing.T) {
	g, ws := readStores(t)
	ctx := context.Background()
	ids := make([]uuid.UUID, 6)
	for i := range ids {
		ids[i] = uuid.New()
		if i%2 == 0 {
			if _, err := g.SaveSnapshot(ctx, testSnap(ids[i], int64(10+i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	ids = append(ids, ids[0]) // asked twice
	got := make([]*eventsource.Snapshot, len(ids))
	errs := make([]error, len(ids))
	var others []func()
	for i, id := range ids {
		others = append(others, func() { got[i], errs[i] = ws.GetSnapshot(ctx, "Account", id, 1) })
	}
	holdFirstReads(t, g, ws.reads, ws.reads.inFlight, func(int) {
		if _, err := ws.GetSnapshot(ctx, "Account", uuid.New(), 1); err != nil {
			t.Errorf("a first read: %v", err)
		}
	}, others)
	if snaps := g.batchSizes(); !slices.Equal(snaps, slotSizes(ws.reads.inFlight, len(ids))) {
		t.Fatalf("batched read sizes %v, want %v", snaps, slotSizes(ws.reads.inFlight, len(ids)))
	}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("read %d: %v", i, errs[i])
		}
		switch {
		case i%2 == 0 && (got[i] == nil || got[i].AggregateID != id || got[i].Version != int64(10+i%6)):
			t.Fatalf("read %d of %s: %+v, want v%d", i, id, got[i], 10+i%6)
		case i%2 == 1 && got[i] != nil:
			t.Fatalf("read %d of %s: %+v, want none", i, id, got[i])
		}
	}
	if got[0] == got[len(ids)-1] {
		t.Fatal("two reads of one aggregate share a *Snapshot")
	}
	if g.singleGets != 0 {
		t.Fatalf("%d reads bypassed the batch", g.singleGets)
	}
}

// A failed batched read fails every call in it with the store's error;
// the next call leads a fresh read.
func TestReadBatchFailureFailsItsCalls(t *testing.T) {
	g, ws := readStores(t)
	ctx := context.Background()
	errDown := errors.New("injected: database unreachable")
	g.fail = errDown
	errs := make([]error, 3)
	var others []func()
	for i := range errs {
		others = append(others, func() { _, errs[i] = ws.GetSnapshot(ctx, "Account", uuid.New(), 1) })
	}
	holdFirstReads(t, g, ws.reads, ws.reads.inFlight, func(int) { _, _ = ws.GetSnapshot(ctx, "Account", uuid.New(), 1) }, others)
	for i, err := range errs {
		if !errors.Is(err, errDown) {
			t.Fatalf("read %d: %v, want the store's error", i, err)
		}
	}
	g.mu.Lock()
	g.fail, g.entered, g.release = nil, nil, nil
	g.mu.Unlock()
	if _, err := ws.GetSnapshot(ctx, "Account", uuid.New(), 1); err != nil {
		t.Fatalf("a read after the failure: %v", err)
	}
}

// A bad argument fails its own call, before it could join (and fail) a
// batch.
func TestReadBadArgumentFailsAlone(t *testing.T) {
	g, ws := readStores(t)
	ctx := context.Background()
	if _, err := ws.GetSnapshot(ctx, "Account", uuid.Nil, 1); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("GetSnapshot of a nil id: %v, want ErrInvalidArgument", err)
	}
	if snaps := g.batchSizes(); len(snaps) != 0 {
		t.Fatalf("a bad argument reached the store: %v", snaps)
	}
}

func TestByTypeSplitsMixedBatches(t *testing.T) {
	mk := func(types ...string) []*call[snapRead, *eventsource.Snapshot] {
		var out []*call[snapRead, *eventsource.Snapshot]
		for _, typ := range types {
			out = append(out, &call[snapRead, *eventsource.Snapshot]{in: snapRead{typ: typ, id: uuid.New()}})
		}
		return out
	}
	typ := func(r snapRead) string { return r.typ }
	one := mk("A", "A", "A")
	if parts := byType(one, typ); len(parts) != 1 || len(parts[0]) != 3 {
		t.Fatalf("one type: %d parts", len(parts))
	}
	mixed := mk("A", "B", "A", "C", "B")
	parts := byType(mixed, typ)
	want := [][]*call[snapRead, *eventsource.Snapshot]{{mixed[0], mixed[2]}, {mixed[1], mixed[4]}, {mixed[3]}}
	if len(parts) != len(want) {
		t.Fatalf("mixed: %d parts, want %d", len(parts), len(want))
	}
	for i := range want {
		if !slices.Equal(parts[i], want[i]) {
			t.Fatalf("mixed: part %d has %d calls, want %d, in order", i, len(parts[i]), len(want[i]))
		}
	}
}

// Many callers hammering a batcher with several batches in flight: every
// call is settled exactly once, with its own result, no batch is larger
// than max, and no more than inFlight run at once.
func TestBatcherSettlesEveryCallOnce(t *testing.T) {
	for _, inFlight := range []int{1, 2, 4} {
		t.Run(fmt.Sprint("inFlight=", inFlight), func(t *testing.T) {
			var (
				mu              sync.Mutex
				running, peak   int
				seen            = map[int]int{}
				oversized, runs int
			)
			b := newBatcher(8, inFlight, nil, func(_ context.Context, batch []*call[int, int]) {
				mu.Lock()
				running++
				peak = max(peak, running)
				runs++
				if len(batch) > 8 {
					oversized++
				}
				for _, c := range batch {
					seen[c.in]++
				}
				mu.Unlock()
				time.Sleep(50 * time.Microsecond)
				for _, c := range batch {
					c.out, c.err = c.in*2, nil
				}
				mu.Lock()
				running--
				mu.Unlock()
			})
			const callers, each = 32, 200
			var wg sync.WaitGroup
			for g := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						in := g*each + i
						if out, err := b.do(context.Background(), in); err != nil || out != 2*in {
							t.Errorf("do(%d) = %d, %v", in, out, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if len(seen) != callers*each || oversized > 0 || peak > inFlight {
				t.Fatalf("%d calls run, want %d; %d batches over max; %d batches at once, want at most %d", len(seen), callers*each, oversized, peak, inFlight)
			}
			for in, n := range seen {
				if n != 1 {
					t.Fatalf("call %d ran %d times", in, n)
				}
			}
			if b.pending() != 0 || b.running != 0 {
				t.Fatalf("after the calls: %d queued, %d batches running", b.pending(), b.running)
			}
			t.Logf("%d calls in %d batches, %d at once at most", callers*each, runs, peak)
		})
	}
}
