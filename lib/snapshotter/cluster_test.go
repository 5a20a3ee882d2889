package snapshotter_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
)

// The worker on a 3-node JetStream cluster with the notice stream at 3
// replicas: apps save (external mode, notices through a Publisher) and
// two workers consume while the stream's leader stops and comes back,
// then a follower does the same. No save fails or waits longer than the
// publisher's bound, no event is lost, no snapshot goes backwards, and in
// the end every aggregate has the snapshot its policy asks for, equal to
// a full replay. The time notices stalled while the leadership moved is
// logged, not asserted.
//
// The embedded cluster's Stop is a clean shutdown (the leader hands over
// before it goes); the chaos suite's cluster mode SIGKILLs nats-server
// processes for the crash case (make chaos-short).
func TestClusterLeaderAndFollowerLoss(t *testing.T) {
	setups := []struct {
		name  string
		store func(t *testing.T) eventsource.Store
	}{
		{"embedded-cluster/sqlite", func(t *testing.T) eventsource.Store {
			s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "evsnap.db"), sqlitestore.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if err := s.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"embedded-cluster/postgres", func(t *testing.T) eventsource.Store { return pgtest.Store(t) }},
	}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) { testClusterLeaderAndFollowerLoss(t, s.store(t)) })
	}
}

func testClusterLeaderAndFollowerLoss(t *testing.T, store eventsource.Store) {
	const (
		threshold      = 10
		apps           = 4
		perApp         = 8
		maxEnqueueWait = 200 * time.Millisecond
		// saveMargin is room for the store's append on a busy 2-core
		// machine under the race detector; the bound under test is
		// maxEnqueueWait, which a Save must never exceed by waiting on NATS.
		saveMargin = 3 * time.Second
	)
	c := natstest.RunCluster(t, 3)
	e := newEnv(t, c.URLs(), store, false)
	ctx := context.Background()

	// The stream at 3 replicas: what snapshotter migrate --stream-replicas 3
	// does to an existing stream.
	scfg := natsnotice.DefaultStreamConfig()
	scfg.Name, scfg.SubjectPrefix, scfg.Replicas = e.stream, e.prefix, 3
	if _, err := natsnotice.EnsureStream(ctx, e.js, scfg); err != nil {
		t.Fatalf("EnsureStream with 3 replicas: %v", err)
	}
	c.WaitStreamCurrent(e.stream, 20*time.Second)

	// The apps' publisher waits at most maxEnqueueWait for room; a small
	// buffer makes a long stall fill it, so the bound is exercised, and the
	// workers' sweep catches any notice dropped for it.
	pub, err := natsnotice.NewPublisher(e.js, natsnotice.WithSubjectPrefix(e.prefix), natsnotice.WithLogger(e.logs),
		natsnotice.WithMaxEnqueueWait(maxEnqueueWait), natsnotice.WithBufferSize(256))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = pub.Close(cctx)
	})
	repo, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg,
		eventsource.WithAppendNotifier(pub), eventsource.WithLogger(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close(context.Background()) })
	e.pub, e.repo = pub, repo

	// Two workers, each on its own connection to the cluster. A leader
	// change can leave notices delivered and never acknowledged (26 in one
	// run): JetStream redelivers them after the ack wait, so a short one
	// keeps the test short (the chaos suite uses 5s; the default is 30s).
	sweep := func(cfg *snapshotter.Config) { cfg.SweepInterval, cfg.AckWait = time.Second, 3*time.Second }
	e.start(e.worker(threshold, sweep))
	js2 := natstest.JetStream(t, natstest.Connect(t, c.URLs()))
	e.start(e.worker(threshold, func(cfg *snapshotter.Config) { sweep(cfg); cfg.JetStream = js2 }))

	// The apps: each saves its own aggregates (no conflicts), timing
	// every Save, until stopped.
	var (
		saves, saveErrs atomic.Int64
		maxSave         atomic.Int64
		mu              sync.Mutex
		want            = map[uuid.UUID]int64{} // head each aggregate must reach
	)
	appCtx, stopApps := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ids := make([]uuid.UUID, 0, apps*perApp)
	for a := range apps {
		mine := make([]uuid.UUID, perApp)
		for i := range mine {
			mine[i] = uuid.New()
		}
		ids = append(ids, mine...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(a), 16))
			for n := 0; appCtx.Err() == nil; n++ {
				id := mine[n%perApp]
				acc, err := repo.Load(ctx, id)
				if err != nil {
					acc = repo.New(id)
					_ = acc.Open("cluster test", 0)
				}
				for range r.IntN(3) + 1 {
					_ = acc.Deposit(1)
				}
				start := time.Now()
				err = repo.Save(ctx, acc)
				took := time.Since(start)
				for cur := maxSave.Load(); int64(took) > cur && !maxSave.CompareAndSwap(cur, int64(took)); cur = maxSave.Load() {
				}
				if err != nil {
					saveErrs.Add(1)
					t.Errorf("save %s: %v", id, err)
					continue
				}
				saves.Add(1)
				mu.Lock()
				want[id] = acc.Version()
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	defer func() { stopApps(); wg.Wait() }()
	// more waits until the apps have saved n more times.
	more := func(n int64) {
		t.Helper()
		from := saves.Load()
		waitFor(t, 30*time.Second, "saves to go on", func() bool { return saves.Load() >= from+n })
	}
	lastSeq := func() uint64 {
		cctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		defer cancel()
		st, err := e.js.Stream(cctx, e.stream)
		if err != nil {
			return 0
		}
		info, err := st.Info(cctx)
		if err != nil {
			return 0
		}
		return info.State.LastSeq
	}
	// lose stops node i while the apps save, measures how long until a
	// new notice is stored, lets the saves go on, and brings the node
	// back, waiting until it has caught up.
	lose := func(i int, role string) {
		t.Helper()
		more(50)
		before := lastSeq()
		stopped := time.Now()
		c.Stop(i)
		leader := c.WaitStreamLeader(e.stream, i, 30*time.Second)
		elected := time.Since(stopped)
		waitFor(t, 30*time.Second, "a notice stored after the stop", func() bool { return lastSeq() > before })
		t.Logf("%s %s stopped: %s leads the stream %v later; notices stored again after %v (stall)",
			role, c.NodeName(i), c.NodeName(leader), elected.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		more(50)
		c.Start(i)
		c.WaitReady(30 * time.Second)
		c.WaitStreamCurrent(e.stream, 30*time.Second)
	}
	leader := c.WaitStreamLeader(e.stream, -1, 10*time.Second)
	lose(leader, "leader")
	follower := (c.WaitStreamLeader(e.stream, -1, 10*time.Second) + 1) % c.Size()
	lose(follower, "follower")
	more(50)
	stopApps()
	wg.Wait()

	appsStopped := time.Now()
	waitFor(t, 60*time.Second, "every aggregate within the threshold of its head", e.converged(ids, threshold))
	converged := time.Since(appsStopped)
	waitFor(t, 30*time.Second, "every notice handled", e.consumerIdle("snapshotter"))
	t.Logf("after the last save: converged in %v, every notice acknowledged in %v",
		converged.Round(time.Millisecond), time.Since(appsStopped).Round(time.Millisecond))

	st := pub.Stats()
	t.Logf("%d saves, slowest %v (bound %v); publisher: %d published, %d retries, %d dropped (buffer full %d)",
		saves.Load(), time.Duration(maxSave.Load()).Round(time.Millisecond), maxEnqueueWait, st.Published, st.Retries, st.Dropped, st.DroppedBufferFull)
	if n := saveErrs.Load(); n != 0 {
		t.Errorf("%d saves failed", n)
	}
	if took := time.Duration(maxSave.Load()); took > maxEnqueueWait+saveMargin {
		t.Errorf("the slowest Save took %v: beyond the publisher's bound %v (+%v for the store)", took, maxEnqueueWait, saveMargin)
	}
	// Lost 0: every aggregate's stream ends where its last save left it.
	lost := 0
	for id, v := range want {
		if h := e.head(id); h != v {
			lost++
			t.Errorf("aggregate %s at v%d, its last save left it at v%d", id, h, v)
		}
	}
	// Regressions 0: no snapshot write ever went backwards.
	e.store.checkNoRegressions(t)
	// The policy's expectation: a snapshot within the threshold of the
	// head, never above it.
	for _, id := range ids {
		if h, s := e.head(id), e.snapshotVersion(id); h-s >= threshold || s > h {
			t.Errorf("aggregate %s: head v%d, snapshot v%d; the policy asks for one within %d", id, h, s, threshold)
		}
	}
	// Mismatches 0: each snapshot equals a full replay of its events.
	v, err := snapshotter.New(e.config(nil), snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: threshold}))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	rep, err := v.Verify(ctx, exampledomain.AccountType, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != len(ids) || rep.ByStatus[snapshotter.VerifyOK] != len(ids) {
		t.Errorf("verify: checked %d, %v; want all %d ok. Problems: %+v", rep.Checked, rep.ByStatus, len(ids), rep.Problems)
	}
	t.Logf("lost %d, regressions %d, verify %v", lost, len(e.store.regressions), rep.ByStatus)
}
