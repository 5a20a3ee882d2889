package snapshotter_test

import (
	"context"
	"errors"
	"iter"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/nats-io/nats.go/jetstream"
)

// listCounter counts the reconciliation sweep's listings (ListAggregates
// calls) of the real store it wraps.
type listCounter struct {
	eventsource.Store
	lists atomic.Int64
}

func (c *listCounter) ListAggregates(ctx context.Context, typ string, opts eventsource.ListOptions) iter.Seq2[eventsource.AggregateInfo, error] {
	c.lists.Add(1)
	return c.Store.ListAggregates(ctx, typ, opts)
}

// replica is one worker of a fleet, on its own NATS connection.
type replica struct {
	w      *snapshotter.Worker
	lists  *listCounter
	cancel context.CancelFunc
	done   chan error
	close  func() // closes its NATS connection
}

const (
	leaseTTL      = time.Second
	sweepInterval = 100 * time.Millisecond
)

// startFleet starts n replicas sharing one store, stream, consumer and
// lease bucket, sweeping every 100ms with a 1s lease; with bucket "" the
// lease is off.
func startFleet(t *testing.T, e *env, n int, bucket string, types ...snapshotter.Type) []*replica {
	t.Helper()
	fleet := make([]*replica, n)
	for i := range fleet {
		nc := natstest.Connect(t, e.url)
		r := &replica{lists: &listCounter{Store: e.store}, done: make(chan error, 1), close: nc.Close}
		cfg := e.config(func(c *snapshotter.Config) {
			c.Store, c.JetStream = r.lists, natstest.JetStream(t, nc)
			c.SweepInterval, c.SweepLeaseTTL, c.LeaseBucket = sweepInterval, leaseTTL, bucket
			if bucket == "" {
				c.SweepLeaseTTL = 0
			}
		})
		if len(types) == 0 {
			types = []snapshotter.Type{snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: 10})}
		}
		w, err := snapshotter.New(cfg, types...)
		if err != nil {
			t.Fatal(err)
		}
		r.w = w
		var ctx context.Context
		ctx, r.cancel = context.WithCancel(context.Background())
		go func() { r.done <- w.Run(ctx) }()
		t.Cleanup(func() { r.stop(t) })
		fleet[i] = r
	}
	for _, r := range fleet {
		waitFor(t, 10*time.Second, "replica ready", r.w.Ready)
	}
	return fleet
}

func (r *replica) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("replica did not stop within 30s")
	}
}

func counts(fleet []*replica) []int64 {
	out := make([]int64, len(fleet))
	for i, r := range fleet {
		out[i] = r.lists.lists.Load()
	}
	return out
}

// sweeping returns the indexes of the replicas whose listing count grew
// between before and now.
func sweeping(before, now []int64) []int {
	var out []int
	for i := range now {
		if now[i] > before[i] {
			out = append(out, i)
		}
	}
	return out
}

// sweepersOver watches the fleet for d and returns which replicas listed.
func sweepersOver(fleet []*replica, d time.Duration) []int {
	before := counts(fleet)
	time.Sleep(d)
	return sweeping(before, counts(fleet))
}

