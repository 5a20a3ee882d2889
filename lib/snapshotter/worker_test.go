package snapshotter_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/evsnap/evsnap/lib/storetest"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// recordingStore wraps a real snapshot store and checks, write by write,
// that no aggregate's stored snapshot ever goes backwards. It also counts
// writes and can inject failures.
type recordingStore struct {
	eventsource.Store
	mu          sync.Mutex
	last        map[snapRow]int64 // each row's highest version seen
	regressions []string
	writes      atomic.Int64
	batches     atomic.Int64 // batch writes (SaveSnapshots calls)
	attempted   atomic.Int64 // snapshots handed to SaveSnapshots, stored or not
	// Batched decision reads: GetSnapshots calls, and the ids they read.
	snapReads, snapReadBatches atomic.Int64
	// Combined reads (LoadSnapshotAndEvents) and event reads (ReadEvents).
	combinedReads, eventReads atomic.Int64
	failing                   atomic.Bool
	block                     chan struct{}
	onStored                  func(id uuid.UUID, version int64)
	// unreadable, when set, fails the snapshot reads of the aggregates it
	// names (a rebuild that fails for one aggregate).
	unreadable atomic.Pointer[map[uuid.UUID]bool]
	// examined counts the aggregates the sweep's scans examined.
	examined atomic.Int64
}

// The backends keep their streams in change order; so does the wrapper
// of one, so the worker sweeps it as it sweeps them. The wrapper of
// another store (eventsource.Split) says it cannot, as a wrapper may.
var _ eventsource.SweepStore = (*recordingStore)(nil)

func (r *recordingStore) sweepStore() (eventsource.SweepStore, error) {
	if ss, ok := r.Store.(eventsource.SweepStore); ok {
		return ss, nil
	}
	return nil, fmt.Errorf("recordingStore: the store it wraps keeps no change order: %w", errors.ErrUnsupported)
}

func (r *recordingStore) ScanAggregates(ctx context.Context, typ string, opts eventsource.ScanOptions) (eventsource.ScanPage, error) {
	ss, err := r.sweepStore()
	if err != nil {
		return eventsource.ScanPage{}, err
	}
	page, err := ss.ScanAggregates(ctx, typ, opts)
	r.examined.Add(int64(page.Examined))
	return page, err
}

func (r *recordingStore) GetSweepMark(ctx context.Context, key eventsource.SweepMarkKey) (eventsource.SweepMark, error) {
	ss, err := r.sweepStore()
	if err != nil {
		return eventsource.SweepMark{}, err
	}
	return ss.GetSweepMark(ctx, key)
}

func (r *recordingStore) PutSweepMark(ctx context.Context, key eventsource.SweepMarkKey, m eventsource.SweepMark) (int64, error) {
	ss, err := r.sweepStore()
	if err != nil {
		return 0, err
	}
	return ss.PutSweepMark(ctx, key, m)
}

// unreadableID reports whether reads of id's snapshot are made to fail.
func (r *recordingStore) unreadableID(id uuid.UUID) bool {
	m := r.unreadable.Load()
	return m != nil && (*m)[id]
}

func newRecordingStore(b eventsource.Store) *recordingStore {
	return &recordingStore{Store: b, last: map[snapRow]int64{}}
}

// snapRow names a row of a snapshot store: an aggregate and a schema
// version.
type snapRow struct {
	id     uuid.UUID
	schema int
}

var errDown = errors.New("injected: database unreachable")

func (r *recordingStore) SaveSnapshot(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	stored, err := r.SaveSnapshots(ctx, []eventsource.Snapshot{s})
	if err != nil {
		return false, err
	}
	return stored[0], nil
}

// SaveSnapshots makes the worker write through its group commit, as it
// does on every real store; the checks apply to each snapshot.
func (r *recordingStore) SaveSnapshots(ctx context.Context, snaps []eventsource.Snapshot) ([]bool, error) {
	if r.failing.Load() {
		return nil, errDown
	}
	r.mu.Lock()
	block := r.block
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.attempted.Add(int64(len(snaps)))
	stored, err := r.Store.SaveSnapshots(ctx, snaps)
	if err != nil {
		return nil, err
	}
	r.batches.Add(1)
	for i, s := range snaps {
		if !stored[i] {
			continue
		}
		r.writes.Add(1)
		if r.onStored != nil {
			r.onStored(s.AggregateID, s.Version)
		}
		cur, gerr := r.Store.GetSnapshot(ctx, s.AggregateType, s.AggregateID, s.SchemaVersion)
		r.mu.Lock()
		if gerr == nil && cur != nil {
			row := snapRow{s.AggregateID, s.SchemaVersion}
			if cur.Version < r.last[row] {
				r.regressions = append(r.regressions, fmt.Sprintf("%s schema %d went from v%d to v%d", s.AggregateID, s.SchemaVersion, r.last[row], cur.Version))
			}
			r.last[row] = max(r.last[row], cur.Version)
		}
		r.mu.Unlock()
	}
	return stored, nil
}

func (r *recordingStore) GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, error) {
	if r.failing.Load() || r.unreadableID(id) {
		return nil, errDown
	}
	return r.Store.GetSnapshot(ctx, typ, id, schemaVersion)
}

// GetSnapshots makes the worker read through its read batcher, as it does
// on every real store.
func (r *recordingStore) GetSnapshots(ctx context.Context, typ string, schemaVersion int, ids []uuid.UUID) ([]*eventsource.Snapshot, error) {
	if r.failing.Load() || slices.ContainsFunc(ids, r.unreadableID) {
		return nil, errDown
	}
	r.snapReadBatches.Add(1)
	r.snapReads.Add(int64(len(ids)))
	return r.Store.GetSnapshots(ctx, typ, schemaVersion, ids)
}

func (r *recordingStore) ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[eventsource.RecordedEvent, error] {
	r.eventReads.Add(1)
	return r.Store.ReadEvents(ctx, typ, id, after)
}

