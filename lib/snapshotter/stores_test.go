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

// gatedReads is a real memstore whose batched reads can be held at a gate
// and made to fail: the timings and faults a test must control.
type gatedReads struct {
	*memstore.Store
	mu         sync.Mutex
	snapSizes  []int
	tailSizes  []int
	entered    chan struct{} // receives when a batched read starts (if set)
	release    chan struct{} // a batched read waits on it (if set)
	fail       error
	singleGets int
}

func (g *gatedReads) gate(sizes *[]int, n int) error {
	g.mu.Lock()
	*sizes = append(*sizes, n)
	entered, release, fail := g.entered, g.release, g.fail
	g.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if release != nil {
		<-release
	}
	return fail
}

func (g *gatedReads) GetSnapshots(ctx context.Context, typ string, ids []uuid.UUID) ([]*eventsource.Snapshot, error) {
	if err := g.gate(&g.snapSizes, len(ids)); err != nil {
		return nil, err
	}
	return g.Store.GetSnapshots(ctx, typ, ids)
}

func (g *gatedReads) GetSnapshot(ctx context.Context, typ string, id uuid.UUID) (*eventsource.Snapshot, error) {
	g.mu.Lock()
	g.singleGets++
	g.mu.Unlock()
	return g.Store.GetSnapshot(ctx, typ, id)
}

func (g *gatedReads) ReadTails(ctx context.Context, typ string, reads []eventsource.TailRead, limit int) ([][]eventsource.RecordedEvent, error) {
	if err := g.gate(&g.tailSizes, len(reads)); err != nil {
		return nil, err
	}
	return g.Store.ReadTails(ctx, typ, reads, limit)
}

func (g *gatedReads) sizes() (snaps, tails []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.snapSizes), slices.Clone(g.tailSizes)
}

// readStores returns the worker's wrappers over a gated memstore.
func readStores(t *testing.T) (*gatedReads, *workerStore) {
	t.Helper()
	g := &gatedReads{Store: memstore.New()}
	cfg := DefaultConfig()
	cfg.Events, cfg.Snapshots = g, g
	ev, _ := repoStores(&cfg, nil, nil)
	ws, ok := ev.(*workerStore)
	if !ok || ws.reads == nil || ws.tails == nil {
		t.Fatalf("repoStores over a store with batch reads: %T", ev)
	}
	return g, ws
}

func appendN(t *testing.T, s eventsource.EventStore, id uuid.UUID, n int) {
	t.Helper()
	events := make([]eventsource.NewEvent, n)
	for i := range events {
		events[i] = eventsource.NewEvent{ID: uuid.New(), Type: "Deposited", Payload: []byte(fmt.Sprintf(`{"amount":%d}`, i+1)), OccurredAt: time.Now().UTC()}
	}
	if _, err := s.Append(context.Background(), "Account", id, eventsource.NoStream, events); err != nil {
		t.Fatal(err)
	}
}