// TestOneReplicaSweepsAtATime runs four replicas with a 100ms sweep
// interval: only the lease holder lists aggregates. Then the holder dies
// without releasing the lease (its NATS connection goes first), and
// another replica takes the sweep over once the lease expires; then that
// one stops cleanly and hands over at once.
func TestOneReplicaSweepsAtATime(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	bucket := natstest.UniqueName(t, "LEASE")
	fleet := startFleet(t, e, 4, bucket)

	var holder int
	waitFor(t, 10*time.Second, "a first sweep", func() bool {
		s := sweeping(make([]int64, len(fleet)), counts(fleet))
		if len(s) > 0 {
			holder = s[0]
		}
		return len(s) > 0
	})
	// 15 intervals: four replicas without the lease would list 60 times.
	if s := sweepersOver(fleet, 15*sweepInterval); len(s) != 1 || s[0] != holder {
		t.Fatalf("replicas %v swept in 1.5s; want only the holder %d (listings per replica: %v)", s, holder, counts(fleet))
	}
	if n := fleet[holder].lists.lists.Load(); n < 5 {
		t.Errorf("the holder listed %d times in about 1.5s at a 100ms interval; want at least 5", n)
	}

	// The holder dies: no NATS to release the lease with, then it stops.
	died := time.Now()
	fleet[holder].close()
	fleet[holder].stop(t)
	rest := append(append([]*replica{}, fleet[:holder]...), fleet[holder+1:]...)
	before := counts(rest)
	var next int
	// Bound: the lease expires a TTL after its last renewal, the others try
	// every TTL/3, and the new holder sweeps at its next tick.
	bound := leaseTTL + leaseTTL/3 + 2*sweepInterval + 2*time.Second
	waitFor(t, bound, "another replica to take the sweep over", func() bool {
		s := sweeping(before, counts(rest))
		if len(s) > 0 {
			next = s[0]
		}
		return len(s) > 0
	})
	t.Logf("sweep moved %v after the holder died (TTL %v)", time.Since(died).Round(10*time.Millisecond), leaseTTL)
	if s := sweepersOver(rest, 10*sweepInterval); len(s) != 1 || s[0] != next {
		t.Fatalf("after the handover replicas %v swept; want only %d", s, next)
	}

	// A clean stop deletes the lease, so the next holder needs no TTL.
	kv, err := e.js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	rest[next].stop(t)
	if _, err := kv.Get(context.Background(), "snapshotter/Account=1"); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Fatalf("after a clean stop the lease is still there (err %v); want it released", err)
	}
	left := append(append([]*replica{}, rest[:next]...), rest[next+1:]...)
	before = counts(left)
	waitFor(t, leaseTTL/3+2*sweepInterval+2*time.Second, "a replica to take the released lease", func() bool {
		return len(sweeping(before, counts(left))) > 0
	})
}

// TestEachAppVersionHasItsOwnSweeper: while v1 and v2 of an application
// run side by side on one consumer, each version's replicas hold a lease
// of their own (a worker sweeps only its own schema's snapshots), so one
// v1 replica and one v2 replica sweep.
func TestEachAppVersionHasItsOwnSweeper(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	bucket := natstest.UniqueName(t, "LEASE")
	v1 := startFleet(t, e, 2, bucket, snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: 10}))
	v2 := startFleet(t, e, 2, bucket, snapshotter.For[exampledomain.AccountV2](e.reg, eventsource.Policy{Threshold: 10}))
	waitFor(t, 10*time.Second, "a sweep of each version", func() bool {
		return len(sweeping(make([]int64, 2), counts(v1))) > 0 && len(sweeping(make([]int64, 2), counts(v2))) > 0
	})
	if s1, s2 := sweepersOver(v1, 10*sweepInterval), sweepersOver(v2, 10*sweepInterval); len(s1) != 1 || len(s2) != 1 {
		t.Fatalf("v1 replicas %v and v2 replicas %v swept; want one of each", s1, s2)
	}
}

// TestWithoutLeaseEveryReplicaSweeps: SweepLeaseTTL 0 is the old
// behaviour, every replica sweeps.
func TestWithoutLeaseEveryReplicaSweeps(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	fleet := startFleet(t, e, 2, "")
	waitFor(t, 10*time.Second, "both replicas to sweep", func() bool {
		return len(sweeping(make([]int64, 2), counts(fleet))) == 2
	})
}

// TestSweepLeaseConfig: a TTL under a second or a bad bucket name is a
// configuration error; the lease is checked only when it is on.
func TestSweepLeaseConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*snapshotter.Config)
		want   string
	}{
		{"ttl below 1s", func(c *snapshotter.Config) { c.SweepLeaseTTL = 500 * time.Millisecond }, "sweep lease TTL 500ms is below 1s"},
		{"bucket with a dot", func(c *snapshotter.Config) { c.LeaseBucket = "a.b" }, `lease bucket "a.b"`},
		{"empty bucket", func(c *snapshotter.Config) { c.LeaseBucket = "" }, `lease bucket ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := snapshotter.DefaultConfig()
			cfg.Store = memstore.New()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, snapshotter.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v; want ErrInvalidConfig naming %q", err, tc.want)
			}
		})
	}
	cfg := snapshotter.DefaultConfig()
	cfg.Store, cfg.SweepLeaseTTL, cfg.LeaseBucket = memstore.New(), 0, ""
	if err := cfg.Validate(); err != nil {
		t.Fatalf("lease off with no bucket: %v", err)
	}
}