func (r *recordingStore) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, iter.Seq2[eventsource.RecordedEvent, error], error) {
	if r.failing.Load() || r.unreadableID(id) {
		return nil, nil, errDown
	}
	r.combinedReads.Add(1)
	return r.Store.LoadSnapshotAndEvents(ctx, typ, id, schemaVersion)
}

func (r *recordingStore) checkNoRegressions(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, msg := range r.regressions {
		t.Errorf("snapshot went backwards: %s", msg)
	}
}

// env is one test's NATS stream, stores, publisher and app repository.
type env struct {
	t      testing.TB
	url    string
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string
	prefix string
	store  *recordingStore
	pub    *natsnotice.Publisher
	reg    *eventsource.Registry
	repo   *eventsource.Repository[exampledomain.Account, *exampledomain.Account]
	logs   *slog.Logger
}

func newEnv(t testing.TB, url string, store eventsource.Store, shared bool) *env {
	t.Helper()
	e := &env{
		t:      t,
		url:    url,
		stream: natstest.UniqueName(t, "EVSNAP_T"),
		store:  newRecordingStore(store),
		reg:    exampledomain.NewRegistry(),
		logs:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	}
	e.prefix = "evsnaptest." + e.stream
	e.nc = natstest.Connect(t, url)
	e.js = natstest.JetStream(t, e.nc)
	cfg := natsnotice.DefaultStreamConfig()
	cfg.Name, cfg.SubjectPrefix = e.stream, e.prefix
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsnotice.EnsureStream(ctx, e.js, cfg); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	if shared {
		// A shared server: delete the stream. Embedded servers vanish with
		// their temp dir (and may be shut down before cleanups run).
		natstest.DeleteStreamOnCleanup(t, e.js, e.stream)
	}
	pub, err := natsnotice.NewPublisher(e.js, natsnotice.WithSubjectPrefix(e.prefix), natsnotice.WithLogger(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	e.pub = pub
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = pub.Close(ctx)
	})
	e.repo, err = eventsource.NewRepository[exampledomain.Account](e.store, e.reg,
		eventsource.WithAppendNotifier(pub), eventsource.WithLogger(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.repo.Close(context.Background()) })
	return e
}

// setups are the real parts the end-to-end tests run on: an embedded
// nats-server with memstore and with SQLite, and the real NATS and
// PostgreSQL servers named by EVSNAP_TEST_NATS_URL and
// EVSNAP_TEST_POSTGRES_URL (skipped without them, failed without them under
// EVSNAP_REQUIRE_SERVICES=1).
var setups = []struct {
	name string
	env  func(t *testing.T) *env
}{
	{"embedded-nats/memstore", func(t *testing.T) *env {
		return newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	}},
	{"embedded-nats/sqlite", func(t *testing.T) *env {
		s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "evsnap.db"), sqlitestore.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		return newEnv(t, natstest.RunServer(t).ClientURL(), s, false)
	}},
	{"real-nats/postgres", func(t *testing.T) *env {
		url := natstest.ExternalURL(t)
		return newEnv(t, url, pgtest.Store(t), true)
	}},
}

func forEachSetup(t *testing.T, test func(t *testing.T, e *env)) {
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) { test(t, s.env(t)) })
	}
}

func (e *env) config(mutate func(*snapshotter.Config)) snapshotter.Config {
	cfg := snapshotter.DefaultConfig()
	cfg.Store, cfg.JetStream = e.store, e.js
	cfg.Stream, cfg.SubjectPrefix = e.stream, e.prefix
	cfg.Consumer = "snapshotter"
	cfg.SweepInterval = 0
	cfg.Logger = e.logs
	cfg.DrainTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

func (e *env) worker(threshold int, mutate func(*snapshotter.Config)) *snapshotter.Worker {
	e.t.Helper()
	w, err := snapshotter.New(e.config(mutate),
		snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: threshold}),
		snapshotter.For[exampledomain.Order](e.reg, eventsource.Policy{Threshold: threshold, Milestones: exampledomain.OrderMilestones}),
	)
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// start runs w until the returned stop is called (or the test ends), and
// checks that Run returned nil.
func (e *env) start(w *snapshotter.Worker) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("worker Run returned %v", err)
				}
			case <-time.After(30 * time.Second):
				e.t.Errorf("worker did not stop within 30s of cancellation")
			}
		})
	}
	e.t.Cleanup(stop)
	waitFor(e.t, 10*time.Second, "worker ready", w.Ready)
	return stop
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// save appends n deposits to account id (opening it first if new).
func (e *env) save(id uuid.UUID, n int) {
	e.t.Helper()
	ctx := context.Background()
	a, err := e.repo.Load(ctx, id)
	if errors.Is(err, eventsource.ErrAggregateNotFound) {
		a = e.repo.New(id)
		_ = a.Open("worker test", 0)
		n--
	} else if err != nil {
		e.t.Fatalf("load %s: %v", id, err)
	}
	for range n {
		_ = a.Deposit(1)
	}
	if err := e.repo.Save(ctx, a); err != nil {
		e.t.Fatalf("save %s: %v", id, err)
	}
}

