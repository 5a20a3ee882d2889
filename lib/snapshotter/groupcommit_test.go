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

// gate holds a store's batch calls and makes them fail or panic: the
// faults and timings a test must control. Set its fields under mu.
type gate struct {
	mu      sync.Mutex
	sizes   []int
	entered chan struct{} // receives when a batch call starts (if set)
	release chan struct{} // a batch call waits on it (if set)
	fail    error
	panics  bool
}

// pass records a batch of n, waits at the gate and returns the fault to
// inject (nil: go on to the store).
func (g *gate) pass(n int) error {
	g.mu.Lock()
	g.sizes = append(g.sizes, n)
	entered, release, fail, panics := g.entered, g.release, g.fail, g.panics
	g.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if release != nil {
		<-release
	}
	if panics {
		panic("store exploded")
	}
	return fail
}

// batchSizes returns the sizes of the batches that reached the gate.
func (g *gate) batchSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sizes)
}

// gatedStore is a real memstore whose batch writes pass a gate.
type gatedStore struct {
	*memstore.SnapshotStore
	gate
}

func (g *gatedStore) SaveSnapshots(ctx context.Context, snaps []eventsource.Snapshot) ([]bool, error) {
	if err := g.pass(len(snaps)); err != nil {
		return nil, err
	}
	return g.SnapshotStore.SaveSnapshots(ctx, snaps)
}

func newGated() *gatedStore { return &gatedStore{SnapshotStore: memstore.NewSnapshotStore()} }

func testSnap(id uuid.UUID, v int64) eventsource.Snapshot {
	return eventsource.Snapshot{AggregateID: id, AggregateType: "Account", Version: v, SchemaVersion: 1, EventID: uuid.New(),
		State: []byte(fmt.Sprintf(`{"v":%d}`, v)), CreatedAt: time.Now().UTC()}
}

type saveResult struct {
	stored bool
	err    error
}

// queued waits until n saves wait behind the write in flight.
func queued(t *testing.T, g *groupCommit, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got := g.pending(); got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d saves queued, want %d", g.pending(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// holdFirstWrite starts one save whose write is held at the gate, then
// one save per snapshot of snaps, which queue behind it, and releases the
// gate. It returns the first save's result and those of the queued ones.
func holdFirstWrite(t *testing.T, st *gatedStore, g *groupCommit, snaps []eventsource.Snapshot) (saveResult, []saveResult) {
	t.Helper()
	st.entered, st.release = make(chan struct{}, 100), make(chan struct{})
	first := make(chan saveResult, 1)
	go func() {
		ok, err := g.save(context.Background(), testSnap(uuid.New(), 1))
		first <- saveResult{ok, err}
	}()
	<-st.entered
	results := make([]saveResult, len(snaps))
	var wg sync.WaitGroup
	for i, s := range snaps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := g.save(context.Background(), s)
			results[i] = saveResult{ok, err}
		}()
	}
	queued(t, g, len(snaps))
	close(st.release)
	wg.Wait()
	return <-first, results
}

// queuedResults is holdFirstWrite for a store that takes the first write:
// it checks that write and returns the queued saves' results.
func queuedResults(t *testing.T, st *gatedStore, g *groupCommit, snaps []eventsource.Snapshot) []saveResult {
	t.Helper()
	first, results := holdFirstWrite(t, st, g, snaps)
	if !first.stored || first.err != nil {
		t.Fatalf("the first save: %v, %v", first.stored, first.err)
	}
	return results
}

func TestGroupCommitBatchesWhatQueuesDuringAWrite(t *testing.T) {
	st := newGated()
	g := newGroupCommit(st, 64, nil)
	var snaps []eventsource.Snapshot
	for range 10 {
		snaps = append(snaps, testSnap(uuid.New(), 5))
	}
	for i, r := range queuedResults(t, st, g, snaps) {
		if !r.stored || r.err != nil {
			t.Errorf("save %d: stored %v, err %v", i, r.stored, r.err)
		}
	}
	if got := st.batchSizes(); len(got) != 2 || got[0] != 1 || got[1] != 10 {
		t.Fatalf("batch sizes %v, want [1 10]: the saves that queued during the first write go in one", got)
	}
	for _, s := range snaps {
		if got, _ := st.GetSnapshot(context.Background(), s.AggregateType, s.AggregateID, s.SchemaVersion); got == nil || got.Version != 5 {
			t.Fatalf("snapshot of %s: %+v", s.AggregateID, got)
		}
	}
	// Nothing in flight any more: a lone save is written at once, alone.
	st.entered, st.release = nil, nil
	if ok, err := g.save(context.Background(), testSnap(uuid.New(), 1)); !ok || err != nil {
		t.Fatalf("lone save: %v, %v", ok, err)
	}
	if got := st.batchSizes(); got[len(got)-1] != 1 {
		t.Fatalf("lone save went in a batch of %d", got[len(got)-1])
	}
}

func TestGroupCommitRespectsMax(t *testing.T) {
	st := newGated()
	g := newGroupCommit(st, 8, nil)
	var snaps []eventsource.Snapshot
	for range 20 {
		snaps = append(snaps, testSnap(uuid.New(), 2))
	}
	for i, r := range queuedResults(t, st, g, snaps) {
		if !r.stored || r.err != nil {
			t.Errorf("save %d: stored %v, err %v", i, r.stored, r.err)
		}
	}
	got := st.batchSizes()
	total := 0
	for _, n := range got[1:] {
		if n > 8 {
			t.Fatalf("batch sizes %v: one is over the max of 8", got)
		}
		total += n
	}
	if total != 20 {
		t.Fatalf("batch sizes %v write %d queued saves, want 20", got, total)
	}
}

