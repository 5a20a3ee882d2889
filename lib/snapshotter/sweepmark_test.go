package snapshotter_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// silentSave appends n events to aggregate id (opening it first if new)
// and publishes no notice: a notice lost (an app crashed before
// publishing, or JetStream lost it).
func (e *env) silentSave(id uuid.UUID, n int) {
	e.t.Helper()
	ctx := context.Background()
	repo, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		e.t.Fatal(err)
	}
	defer repo.Close(ctx)
	a, err := repo.Load(ctx, id)
	if err != nil {
		a = repo.New(id)
		_ = a.Open("lost", 0)
		n--
	}
	for range n {
		_ = a.Deposit(1)
	}
	if err := repo.Save(ctx, a); err != nil {
		e.t.Fatal(err)
	}
}

// sweepUntil runs sweeps of w until every aggregate of ids has a
// snapshot at its head (on PostgreSQL a pass in change order stops short
// of changes whose transactions, any test's, are still open), and
// returns how many the sweeps snapshotted.
func (e *env) sweepUntil(w *snapshotter.Worker, ids ...uuid.UUID) int {
	e.t.Helper()
	total := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := w.Sweep(context.Background())
		if err != nil {
			e.t.Fatalf("Sweep: %v", err)
		}
		total += n
		done := true
		for _, id := range ids {
			if e.snapshotVersion(id) != e.head(id) {
				done = false
			}
		}
		if done {
			return total
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the sweeps did not snapshot %v at their heads within 30s (%d snapshotted)", ids, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newIDs(n int) []uuid.UUID {
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	return ids
}

// The sweep recovers aggregates whose notices were lost: before any
// sweeper ran (its first pass is a full one), since its last pass (it
// examines only what changed: a pass after nothing changed examines no
// aggregate), an aggregate whose rebuild failed long ago while the sweep
// went on past it (a restarted worker starts before it), after a prune
// removed every snapshot, after a snapshot's removal, and after the
// threshold was lowered.
func TestSweepRecoversLostNotices(t *testing.T) { forEachSetup(t, testSweepRecoversLostNotices) }

func testSweepRecoversLostNotices(t *testing.T, e *env) {
	ctx := context.Background()
	sweeper := func(threshold int) *snapshotter.Worker {
		w := e.worker(threshold, func(c *snapshotter.Config) { c.SweepRate, c.SweepBatch = 1000, 3 })
		t.Cleanup(func() { w.Close(ctx) })
		return w
	}
	w := sweeper(10)

	// Lost before any sweeper ran: the first pass is a full one. Five
	// behind and a batch of three: two passes.
	before := newIDs(5)
	for i, id := range before {
		e.silentSave(id, 12+i)
	}
	below := uuid.New()
	e.silentSave(below, 5)
	if n := e.sweepUntil(w, before...); n != 5 {
		t.Fatalf("the first passes snapshotted %d, want 5", n)
	}
	if e.snapshotVersion(below) != 0 {
		t.Fatal("the sweep snapshotted an aggregate below the threshold")
	}

	// Nothing changed: a pass examines no aggregate.
	examined := e.store.examined.Load()
	if n, err := w.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("a pass after nothing changed = %d, %v", n, err)
	}
	if got := e.store.examined.Load() - examined; got != 0 {
		t.Fatalf("a pass after nothing changed examined %d aggregates, want 0", got)
	}

	// Lost since: the next passes examine what changed.
	since := newIDs(2)
	for _, id := range since {
		e.silentSave(id, 15)
	}
	e.silentSave(before[0], 20) // behind again
	examined = e.store.examined.Load()
	if n := e.sweepUntil(w, append(since, before[0])...); n != 3 {
		t.Fatalf("the passes after three lost notices snapshotted %d, want 3", n)
	}
	if got := e.store.examined.Load() - examined; got < 3 || got > 20 {
		t.Fatalf("the passes after three changes examined %d aggregates, want about 3 (not the %d stored)", got, len(before)+4)
	}

	// A rebuild that fails is retried; the sweep goes on past it, but its
	// mark does not: a worker started later (a restart, or another
	// replica taking the sweep over) begins before it.
	failing, after := uuid.New(), uuid.New()
	e.silentSave(failing, 30)
	e.store.unreadable.Store(&map[uuid.UUID]bool{failing: true})
	e.silentSave(after, 30)
	e.sweepUntil(w, after)
	if e.snapshotVersion(failing) != 0 {
		t.Fatal("the aggregate whose reads fail was snapshotted")
	}
	w.Close(ctx)
	e.store.unreadable.Store(nil)
	restarted := sweeper(10)
	e.sweepUntil(restarted, failing)

	// A prune removes every snapshot of the type and the sweep's mark:
	// the next passes recover every aggregate at least the threshold
	// behind.
	if _, err := restarted.Prune(ctx, exampledomain.AccountType, 0, snapshotter.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	all := append(append(append([]uuid.UUID{}, before...), since...), failing, after)
	e.sweepUntil(restarted, all...)

	// DeleteSnapshot makes an aggregate behind without an append.
	if ok, err := e.store.DeleteSnapshot(ctx, exampledomain.AccountType, since[1]); !ok || err != nil {
		t.Fatalf("DeleteSnapshot = %v, %v", ok, err)
	}
	e.sweepUntil(restarted, since[1])

	// A lower threshold: the aggregate 5 behind is now due.
	restarted.Close(ctx)
	lower := sweeper(3)
	e.sweepUntil(lower, below)
	e.store.checkNoRegressions(t)
}