func (e *env) head(id uuid.UUID) int64 {
	v, err := e.store.StreamVersion(context.Background(), exampledomain.AccountType, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) snapshotVersion(id uuid.UUID) int64 {
	s, err := e.store.Store.GetSnapshot(context.Background(), exampledomain.AccountType, id, 1)
	if err != nil || s == nil {
		return 0
	}
	return s.Version
}

// converged reports whether every aggregate's snapshot is within the
// threshold of its head.
func (e *env) converged(ids []uuid.UUID, threshold int64) func() bool {
	return func() bool {
		for _, id := range ids {
			if e.head(id)-e.snapshotVersion(id) >= threshold {
				return false
			}
		}
		return true
	}
}

// consumerIdle reports whether every notice the app published has reached
// the stream and the consumer has none pending or unacknowledged. It
// flushes the publisher first: it lingers before publishing, and a
// consumer that has not yet seen the last notices looks idle.
func (e *env) consumerIdle(name string) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := e.pub.Flush(ctx); err != nil {
			e.t.Logf("flush the publisher: %v", err)
			return false
		}
		c, err := e.js.Consumer(ctx, e.stream, name)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		if err == nil && os.Getenv("EVSNAP_DEBUG") != "" {
			e.t.Logf("consumer %s: ack pending %d, pending %d, redelivered %d", name, info.NumAckPending, info.NumPending, info.NumRedelivered)
		}
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}
}

func TestSaveNoticeWorkerSnapshotAtHead(t *testing.T) {
	forEachSetup(t, testSaveNoticeWorkerSnapshotAtHead)
}

func testSaveNoticeWorkerSnapshotAtHead(t *testing.T, e *env) {
	e.start(e.worker(10, nil))
	id := uuid.New()
	e.save(id, 10)
	waitFor(t, 10*time.Second, "snapshot at v10", func() bool { return e.snapshotVersion(id) == 10 })
	e.save(id, 5) // not due: 5 < 10 since the snapshot
	e.save(id, 7) // due: 12 since the snapshot
	waitFor(t, 10*time.Second, "snapshot at v22", func() bool { return e.snapshotVersion(id) == 22 })
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	// The snapshot the worker wrote loads like the app's own.
	a, err := e.repo.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if from, n := a.LoadedFromSnapshot(); !from || n != 0 || a.State().Balance != 21 {
		t.Fatalf("load after the worker: fromSnapshot=%v replayed=%d balance=%v", from, n, a.State().Balance)
	}
	e.store.checkNoRegressions(t)
}

// A snapshot left over from an earlier aggregate with the same id (or a
// snapshot store restored from a newer backup than the events) is not
// tied to the stream's history: the worker, when a notice makes the
// aggregate due, never builds on it, and replaces it with a snapshot of
// the stream as it is.
func TestWorkerReplacesStaleSnapshot(t *testing.T) { forEachSetup(t, testWorkerReplacesStaleSnapshot) }

func testWorkerReplacesStaleSnapshot(t *testing.T, e *env) {
	ctx := context.Background()
	id := uuid.New()
	if _, err := e.store.Store.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: exampledomain.AccountType,
		Version: 50, SchemaVersion: 1, EventID: uuid.New(), CreatedAt: time.Now().UTC(),
		State: []byte(`{"open":true,"owner_name":"left over","balance":999,"transaction_count":49}`)}); err != nil {
		t.Fatal(err)
	}
	e.start(e.worker(10, nil))
	// Created anew, in one save (no load of the app's sees the snapshot).
	a := e.repo.New(id)
	_ = a.Open("anew", 0)
	for range 59 {
		_ = a.Deposit(1)
	}
	if err := e.repo.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	events := storetest.ReadAll(t, e.store, exampledomain.AccountType, id, 59)
	waitFor(t, 10*time.Second, "the worker's snapshot at v60", func() bool {
		s, err := e.store.Store.GetSnapshot(ctx, exampledomain.AccountType, id, 1)
		return err == nil && s != nil && s.EventID == events[0].ID
	})
	s, _ := e.store.Store.GetSnapshot(ctx, exampledomain.AccountType, id, 1)
	loaded, err := e.repo.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if from, n := loaded.LoadedFromSnapshot(); s.Version != 60 || !from || n != 0 || loaded.State().Balance != 59 {
		t.Fatalf("after the worker: snapshot v%d, load fromSnapshot=%v replayed=%d balance=%v; want v60, from it, balance 59",
			s.Version, from, n, loaded.State().Balance)
	}
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
}

func TestMilestoneNoticeSnapshotsOrder(t *testing.T) {
	forEachSetup(t, testMilestoneNoticeSnapshotsOrder)
}

func testMilestoneNoticeSnapshotsOrder(t *testing.T, e *env) {
	e.start(e.worker(100, nil))
	orders, err := eventsource.NewRepository[exampledomain.Order](e.store, e.reg, eventsource.WithAppendNotifier(e.pub))
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close(context.Background())
	o := orders.New(uuid.New())
	_ = o.Place("Grace")
	_ = o.AddItem("book", 1, 10)
	if err := orders.Save(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	_ = o.Pay()
	if err := orders.Save(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "milestone snapshot", func() bool {
		s, _ := e.store.Store.GetSnapshot(context.Background(), exampledomain.OrderType, o.ID(), 1)
		return s != nil && s.Version == 3
	})
}

func TestTwoWorkersShareTheWork(t *testing.T) { forEachSetup(t, testTwoWorkersShareTheWork) }

func testTwoWorkersShareTheWork(t *testing.T, e *env) {
	counts := make([]*countingStore, 2)
	for i := range counts {
		counts[i] = &countingStore{Store: e.store}
		w, err := snapshotter.New(e.config(func(c *snapshotter.Config) {
			c.Store = counts[i]
			c.BatchSize = 8
		}), snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: 5}))
		if err != nil {
			t.Fatal(err)
		}
		e.start(w)
	}
	ids := make([]uuid.UUID, 40)
	for i := range ids {
		ids[i] = uuid.New()
	}
	for round := range 6 {
		for _, id := range ids {
			e.save(id, 3+round%3)
		}
	}
	waitFor(t, 20*time.Second, "every aggregate within the threshold", e.converged(ids, 5))
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	a, b := counts[0].writes.Load(), counts[1].writes.Load()
	t.Logf("worker writes: %d and %d", a, b)
	if a == 0 || b == 0 {
		t.Fatalf("one worker did all the work (%d / %d snapshot writes)", a, b)
	}
	e.store.checkNoRegressions(t)
}