func TestGroupCommitReportsRefusedSnapshots(t *testing.T) {
	st := newGated()
	g := newGroupCommit(st, 64, nil)
	id := uuid.New()
	if ok, err := g.save(context.Background(), testSnap(id, 10)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	results := queuedResults(t, st, g, []eventsource.Snapshot{testSnap(id, 9), testSnap(uuid.New(), 1)})
	if results[0].stored || results[0].err != nil {
		t.Errorf("an older snapshot: stored %v, err %v; want refused without error", results[0].stored, results[0].err)
	}
	if !results[1].stored || results[1].err != nil {
		t.Errorf("a new snapshot: stored %v, err %v", results[1].stored, results[1].err)
	}
}

func TestGroupCommitIsolatesAnInvalidSnapshot(t *testing.T) {
	st := newGated()
	g := newGroupCommit(st, 64, nil)
	bad := testSnap(uuid.New(), 3)
	bad.State = []byte(`{"v":`)
	good := testSnap(uuid.New(), 3)
	results := queuedResults(t, st, g, []eventsource.Snapshot{bad, good})
	if !errors.Is(results[0].err, eventsource.ErrInvalidArgument) {
		t.Errorf("the invalid snapshot: err %v, want ErrInvalidArgument", results[0].err)
	}
	if !results[1].stored || results[1].err != nil {
		t.Errorf("the valid snapshot beside it: stored %v, err %v; one bad snapshot must not fail the others", results[1].stored, results[1].err)
	}
}

func TestGroupCommitStoreErrorReachesEverySave(t *testing.T) {
	st := newGated()
	g := newGroupCommit(st, 64, nil)
	down := errors.New("connection refused")
	st.fail = down
	var snaps []eventsource.Snapshot
	for range 5 {
		snaps = append(snaps, testSnap(uuid.New(), 1))
	}
	first, results := holdFirstWrite(t, st, g, snaps)
	for i, r := range append([]saveResult{first}, results...) {
		if !errors.Is(r.err, down) || r.stored {
			t.Errorf("save %d: stored %v, err %v; want the store's error", i, r.stored, r.err)
		}
	}
}

func TestGroupCommitPanicDoesNotStall(t *testing.T) {
	st := newGated()
	g := newGroupCommit(st, 64, nil)
	st.entered, st.release, st.panics = make(chan struct{}, 100), make(chan struct{}), true
	leader := make(chan any, 1)
	go func() {
		defer func() { leader <- recover() }()
		_, _ = g.save(context.Background(), testSnap(uuid.New(), 1))
	}()
	<-st.entered
	follower := make(chan saveResult, 1)
	go func() {
		ok, err := g.save(context.Background(), testSnap(uuid.New(), 1))
		follower <- saveResult{ok, err}
	}()
	queued(t, g, 1)
	st.mu.Lock()
	st.panics = false // the follower's own write, if it gets one, succeeds
	st.mu.Unlock()
	close(st.release)
	if p := <-leader; p == nil {
		t.Fatal("the store's panic did not reach the leader")
	}
	select {
	case r := <-follower:
		if r.err == nil && !r.stored {
			t.Fatalf("follower: stored false with no error after the panic")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the follower hangs after the leader's write panicked")
	}
	st.entered, st.release = nil, nil
	if ok, err := g.save(context.Background(), testSnap(uuid.New(), 1)); !ok || err != nil {
		t.Fatalf("a save after the panic: %v, %v", ok, err)
	}
}

func TestWorkerStoreWrapsOnlyWhatBatches(t *testing.T) {
	mem := memstore.New()
	cfg := DefaultConfig()
	cfg.Store = mem
	ws, ok := newWorkerStore(&cfg, nil, nil).(*workerStore)
	if !ok || ws.writes == nil || ws.reads == nil {
		t.Fatalf("default config: %T, want a wrapper with writes and reads batched", ws)
	}
	// WriteBatch 1: reads are still batched, writes are not.
	cfg.WriteBatch = 1
	if ws := newWorkerStore(&cfg, nil, nil).(*workerStore); ws.writes != nil || ws.reads == nil {
		t.Fatal("WriteBatch 1: writes batched, or reads not")
	}
	// And ReadBatch 1: nothing is wrapped.
	cfg.ReadBatch = 1
	if s := newWorkerStore(&cfg, nil, nil); s != eventsource.Store(mem) {
		t.Fatalf("WriteBatch and ReadBatch 1 wrapped the store: %T", s)
	}
}

// A batch is written under its leader's context: when that context has
// ended, the batch fails with its error for every save in it, and the next
// save leads a fresh write.
func TestGroupCommitLeaderContextEnded(t *testing.T) {
	st := newGated()
	g := newGroupCommit(st, 64, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := g.save(ctx, testSnap(uuid.New(), 1)); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("save under an ended context: %v, %v; want context.Canceled", ok, err)
	}
	if ok, err := g.save(context.Background(), testSnap(uuid.New(), 1)); !ok || err != nil {
		t.Fatalf("the next save: %v, %v", ok, err)
	}
}
