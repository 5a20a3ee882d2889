package snapshotter_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
)

// reader returns an application repository in external mode on e's store
// and publisher whose loads ask for a snapshot when they replay at least
// trigger events.
func (e *env) reader(trigger int, mp metric.MeterProvider) *eventsource.Repository[exampledomain.Account, *exampledomain.Account] {
	e.t.Helper()
	opts := []eventsource.Option{eventsource.WithAppendNotifier(e.pub), eventsource.WithLoadTrigger(trigger), eventsource.WithLogger(e.logs)}
	if mp != nil {
		opts = append(opts, eventsource.WithMeterProvider(mp))
	}
	r, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// TestPrunedAggregateHealsFromReads: an aggregate of 300 events,
// snapshotted every 100 by the worker, loses its snapshots to a prune of
// the whole type. Nothing is saved again; the application only loads it,
// many times at once. Its loads replay all 300 events and ask once (the
// rate limit); the worker acts on the read notice and stores the snapshot
// at the head; the next load replays fewer events than the trigger.
func TestPrunedAggregateHealsFromReads(t *testing.T) {
	forEachSetup(t, testPrunedAggregateHealsFromReads)
}

func testPrunedAggregateHealsFromReads(t *testing.T, e *env) {
	ctx := context.Background()
	mp, scrape := promScrape(t)
	e.start(e.worker(100, func(c *snapshotter.Config) { c.MeterProvider = mp }))
	id := uuid.New()
	for v := int64(100); v <= 300; v += 100 {
		e.save(id, 100)
		waitFor(t, 10*time.Second, "the worker's snapshot at the head", func() bool { return e.snapshotVersion(id) == v })
	}
	waitFor(t, 10*time.Second, "every append notice acked", e.consumerIdle("snapshotter"))
	n, err := e.store.DeleteSnapshotsByType(ctx, exampledomain.AccountType, 0)
	if err != nil || n < 1 {
		t.Fatalf("DeleteSnapshotsByType = %d, %v; want at least this aggregate's", n, err)
	}
	if v := e.snapshotVersion(id); v != 0 {
		t.Fatalf("snapshot v%d survived the prune", v)
	}
	lagBefore, _ := sample(scrape(), "evsnap_worker_snapshot_lag_seconds_count")

	const trigger = 50
	reader := e.reader(trigger, mp)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if a, err := reader.Load(ctx, id); err != nil || a.Version() != 300 || a.State().Balance != 299 {
				t.Errorf("Load = %v, %v; want v300, balance 299", a, err)
			}
		})
	}
	wg.Wait()
	if _, err := reader.AwaitPendingSnapshots(ctx); err != nil { // flushes the publisher
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the snapshot back at the head, from reads alone", func() bool { return e.snapshotVersion(id) == 300 })
	a, err := reader.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if fromSnap, replayed := a.LoadedFromSnapshot(); !fromSnap || replayed >= trigger {
		t.Fatalf("load after the heal: from a snapshot %v, replayed %d; want a snapshot and fewer than %d", fromSnap, replayed, trigger)
	}
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))

	metrics := scrape()
	if v, _ := sample(metrics, "evsnap_load_snapshot_requests_total", `evsnap_result="asked"`, `evsnap_snapshot_mode="external"`); v != 1 {
		t.Errorf("requests asked = %v, want 1 from 16 concurrent loads", v)
	}
	if v, _ := sample(metrics, "evsnap_worker_snapshot_written_total", `evsnap_source="read"`); v != 1 {
		t.Errorf("snapshots written from read notices = %v, want 1", v)
	}
	if v, _ := sample(metrics, "evsnap_worker_snapshot_lag_seconds_count"); v != lagBefore {
		t.Errorf("the read-triggered snapshot was recorded as commit lag (%v samples, %v before)", v, lagBefore)
	}
	e.store.checkNoRegressions(t)
}

// A read notice is due whatever the worker's policy says, so long as no
// snapshot at or past the version the load replayed from is stored:
// here a threshold of 1,000 would never snapshot an aggregate of 300
// events, yet its load's request does. A later request the stored
// snapshot already answers is not due.
func TestReadNoticeDueWhateverThePolicy(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	e.start(e.worker(1000, nil))
	ctx := context.Background()
	id := uuid.New()
	e.save(id, 300)
	waitFor(t, 10*time.Second, "the append notice acked", e.consumerIdle("snapshotter"))
	if v := e.snapshotVersion(id); v != 0 {
		t.Fatalf("snapshot v%d below the policy's threshold", v)
	}
	reader := e.reader(50, nil)
	if _, err := reader.Load(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.AwaitPendingSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the snapshot the load asked for", func() bool { return e.snapshotVersion(id) == 300 })
	waitFor(t, 10*time.Second, "the read notice acked", e.consumerIdle("snapshotter"))
	writes := e.store.writes.Load()
	// Another load that replayed from nothing up to v299 (it read before
	// the snapshot was stored): the snapshot at v300 answers it.
	if err := e.pub.RequestSnapshot(ctx, eventsource.SnapshotRequest{AggregateType: exampledomain.AccountType, AggregateID: id,
		FirstVersion: 1, LastVersion: 299, RequestedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the late read notice acked", e.consumerIdle("snapshotter"))
	if got := e.store.writes.Load(); got != writes {
		t.Fatalf("a read notice the stored snapshot answers made the worker write %d snapshots", got-writes)
	}
}