// countingStore counts snapshot writes going through one worker.
type countingStore struct {
	eventsource.Store
	writes atomic.Int64
}

func (c *countingStore) SaveSnapshot(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	ok, err := c.Store.SaveSnapshot(ctx, s)
	if ok {
		c.writes.Add(1)
	}
	return ok, err
}

func (c *countingStore) SaveSnapshots(ctx context.Context, snaps []eventsource.Snapshot) ([]bool, error) {
	stored, err := c.Store.SaveSnapshots(ctx, snaps)
	for _, ok := range stored {
		if ok {
			c.writes.Add(1)
		}
	}
	return stored, err
}

// Rebuilds that finish while a snapshot write is in flight go in the next
// write together: fewer writes than snapshots, every aggregate at its head,
// nothing regressed.
func TestWorkerBatchesConcurrentWrites(t *testing.T) {
	forEachSetup(t, testWorkerBatchesConcurrentWrites)
}

func testWorkerBatchesConcurrentWrites(t *testing.T, e *env) {
	ids := make([]uuid.UUID, 40)
	for i := range ids {
		ids[i] = uuid.New()
		e.save(ids[i], 6)
	}
	// The first write waits at the gate while the other rebuilds finish
	// and queue behind it.
	block := make(chan struct{})
	e.store.mu.Lock()
	e.store.block = block
	e.store.mu.Unlock()
	e.start(e.worker(5, func(c *snapshotter.Config) { c.Concurrency = 16 }))
	time.Sleep(300 * time.Millisecond)
	e.store.mu.Lock()
	e.store.block = nil
	e.store.mu.Unlock()
	close(block)
	waitFor(t, 20*time.Second, "every aggregate snapshotted at its head", e.converged(ids, 1))
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	writes, batches := e.store.writes.Load(), e.store.batches.Load()
	t.Logf("%d snapshots in %d writes", writes, batches)
	if writes < int64(len(ids)) || batches >= writes {
		t.Fatalf("%d snapshots in %d writes: want every aggregate's snapshot, in fewer writes than snapshots", writes, batches)
	}
	// Each save announced 6 events with threshold 5: due whatever the
	// snapshot, so where the store can, the snapshot and the events are
	// read together; elsewhere the decision reads are batched (how many
	// share a statement depends on timing; TestReadBatcher* pins it).
	t.Logf("combined reads: %d; decision reads: %d in %d statements", e.store.combinedReads.Load(), e.store.snapReads.Load(), e.store.snapReadBatches.Load())
	if got := e.store.combinedReads.Load() + e.store.snapReads.Load(); got < int64(len(ids)) {
		t.Fatalf("%d reads for the decisions, want at least %d", got, len(ids))
	}
	e.store.checkNoRegressions(t)
}

// A worker stopped mid-batch without acking: JetStream redelivers after
// the ack wait and another worker converges every aggregate.
func TestStoppedMidBatchRedelivers(t *testing.T) { forEachSetup(t, testStoppedMidBatchRedelivers) }

func testStoppedMidBatchRedelivers(t *testing.T, e *env) {
	block := make(chan struct{})
	e.store.mu.Lock()
	e.store.block = block
	e.store.mu.Unlock()
	first := e.worker(5, func(c *snapshotter.Config) { c.AckWait = 2 * time.Second; c.DrainTimeout = 100 * time.Millisecond })
	stop := e.start(first)
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for _, id := range ids {
		e.save(id, 6)
	}
	time.Sleep(300 * time.Millisecond) // the worker holds the batch, blocked in the store
	stop()                             // drain times out: the writes are cancelled, nothing acked
	for _, id := range ids {
		if v := e.snapshotVersion(id); v != 0 {
			t.Fatalf("snapshot written while the store was blocked: v%d", v)
		}
	}
	e.store.mu.Lock()
	e.store.block = nil
	e.store.mu.Unlock()
	close(block)
	e.start(e.worker(5, func(c *snapshotter.Config) { c.AckWait = 2 * time.Second }))
	waitFor(t, 20*time.Second, "redelivered notices converge", e.converged(ids, 1))
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
}

// The store failing (a database outage): notices are naked with a delay
// and retried; once it is back everything converges and no save failed.
func TestStoreOutageBacksOffThenConverges(t *testing.T) {
	forEachSetup(t, testStoreOutageBacksOffThenConverges)
}

func testStoreOutageBacksOffThenConverges(t *testing.T, e *env) {
	e.store.failing.Store(true)
	e.start(e.worker(5, nil))
	ids := []uuid.UUID{uuid.New(), uuid.New()}
	for _, id := range ids {
		e.save(id, 5) // saves go to the events store, which is up
	}
	time.Sleep(1500 * time.Millisecond)
	if e.store.writes.Load() != 0 {
		t.Fatal("snapshots written during the outage")
	}
	e.store.failing.Store(false)
	waitFor(t, 20*time.Second, "convergence after the outage", e.converged(ids, 1))
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
}

// NATS restarted while saves continue: no save fails, nothing is lost, and
// every aggregate converges.
func TestNATSRestartWhileSaving(t *testing.T) {
	srv := natstest.RunServer(t)
	e := newEnv(t, srv.ClientURL(), memstore.New(), false)
	e.start(e.worker(5, nil))
	ids := make([]uuid.UUID, 10)
	for i := range ids {
		ids[i] = uuid.New()
		e.save(ids[i], 5)
	}
	natstest.Shutdown(srv)
	for _, id := range ids {
		e.save(id, 5) // must not fail with NATS down
	}
	srv = natstest.Restart(t, srv)
	for _, id := range ids {
		e.save(id, 5)
	}
	waitFor(t, 30*time.Second, "convergence after the NATS restart", e.converged(ids, 5))
	for _, id := range ids {
		if h := e.head(id); h != 15 {
			t.Fatalf("aggregate %s at v%d, want 15: events lost", id, h)
		}
	}
	e.store.checkNoRegressions(t)
	_ = srv
}