// holdFirstRead starts one call whose batched read is held at the gate,
// then the others, which queue behind it, and releases the gate once they
// have queued.
func holdFirstRead(t *testing.T, g *gatedReads, b interface{ pending() int }, first func(), others []func()) {
	t.Helper()
	g.mu.Lock()
	g.entered, g.release = make(chan struct{}, 100), make(chan struct{})
	g.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		first()
	}()
	<-g.entered
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
	<-done
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
		others = append(others, func() { got[i], errs[i] = ws.GetSnapshot(ctx, "Account", id) })
	}
	holdFirstRead(t, g, ws.reads, func() {
		if _, err := ws.GetSnapshot(ctx, "Account", uuid.New()); err != nil {
			t.Errorf("the first read: %v", err)
		}
	}, others)
	if snaps, _ := g.sizes(); !slices.Equal(snaps, []int{1, len(ids)}) {
		t.Fatalf("batched read sizes %v, want [1 %d]", snaps, len(ids))
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

func TestReadBatcherBatchesTailReads(t *testing.T) {
	g, ws := readStores(t)
	ctx := context.Background()
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	for i, id := range ids[:3] {
		appendN(t, g, id, 5*(i+1))
	}
	afters := []int64{0, 3, 15, 0} // the last stream does not exist
	got := make([][]int64, len(ids))
	errs := make([]error, len(ids))
	var others []func()
	for i, id := range ids {
		others = append(others, func() {
			for rec, err := range ws.ReadEvents(ctx, "Account", id, afters[i]) {
				if err != nil {
					errs[i] = err
					return
				}
				got[i] = append(got[i], rec.Version)
			}
		})
	}
	first := uuid.New()
	appendN(t, g, first, 1)
	holdFirstRead(t, g, ws.tails, func() {
		for _, err := range ws.ReadEvents(ctx, "Account", first, 0) {
			if err != nil {
				t.Errorf("the first read: %v", err)
			}
		}
	}, others)
	if _, tails := g.sizes(); !slices.Equal(tails, []int{1, len(ids)}) {
		t.Fatalf("batched tail read sizes %v, want [1 %d]", tails, len(ids))
	}
	want := [][]int64{{1, 2, 3, 4, 5}, {4, 5, 6, 7, 8, 9, 10}, nil, nil}
	for i := range ids {
		if errs[i] != nil || !slices.Equal(got[i], want[i]) {
			t.Fatalf("tail %d: %v, %v; want %v", i, got[i], errs[i], want[i])
		}
	}
}

// A tail longer than the batched read's limit continues with the store's
// ReadEvents, contiguously; a reader may stop early either side of the
// limit.
func TestTailLongerThanTheLimitReadsOn(t *testing.T) {
	g, ws := readStores(t)
	ctx := context.Background()
	id := uuid.New()
	appendN(t, g, id, tailLimit+150)
	for _, c := range []struct {
		after, stopAt int64
		want          int
	}{
		{0, 0, tailLimit + 150},
		{100, 0, tailLimit + 50},
		{tailLimit + 100, 0, 50},
		{0, 10, 10},
		{0, tailLimit + 20, tailLimit + 20},
	} {
		n, next := 0, c.after+1
		for rec, err := range ws.ReadEvents(ctx, "Account", id, c.after) {
			if err != nil {
				t.Fatalf("after v%d: %v", c.after, err)
			}
			if rec.Version != next {
				t.Fatalf("after v%d: got v%d, want v%d", c.after, rec.Version, next)
			}
			next++
			if n++; int64(n) == c.stopAt {
				break
			}
		}
		if n != c.want {
			t.Fatalf("after v%d (stop at %d): read %d events, want %d", c.after, c.stopAt, n, c.want)
		}
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
		others = append(others, func() { _, errs[i] = ws.GetSnapshot(ctx, "Account", uuid.New()) })
	}
	holdFirstRead(t, g, ws.reads, func() { _, _ = ws.GetSnapshot(ctx, "Account", uuid.New()) }, others)
	for i, err := range errs {
		if !errors.Is(err, errDown) {
			t.Fatalf("read %d: %v, want the store's error", i, err)
		}
	}
	g.mu.Lock()
	g.fail, g.entered, g.release = nil, nil, nil
	g.mu.Unlock()
	if _, err := ws.GetSnapshot(ctx, "Account", uuid.New()); err != nil {
		t.Fatalf("a read after the failure: %v", err)
	}
}

// A bad argument fails its own call, before it could join (and fail) a
// batch.
func TestReadBadArgumentFailsAlone(t *testing.T) {
	g, ws := readStores(t)
	ctx := context.Background()
	if _, err := ws.GetSnapshot(ctx, "Account", uuid.Nil); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("GetSnapshot of a nil id: %v, want ErrInvalidArgument", err)
	}
	for _, err := range ws.ReadEvents(ctx, "", uuid.New(), 0) {
		if !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Fatalf("ReadEvents of an empty type: %v, want ErrInvalidArgument", err)
		}
	}
	if snaps, tails := g.sizes(); len(snaps)+len(tails) != 0 {
		t.Fatalf("bad arguments reached the store: %v, %v", snaps, tails)
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