// Poison notices (malformed JSON, an unknown aggregate type, a subject that
// disagrees with the body) are terminated after MaxDeliveries and never
// hold up good notices.
func TestPoisonNoticesTerminated(t *testing.T) { forEachSetup(t, testPoisonNoticesTerminated) }

func testPoisonNoticesTerminated(t *testing.T, e *env) {
	e.start(e.worker(5, func(c *snapshotter.Config) { c.MaxDeliveries = 2 }))
	ctx := context.Background()
	id := uuid.New()
	pub := func(subject string, data []byte) {
		if _, err := e.js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	pub(e.prefix+".Account."+id.String(), []byte(`{"v":1,"aggregate_type":"Account"`))
	unknown, _ := natsnotice.Notice{Version: 1, AggregateType: "Invoice", AggregateID: id, FirstVersion: 1, LastVersion: 1, CommittedAt: time.Now()}.Encode()
	pub(e.prefix+".Invoice."+id.String(), unknown)
	other := uuid.New()
	mismatch, _ := natsnotice.Notice{Version: 1, AggregateType: "Account", AggregateID: other, FirstVersion: 1, LastVersion: 1, CommittedAt: time.Now()}.Encode()
	pub(e.prefix+".Account."+id.String(), mismatch)
	good := uuid.New()
	e.save(good, 5)
	waitFor(t, 10*time.Second, "the good notice handled despite the poison", func() bool { return e.snapshotVersion(good) == 5 })
	waitFor(t, 20*time.Second, "poison notices terminated", e.consumerIdle("snapshotter"))
}

// A notice for an aggregate whose events cannot be decoded can never
// succeed: terminated, not retried for ever.
func TestUndecodableEventsTerminated(t *testing.T) { forEachSetup(t, testUndecodableEventsTerminated) }

func testUndecodableEventsTerminated(t *testing.T, e *env) {
	e.start(e.worker(1, func(c *snapshotter.Config) { c.MaxDeliveries = 2 }))
	id := uuid.New()
	_, err := e.store.Append(context.Background(), exampledomain.AccountType, id, 0, []eventsource.NewEvent{{
		ID: uuid.New(), Type: "AccountClosedForever", Payload: []byte(`{}`), OccurredAt: time.Now().UTC(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Notify(context.Background(), eventsource.Appended{AggregateType: exampledomain.AccountType, AggregateID: id,
		FirstVersion: 1, LastVersion: 1, EventTypes: []string{"AccountClosedForever"}, CommittedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the notice terminated", e.consumerIdle("snapshotter"))
	if e.snapshotVersion(id) != 0 {
		t.Fatal("a snapshot was written for undecodable events")
	}
}

// Events committed without any notice (an app crashed before publishing)
// are found by the reconciliation sweep.
func TestSweepCatchesLostNotices(t *testing.T) { forEachSetup(t, testSweepCatchesLostNotices) }

func testSweepCatchesLostNotices(t *testing.T, e *env) {
	silent, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close(context.Background())
	var ids []uuid.UUID
	for i := range 12 {
		a := silent.New(uuid.New())
		_ = a.Open("lost", 0)
		for range 10 + i {
			_ = a.Deposit(1)
		}
		if err := silent.Save(context.Background(), a); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID())
	}
	below := silent.New(uuid.New())
	_ = below.Open("below threshold", 0)
	_ = silent.Save(context.Background(), below)

	w := e.worker(10, func(c *snapshotter.Config) { c.SweepRate = 1000 })
	defer w.Close(context.Background())
	n, err := w.Sweep(context.Background())
	if err != nil || n != 12 {
		t.Fatalf("Sweep = %d, %v; want 12", n, err)
	}
	for _, id := range ids {
		if e.snapshotVersion(id) != e.head(id) {
			t.Fatalf("aggregate %s not snapshotted at its head", id)
		}
	}
	if e.snapshotVersion(below.ID()) != 0 {
		t.Fatal("the sweep snapshotted an aggregate below the threshold")
	}
	if n, _ := w.Sweep(context.Background()); n != 0 {
		t.Fatalf("a second sweep snapshotted %d", n)
	}
}

// SIGTERM (context cancellation) drains: in-flight work finishes and is
// acked, and Run returns nil.
func TestGracefulDrain(t *testing.T) { forEachSetup(t, testGracefulDrain) }

func testGracefulDrain(t *testing.T, e *env) {
	block := make(chan struct{})
	e.store.mu.Lock()
	e.store.block = block
	e.store.mu.Unlock()
	stop := e.start(e.worker(5, nil))
	id := uuid.New()
	e.save(id, 5)
	time.Sleep(300 * time.Millisecond) // the worker holds the notice
	go func() {
		time.Sleep(200 * time.Millisecond)
		close(block)
	}()
	stop() // returns once the in-flight snapshot is stored and acked
	if v := e.snapshotVersion(id); v != 5 {
		t.Fatalf("drained snapshot at v%d, want 5", v)
	}
	waitFor(t, 5*time.Second, "the drained notice acked", e.consumerIdle("snapshotter"))
}

func TestRebuildStatsPrune(t *testing.T) {
	store := memstore.New()
	reg := exampledomain.NewRegistry()
	repo, _ := eventsource.NewRepository[exampledomain.Account](store, reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	defer repo.Close(context.Background())
	var ids []uuid.UUID
	for i := range 5 {
		a := repo.New(uuid.New())
		_ = a.Open("x", 0)
		for range i * 30 {
			_ = a.Deposit(1)
		}
		_ = repo.Save(context.Background(), a)
		ids = append(ids, a.ID())
	}
	cfg := snapshotter.DefaultConfig()
	cfg.Store = store
	w, err := snapshotter.New(cfg, snapshotter.For[exampledomain.Account](reg, eventsource.DefaultPolicy()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	st, err := w.Stats(context.Background(), exampledomain.AccountType, snapshotter.StatsOptions{Stalest: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Aggregates != 5 || st.Snapshots != 0 || st.EventsBehind.Max != 121 || len(st.Stalest) != 2 || st.Stalest[0].HeadVersion != 121 {
		t.Fatalf("stats before rebuild: %+v", st)
	}
	var progress int
	res, err := w.Rebuild(context.Background(), exampledomain.AccountType, snapshotter.RebuildOptions{Rate: 1000, Progress: func(p snapshotter.RebuildProgress) {
		progress++
		if p.Total != 5 || p.TotalEstimated {
			t.Errorf("progress total = %d (estimated %v)", p.Total, p.TotalEstimated)
		}
	}})
	if err != nil || res.Rebuilt != 5 || res.Failed != 0 || progress != 5 {
		t.Fatalf("Rebuild = %+v, %v (progress calls %d)", res, err, progress)
	}
	st, _ = w.Stats(context.Background(), exampledomain.AccountType, snapshotter.StatsOptions{Stalest: 2})
	if st.Snapshots != 5 || st.EventsBehind.Max != 0 || st.EventsBehind.Buckets[0] != 5 || len(st.Stalest) != 0 {
		t.Fatalf("stats after rebuild: %+v", st)
	}
	one, err := w.Rebuild(context.Background(), exampledomain.AccountType, snapshotter.RebuildOptions{ID: ids[2]})
	if err != nil || one.Rebuilt != 1 {
		t.Fatalf("rebuild one: %+v, %v", one, err)
	}
	missing, err := w.Rebuild(context.Background(), exampledomain.AccountType, snapshotter.RebuildOptions{ID: uuid.New()})
	if err != nil || missing.Failed != 1 || !errors.Is(missing.Errors[0], eventsource.ErrAggregateNotFound) {
		t.Fatalf("rebuild of a missing aggregate: %+v, %v", missing, err)
	}
	if _, err := w.Rebuild(context.Background(), "Invoice", snapshotter.RebuildOptions{}); !errors.Is(err, snapshotter.ErrUnknownAggregateType) {
		t.Fatalf("rebuild of an unknown type: %v", err)
	}
	s, err := w.SnapshotAggregate(context.Background(), exampledomain.AccountType, ids[4])
	if err != nil || s.Version != 121 {
		t.Fatalf("SnapshotAggregate = %+v, %v", s, err)
	}
	if _, err := w.SnapshotAggregate(context.Background(), "Invoice", ids[4]); !errors.Is(err, snapshotter.ErrUnknownAggregateType) {
		t.Fatalf("SnapshotAggregate of an unknown type: %v", err)
	}
	n, err := w.Prune(context.Background(), exampledomain.AccountType, 2, snapshotter.PruneOptions{})
	if err != nil || n.Deleted != 5 || !n.Done || !n.Batched {
		t.Fatalf("Prune = %+v, %v", n, err)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	reg := exampledomain.NewRegistry()
	store := memstore.New()
	cfg := snapshotter.DefaultConfig()
	cfg.Store = store
	if _, err := snapshotter.New(cfg); !errors.Is(err, snapshotter.ErrInvalidConfig) {
		t.Fatalf("no types: %v", err)
	}
	acc := snapshotter.For[exampledomain.Account](reg, eventsource.DefaultPolicy())
	if _, err := snapshotter.New(cfg, acc, acc); !errors.Is(err, snapshotter.ErrInvalidConfig) {
		t.Fatalf("duplicate type: %v", err)
	}
	if _, err := snapshotter.New(cfg, acc.WithPolicy(eventsource.Policy{})); !errors.Is(err, snapshotter.ErrInvalidConfig) {
		t.Fatalf("empty policy: %v", err)
	}
	if _, err := snapshotter.New(cfg, snapshotter.Type{}); !errors.Is(err, snapshotter.ErrInvalidConfig) {
		t.Fatalf("zero Type: %v", err)
	}
}

// Verify reports each kind of snapshot by its status, with what differed,
// and changes nothing.
func TestVerifyReport(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	reg := exampledomain.NewRegistry()
	repo, _ := eventsource.NewRepository[exampledomain.Account](store, reg, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 3}))
	defer repo.Close(ctx)
	var ids []uuid.UUID
	for i := range 8 {
		a := repo.New(uuid.New())
		_ = a.Open("v", 0)
		_ = a.Deposit(1)
		if i != 7 { // the last one stays below the threshold: no snapshot
			_ = a.Deposit(2)
		}
		_ = repo.Save(ctx, a)
		if i == 6 { // events after the snapshot: verification replays only to v3
			_ = a.Deposit(4)
			_ = a.Deposit(8)
			_ = repo.Save(ctx, a)
		}
		ids = append(ids, a.ID())
	}
	stored := func(i int) eventsource.Snapshot {
		s, _ := store.GetSnapshot(ctx, exampledomain.AccountType, ids[i], 1)
		return *s
	}
	put := func(s eventsource.Snapshot) {
		if _, err := store.SaveSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	mismatch := stored(0)
	mismatch.State = []byte(`{"open":true,"balance":999}`)
	put(mismatch)
	otherHistory := stored(1) // the right state at the right version, from another history
	otherHistory.EventID = uuid.New()
	put(otherHistory)
	undecodable := stored(2)
	undecodable.State = []byte(`{"balance": "x"}`)
	put(undecodable)
	ahead := stored(3) // restored from a newer backup than the events
	ahead.Version, ahead.State = 99, []byte(`{}`)
	put(ahead)
	otherSchema := stored(4) // beside its own row, one of another schema version that does not decode: a schema 1 verify never reads it
	otherSchema.SchemaVersion, otherSchema.State = 2, []byte(`{"balance": "x"}`)
	put(otherSchema)

	cfg := snapshotter.DefaultConfig()
	cfg.Store = store
	w, err := snapshotter.New(cfg, snapshotter.For[exampledomain.Account](reg, eventsource.DefaultPolicy()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	rep, err := w.Verify(ctx, exampledomain.AccountType, 0)
	want := map[snapshotter.VerifyStatus]int{snapshotter.VerifyOK: 3, snapshotter.VerifyMismatch: 1, snapshotter.VerifyStale: 2,
		snapshotter.VerifyUndecodable: 1, snapshotter.VerifyNoSnapshot: 1}
	if err != nil || rep.Checked != 8 || !maps.Equal(rep.ByStatus, want) || len(rep.Problems) != 4 {
		t.Fatalf("Verify = %+v, %v; want %v and 4 problems", rep, err, want)
	}
	for _, p := range rep.Problems {
		w, ok := map[uuid.UUID]struct {
			status snapshotter.VerifyStatus
			detail string
		}{
			ids[0]: {snapshotter.VerifyMismatch, "999"},
			ids[1]: {snapshotter.VerifyStale, otherHistory.EventID.String()},
			ids[2]: {snapshotter.VerifyUndecodable, `"x"`},
			ids[3]: {snapshotter.VerifyStale, "ends at v3"},
		}[p.AggregateID]
		if !ok || p.Status != w.status || !strings.Contains(p.Detail, w.detail) {
			t.Errorf("problem %+v, want status %q and a detail with %q", p, w.status, w.detail)
		}
	}
	// Verify changes nothing: every snapshot it found wrong is still there.
	for i, s := range []eventsource.Snapshot{mismatch, otherHistory, undecodable, ahead} {
		if got := stored(i); got.Version != s.Version || got.EventID != s.EventID || string(got.State) != string(s.State) {
			t.Errorf("Verify changed snapshot %d: %+v, was %+v", i, got, s)
		}
	}
	rep, err = w.Verify(ctx, exampledomain.AccountType, 2)
	if err != nil || rep.Checked != 2 {
		t.Fatalf("sampled Verify = %+v, %v", rep, err)
	}
}

// A rebuild longer than the ack wait keeps telling JetStream it is in
// progress, so the notice is not redelivered to another worker meanwhile.
func TestLongRebuildSendsInProgress(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	block := make(chan struct{})
	e.store.mu.Lock()
	e.store.block = block
	e.store.mu.Unlock()
	e.start(e.worker(5, func(c *snapshotter.Config) { c.AckWait = time.Second }))
	id := uuid.New()
	e.save(id, 5)
	time.Sleep(3 * time.Second) // three ack waits with the rebuild blocked
	e.store.mu.Lock()
	e.store.block = nil
	e.store.mu.Unlock()
	close(block)
	waitFor(t, 10*time.Second, "snapshot", func() bool { return e.snapshotVersion(id) == 5 })
	waitFor(t, 10*time.Second, "notice acked", e.consumerIdle("snapshotter"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.js.Consumer(ctx, e.stream, "snapshotter")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 {
		t.Fatalf("the notice was redelivered %d times during a long rebuild", info.NumRedelivered)
	}
}

// SIGTERM while NATS is down: nothing can be pulled, so the worker stops
// promptly instead of waiting out its drain timeout.
func TestDrainWithNATSDownIsPrompt(t *testing.T) {
	srv := natstest.RunServer(t)
	e := newEnv(t, srv.ClientURL(), memstore.New(), false)
	w := e.worker(5, func(c *snapshotter.Config) { c.DrainTimeout = 20 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, 10*time.Second, "worker ready", w.Ready)
	natstest.Shutdown(srv)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("stopping with NATS down took %v", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop")
	}
}

// A notice that is not due, of an aggregate past its threshold, costs
// the worker one snapshot read (batched with other notices' where the
// store can) and no event read. (Below the threshold it costs none:
// TestWorkerDecidesBelowThresholdWithoutReads.)
func TestNotDueNoticesReadOnlySnapshots(t *testing.T) {
	forEachSetup(t, testNotDueNoticesReadOnlySnapshots)
}

func testNotDueNoticesReadOnlySnapshots(t *testing.T, e *env) {
	ids := make([]uuid.UUID, 30)
	for i := range ids {
		ids[i] = uuid.New()
		e.save(ids[i], 6)
	}
	stop := e.start(e.worker(5, nil))
	waitFor(t, 20*time.Second, "every aggregate snapshotted at its head", e.converged(ids, 1))
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	stop()
	for _, id := range ids {
		e.save(id, 2) // head 8, snapshot at 6: due without the snapshot, not with it
	}
	w0, c0, r0, ev0 := e.store.writes.Load(), e.store.combinedReads.Load(), e.store.snapReads.Load(), e.store.eventReads.Load()
	e.start(e.worker(5, nil))
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	if w, c, r, ev := e.store.writes.Load()-w0, e.store.combinedReads.Load()-c0, e.store.snapReads.Load()-r0, e.store.eventReads.Load()-ev0; w != 0 || c != 0 || r < int64(len(ids)) || ev != 0 {
		t.Fatalf("%d snapshots written, %d combined reads, %d snapshot reads, %d event reads; want 0, 0, at least %d, 0", w, c, r, ev, len(ids))
	}
}

// A notice that announces a threshold of events is due whatever the
// snapshot: where one store holds both and can read them together, the
// worker does, and still decides from the snapshot it read: one already at
// the head is left alone. A snapshot of another schema version is another
// row, which the worker neither reads nor touches: it writes its own.
func TestDueNoticesReadSnapshotAndEventsTogether(t *testing.T) {
	forEachSetup(t, testDueNoticesReadSnapshotAndEventsTogether)
}

func testDueNoticesReadSnapshotAndEventsTogether(t *testing.T, e *env) {
	fresh, current, newer := uuid.New(), uuid.New(), uuid.New()
	e.save(fresh, 12)
	e.save(current, 12)
	e.save(newer, 12)
	// current already has its snapshot at the head (another replica, say).
	a, err := e.repo.Load(context.Background(), current)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.CreateSnapshot(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	// newer has one of a newer schema (a newer release's worker), behind
	// the head and none of this worker's: this worker writes its own and
	// leaves that one alone.
	if _, err := e.store.Store.SaveSnapshot(context.Background(), eventsource.Snapshot{AggregateID: newer, AggregateType: exampledomain.AccountType,
		Version: 2, SchemaVersion: 2, EventID: uuid.New(), State: []byte(`{"balance": 1}`), CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	before, attempted, reads, combined := e.store.writes.Load(), e.store.attempted.Load(), e.store.eventReads.Load(), e.store.combinedReads.Load()
	e.start(e.worker(10, nil))
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	if v := e.snapshotVersion(fresh); v != 12 {
		t.Fatalf("fresh aggregate's snapshot is v%d, want v12", v)
	}
	// Only fresh's and newer's snapshots are even attempted, and no notice
	// needs a decision read or a separate read of its events.
	want := [5]int64{2, 2, 3, 0, 0}
	if got := [5]int64{e.store.attempted.Load() - attempted, e.store.writes.Load() - before, e.store.combinedReads.Load() - combined, e.store.snapReads.Load(), e.store.eventReads.Load() - reads}; got != want {
		t.Fatalf("snapshots attempted, written, combined reads, snapshot reads, separate event reads: %v, want %v", got, want)
	}
	if s, err := e.store.Store.GetSnapshot(context.Background(), exampledomain.AccountType, newer, 2); err != nil || s == nil || s.SchemaVersion != 2 || s.Version != 2 {
		t.Fatalf("the newer schema's snapshot became %+v (%v), want it left at v2 schema 2", s, err)
	}
	if s, err := e.store.Store.GetSnapshot(context.Background(), exampledomain.AccountType, newer, 1); err != nil || s == nil || s.Version != 12 {
		t.Fatalf("the worker's own snapshot of the aggregate with a newer schema's: %+v (%v), want v12", s, err)
	}
	e.store.checkNoRegressions(t)
}

// On a store made by eventsource.Split (events and snapshots kept apart)
// the worker handles notices and rebuilds single aggregates; what needs a
// listing (stats, sweep, rebuild of a type, verify) fails with an error
// that says what it needs, and Run's sweep stops after logging it.
func TestWorkerOnSplitStore(t *testing.T) {
	events, snaps := memstore.NewEventStore(), memstore.NewSnapshotStore()
	e := newEnv(t, natstest.RunServer(t).ClientURL(), eventsource.Split(events, snaps), false)
	var logs logBuffer
	stop := e.start(e.worker(10, func(c *snapshotter.Config) {
		c.SweepInterval = 10 * time.Millisecond
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	}))
	id := uuid.New()
	e.save(id, 12)
	waitFor(t, 10*time.Second, "the notice's snapshot at v12", func() bool {
		s, _ := snaps.GetSnapshot(context.Background(), exampledomain.AccountType, id, 1)
		return s != nil && s.Version == 12
	})
	waitFor(t, 10*time.Second, "the sweep to stop", func() bool { return len(logs.lines(t, "reconciliation sweep stopped")) > 0 })
	if l := logs.lines(t, "reconciliation sweep stopped"); len(l) != 1 || !strings.Contains(fmt.Sprint(l[0]["error"]), "eventsource.Split") {
		t.Fatalf("sweep stop logged %v, want once, with an error that names eventsource.Split", l)
	}
	stop()

	ctx := context.Background()
	w := e.worker(10, nil)
	defer w.Close(ctx)
	e.save(id, 3)
	if s, err := w.SnapshotAggregate(ctx, exampledomain.AccountType, id); err != nil || s.Version != 15 {
		t.Fatalf("SnapshotAggregate on a split store = %+v, %v; want v15", s, err)
	}
	if res, err := w.Rebuild(ctx, exampledomain.AccountType, snapshotter.RebuildOptions{ID: id}); err != nil || res.Rebuilt != 1 {
		t.Fatalf("Rebuild of one aggregate on a split store = %+v, %v", res, err)
	}
	check := func(op string, err error) {
		t.Helper()
		// The sweep names the first type it tries (Account or Order).
		if !errors.Is(err, snapshotter.ErrCannotList) || !errors.Is(err, errors.ErrUnsupported) ||
			(!strings.Contains(err.Error(), op+" of Account needs a store that holds both") && !strings.Contains(err.Error(), op+" of Order needs a store that holds both")) {
			t.Errorf("%s on a split store: %v; want ErrCannotList saying what %s needs", op, err, op)
		}
	}
	_, err := w.Stats(ctx, exampledomain.AccountType, snapshotter.StatsOptions{Stalest: 5})
	check("stats", err)
	_, err = w.Sweep(ctx)
	check("the reconciliation sweep", err)
	_, err = w.Rebuild(ctx, exampledomain.AccountType, snapshotter.RebuildOptions{Rate: 1000})
	check("rebuild", err)
	_, err = w.Verify(ctx, exampledomain.AccountType, 0)
	check("verify", err)
	if n, err := w.Prune(ctx, exampledomain.AccountType, 0, snapshotter.PruneOptions{}); err != nil || n.Deleted != 1 || n.Batched || !n.Done {
		t.Fatalf("Prune on a split store = %+v, %v; want 1 deleted by one DeleteSnapshotsByType", n, err)
	}
	if _, err := w.Prune(ctx, exampledomain.AccountType, 0, snapshotter.PruneOptions{After: id}); !errors.Is(err, snapshotter.ErrInvalidConfig) || !strings.Contains(err.Error(), "cannot resume") {
		t.Fatalf("Prune resumed on a store that prunes in one statement: %v; want ErrInvalidConfig saying it cannot resume", err)
	}
}
