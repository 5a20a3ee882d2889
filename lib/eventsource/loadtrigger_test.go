package eventsource_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// requestingNotifier records what an external-mode repository hands its
// notifier, appends and load requests, and can fail or panic on
// requests: the faults a real publisher cannot be made to show on
// demand. (natsnotice's and the snapshotter's tests run the real one.)
type requestingNotifier struct {
	recordingNotifier
	mu       sync.Mutex
	requests []eventsource.SnapshotRequest
	fail     error
	panics   bool
}

func (n *requestingNotifier) RequestSnapshot(_ context.Context, r eventsource.SnapshotRequest) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.panics {
		panic("requester bug")
	}
	n.requests = append(n.requests, r)
	return n.fail
}

func (n *requestingNotifier) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.requests)
}

// unsnapshotted saves an account of n events with snapshots off, as an
// aggregate written before the snapshotter existed, or whose snapshots
// were pruned, looks.
func unsnapshotted(t *testing.T, h *harness, n int) uuid.UUID {
	t.Helper()
	return openAccount(t, h.accounts(nil), n).ID()
}

// appendEvents appends n deposits to id with snapshots off.
func appendEvents(t *testing.T, h *harness, id uuid.UUID, n int) {
	t.Helper()
	r := h.accounts(nil)
	a, err := r.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		_ = a.Deposit(1)
	}
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
}

// mustLoad loads id and returns how many events the load replayed and
// whether it started from a snapshot.
func mustLoad(t *testing.T, r *accountRepo, id uuid.UUID) (*exampledomain.Account, int64, bool) {
	t.Helper()
	a, err := r.Load(ctx, id)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	fromSnap, replayed := a.LoadedFromSnapshot()
	return a, replayed, fromSnap
}

func (h *harness) requests(mode eventsource.SnapshotMode, result string) int64 {
	h.t.Helper()
	return h.counter("evsnap.load.snapshot_requests", telemetrykeys.AttrMode.String(string(mode)), telemetrykeys.AttrResult.String(result))
}

func TestLoadTriggerOptions(t *testing.T) {
	h := newHarness(t)
	bad := map[string]struct {
		opts []eventsource.Option
		says string
	}{
		"trigger 0":                {[]eventsource.Option{eventsource.WithLoadTrigger(0)}, "WithLoadTrigger: the events a load replays before it asks for a snapshot must be at least 1, got 0"},
		"trigger negative":         {[]eventsource.Option{eventsource.WithLoadTrigger(-3)}, "WithLoadTrigger: the events a load replays before it asks for a snapshot must be at least 1, got -3"},
		"interval 0":               {[]eventsource.Option{eventsource.WithLoadTrigger(10), eventsource.WithLoadTriggerInterval(0)}, "WithLoadTriggerInterval: the interval must be positive, got 0s"},
		"interval negative":        {[]eventsource.Option{eventsource.WithLoadTrigger(10), eventsource.WithLoadTriggerInterval(-time.Second)}, "WithLoadTriggerInterval: the interval must be positive, got -1s"},
		"interval without trigger": {[]eventsource.Option{eventsource.WithLoadTriggerInterval(time.Second)}, "WithLoadTriggerInterval has no effect without WithLoadTrigger"},
		"external notifier that cannot request": {[]eventsource.Option{eventsource.WithAppendNotifier(&recordingNotifier{}), eventsource.WithLoadTrigger(10)},
			"*eventsource_test.recordingNotifier does not implement eventsource.SnapshotRequester"},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := eventsource.NewRepository[exampledomain.Account](h.store(), h.reg, c.opts...)
			if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("NewRepository error = %v, want ErrInvalidOption saying %q", err, c.says)
			}
		})
	}
	for _, mode := range []eventsource.SnapshotMode{eventsource.ModeSync, eventsource.ModeBackground, eventsource.ModeManual, eventsource.ModeOff} {
		r, err := eventsource.NewRepository[exampledomain.Account](h.store(), h.reg, eventsource.WithSnapshotMode(mode),
			eventsource.WithLoadTrigger(1), eventsource.WithLoadTriggerInterval(time.Hour))
		if err != nil {
			t.Fatalf("%s with a load trigger: %v", mode, err)
		}
		_ = r.Close(ctx)
	}
	r, err := eventsource.NewRepository[exampledomain.Account](h.store(), h.reg,
		eventsource.WithAppendNotifier(&requestingNotifier{}), eventsource.WithLoadTrigger(1))
	if err != nil {
		t.Fatalf("external with a notifier that can request: %v", err)
	}
	_ = r.Close(ctx)
}

// Without WithLoadTrigger no load asks for anything, however much it
// replays.
func TestLoadTriggerOffByDefault(t *testing.T) {
	h := newHarness(t)
	id := unsnapshotted(t, h, 300)
	for _, r := range []*accountRepo{h.accounts(h.snaps), h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeBackground))} {
		for range 3 {
			if _, replayed, _ := mustLoad(t, r, id); replayed != 300 {
				t.Fatalf("replayed %d, want 300", replayed)
			}
		}
		if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if h.snaps.Count() != 0 {
		t.Fatalf("%d snapshots stored by loads without a load trigger", h.snaps.Count())
	}
	if got := h.counter("evsnap.load.snapshot_requests"); got != 0 {
		t.Fatalf("%d snapshot requests counted without a load trigger", got)
	}
}

// In ModeOff and ModeManual the trigger is accepted and does nothing:
// those modes take no snapshot of their own accord.
func TestLoadTriggerModeOffAndManualDoNothing(t *testing.T) {
	for _, mode := range []eventsource.SnapshotMode{eventsource.ModeOff, eventsource.ModeManual} {
		t.Run(string(mode), func(t *testing.T) {
			h := newHarness(t)
			id := unsnapshotted(t, h, 300)
			r := h.accounts(h.snaps, eventsource.WithSnapshotMode(mode), eventsource.WithLoadTrigger(10))
			for range 3 {
				if _, replayed, _ := mustLoad(t, r, id); replayed != 300 {
					t.Fatalf("replayed %d, want 300", replayed)
				}
			}
			if h.snaps.Count() != 0 || h.counter("evsnap.load.snapshot_requests") != 0 {
				t.Fatalf("%d snapshots, %d requests; want none", h.snaps.Count(), h.counter("evsnap.load.snapshot_requests"))
			}
		})
	}
}

// In ModeSync the load that replays enough stores the snapshot of the
// state it built before it returns; the aggregate it returns knows it, so
// its next save is not due early; the next load replays from it.
func TestLoadTriggerSync(t *testing.T) {
	h := newHarness(t)
	id := unsnapshotted(t, h, 250)
	clock := newFrozenClock()
	r := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithLoadTrigger(50))
	eventsource.SetClock(r, clock.Now)

	a, replayed, _ := mustLoad(t, r, id)
	if replayed != 250 {
		t.Fatalf("first load replayed %d, want 250", replayed)
	}
	if s, err := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, id, exampledomain.AccountSchemaVersion); err != nil || s == nil || s.Version != 250 {
		t.Fatalf("snapshot after the load = %+v, %v; want v250", s, err)
	}
	if got := h.requests(eventsource.ModeSync, telemetrykeys.RequestAsked); got != 1 {
		t.Fatalf("requests asked = %d, want 1", got)
	}
	if got := h.counter("evsnap.snapshot.written", telemetrykeys.AttrMode.String("sync")); got != 1 {
		t.Fatalf("snapshots written = %d, want 1", got)
	}
	_ = a.Deposit(1)
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, id, exampledomain.AccountSchemaVersion); s.Version != 250 {
		t.Fatalf("a save 1 event after the load's snapshot stored v%d: the loaded aggregate did not know its snapshot", s.Version)
	}
	if _, replayed, fromSnap := mustLoad(t, r, id); !fromSnap || replayed != 1 {
		t.Fatalf("next load: from a snapshot %v, replayed %d; want true, 1", fromSnap, replayed)
	}

	// 60 more events behind the snapshot: within the interval the
	// aggregate does not ask again; after it, it does.
	appendEvents(t, h, id, 60)
	if _, replayed, _ := mustLoad(t, r, id); replayed != 61 {
		t.Fatalf("replayed %d, want 61", replayed)
	}
	if got := h.requests(eventsource.ModeSync, telemetrykeys.RequestRateLimited); got != 1 {
		t.Fatalf("rate-limited requests = %d, want 1", got)
	}
	clock.Advance(time.Minute) // the default interval
	if _, replayed, _ := mustLoad(t, r, id); replayed != 61 {
		t.Fatalf("replayed %d, want 61", replayed)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, id, exampledomain.AccountSchemaVersion); s.Version != 311 {
		t.Fatalf("snapshot after the interval = v%d, want v311", s.Version)
	}
	if _, replayed, _ := mustLoad(t, r, id); replayed != 0 {
		t.Fatalf("replayed %d after the heal, want 0", replayed)
	}
}

// In ModeBackground the load queues the snapshot on the repository's
// background writer.
func TestLoadTriggerBackground(t *testing.T) {
	h := newHarness(t)
	id := unsnapshotted(t, h, 300)
	r := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeBackground), eventsource.WithLoadTrigger(100))
	if _, replayed, _ := mustLoad(t, r, id); replayed != 300 {
		t.Fatalf("replayed %d, want 300", replayed)
	}
	// The count is what was still pending when it was called: the writer
	// may have stored the load's snapshot already (the checks below see it).
	if n, err := r.AwaitPendingSnapshots(ctx); err != nil || n > 1 {
		t.Fatalf("AwaitPendingSnapshots = %d, %v; want at most the 1 queued by the load", n, err)
	}
	if s, err := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, id, exampledomain.AccountSchemaVersion); err != nil || s == nil || s.Version != 300 {
		t.Fatalf("snapshot = %+v, %v; want v300", s, err)
	}
	if got := h.counter("evsnap.snapshot.written", telemetrykeys.AttrMode.String("background")); got != 1 {
		t.Fatalf("background snapshots written = %d, want 1", got)
	}
	if _, replayed, _ := mustLoad(t, r, id); replayed != 0 {
		t.Fatalf("replayed %d after the heal, want 0", replayed)
	}
}

// In ModeExternal the load hands a request to the notifier: the versions
// it replayed, after its snapshot or from 1; each aggregate once per
// interval.
func TestLoadTriggerExternal(t *testing.T) {
	h := newHarness(t)
	bare := unsnapshotted(t, h, 300)
	behind := unsnapshotted(t, h, 200)
	manual := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeManual))
	a, _, _ := mustLoad(t, manual, behind)
	if _, err := manual.CreateSnapshot(ctx, a); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, h, behind, 120)

	n := &requestingNotifier{}
	clock := newFrozenClock()
	r := h.accounts(h.snaps, eventsource.WithAppendNotifier(n), eventsource.WithLoadTrigger(100), eventsource.WithLoadTriggerInterval(10*time.Second))
	eventsource.SetClock(r, clock.Now)
	for range 5 {
		mustLoad(t, r, bare)
		mustLoad(t, r, behind)
	}
	if len(n.requests) != 2 {
		t.Fatalf("%d requests from 10 loads of 2 aggregates, want 2: %+v", len(n.requests), n.requests)
	}
	if got, want := n.requests[0], (eventsource.SnapshotRequest{AggregateType: exampledomain.AccountType, AggregateID: bare, FirstVersion: 1, LastVersion: 300}); got.RequestedAt.IsZero() || got.AggregateType != want.AggregateType || got.AggregateID != want.AggregateID || got.FirstVersion != want.FirstVersion || got.LastVersion != want.LastVersion {
		t.Fatalf("request for the aggregate without a snapshot = %+v, want %+v and a time", got, want)
	}
	if got := n.requests[1]; got.AggregateID != behind || got.FirstVersion != 201 || got.LastVersion != 320 {
		t.Fatalf("request for the aggregate 120 behind its snapshot = %+v, want v201-v320", got)
	}
	if len(n.got) != 0 || h.snaps.Count() != 1 {
		t.Fatalf("loads sent %d append notices and the store holds %d snapshots; want 0 and the manual one", len(n.got), h.snaps.Count())
	}
	clock.Advance(9 * time.Second)
	mustLoad(t, r, bare)
	if n.count() != 2 {
		t.Fatalf("asked again within the interval: %d requests", n.count())
	}
	clock.Advance(2 * time.Second)
	mustLoad(t, r, bare)
	if n.count() != 3 {
		t.Fatalf("did not ask again after the interval: %d requests", n.count())
	}
	if got := h.requests(eventsource.ModeExternal, telemetrykeys.RequestAsked); got != 3 {
		t.Fatalf("requests asked = %d, want 3", got)
	}
	if got := h.requests(eventsource.ModeExternal, telemetrykeys.RequestRateLimited); got != 9 {
		t.Fatalf("requests rate-limited = %d, want 9", got)
	}
}

// Many concurrent loads of one aggregate ask once: while the first one's
// snapshot is being written, every other load that replayed as much is
// held back.
func TestLoadTriggerConcurrentLoadsAskOnce(t *testing.T) {
	h := newHarness(t)
	id := unsnapshotted(t, h, 200)
	snaps := &faultySnapshots{SnapshotStore: h.snaps, block: make(chan struct{})}
	r := h.accounts(snaps, eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithLoadTrigger(100))
	const loads = 32
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
	)
	for range loads {
		wg.Go(func() {
			if _, err := r.Load(ctx, id); err != nil {
				t.Errorf("Load: %v", err)
			}
			mu.Lock()
			done++
			mu.Unlock()
		})
	}
	// Every load has either returned or is writing a snapshot (held by
	// the store until released).
	waitUntil(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		snaps.mu.Lock()
		defer snaps.mu.Unlock()
		return done+snaps.saves == loads
	})
	close(snaps.block)
	wg.Wait()
	if snaps.saves != 1 {
		t.Fatalf("%d concurrent loads wrote %d snapshots, want 1", loads, snaps.saves)
	}
	if asked, limited := h.requests(eventsource.ModeSync, telemetrykeys.RequestAsked), h.requests(eventsource.ModeSync, telemetrykeys.RequestRateLimited); asked != 1 || limited != loads-1 {
		t.Fatalf("asked %d, rate-limited %d; want 1 and %d", asked, limited, loads-1)
	}
}

// waitUntil polls cond until it holds, failing after a generous bound (a
// hang, not a timing assertion).
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 30s")
		}
		time.Sleep(time.Millisecond)
	}
}

// The trigger's memory is bounded however many aggregates ask: it
// remembers at most LoadTriggerCapacity per interval, and the loads past
// that wait for the next interval.
func TestLoadTriggerBoundedMemory(t *testing.T) {
	h := newHarness(t)
	const aggregates = 10_000
	ids := make([]uuid.UUID, aggregates)
	writer := h.accounts(nil)
	for i := range ids {
		ids[i] = openAccount(t, writer, 2).ID()
	}
	late := openAccount(t, writer, 2).ID()
	clock := newFrozenClock()
	r := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithLoadTrigger(2))
	eventsource.SetClock(r, clock.Now)
	capacity := eventsource.LoadTriggerCapacity
	var asked int64
	for round := 1; asked < aggregates; round++ {
		for _, id := range ids {
			mustLoad(t, r, id)
		}
		if got := eventsource.LoadTriggerRemembered(r); got > 2*capacity {
			t.Fatalf("round %d: the trigger remembers %d aggregates, more than 2 × %d", round, got, capacity)
		}
		got := h.requests(eventsource.ModeSync, telemetrykeys.RequestAsked)
		if want := min(int64(round*capacity), aggregates); got != want {
			t.Fatalf("round %d: %d asked in all, want %d", round, got, want)
		}
		asked = got
		clock.Advance(time.Minute)
	}
	if h.snaps.Count() != aggregates {
		t.Fatalf("%d snapshots, want %d", h.snaps.Count(), aggregates)
	}
	clock.Advance(2 * time.Minute)
	mustLoad(t, r, late) // asks, and turns both generations out first
	if got := eventsource.LoadTriggerRemembered(r); got != 1 {
		t.Fatalf("the trigger remembers %d aggregates, want 1: the others asked two intervals ago", got)
	}
}

// A request that fails, or a notifier, store or codec that panics, is
// logged and counted; the load returns its aggregate.
func TestLoadTriggerFailuresNeverFailTheLoad(t *testing.T) {
	cases := map[string]struct {
		opts   func(h *harness) (eventsource.SnapshotStore, []eventsource.Option)
		mode   eventsource.SnapshotMode
		reason string
	}{
		"notifier error": {func(h *harness) (eventsource.SnapshotStore, []eventsource.Option) {
			return h.snaps, []eventsource.Option{eventsource.WithAppendNotifier(&requestingNotifier{fail: errInjected})}
		}, eventsource.ModeExternal, telemetrykeys.FailureNotify},
		"notifier panic": {func(h *harness) (eventsource.SnapshotStore, []eventsource.Option) {
			return h.snaps, []eventsource.Option{eventsource.WithAppendNotifier(&requestingNotifier{panics: true})}
		}, eventsource.ModeExternal, telemetrykeys.FailurePanic},
		"store error": {func(h *harness) (eventsource.SnapshotStore, []eventsource.Option) {
			return &faultySnapshots{SnapshotStore: h.snaps, saveErr: errInjected}, []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync)}
		}, eventsource.ModeSync, telemetrykeys.FailureStore},
		"store panic": {func(h *harness) (eventsource.SnapshotStore, []eventsource.Option) {
			return panickingSnapshots{h.snaps}, []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync)}
		}, eventsource.ModeSync, telemetrykeys.FailurePanic},
		"queue closed": {func(h *harness) (eventsource.SnapshotStore, []eventsource.Option) {
			return h.snaps, []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeBackground)}
		}, eventsource.ModeBackground, telemetrykeys.FailureRepoClosed},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			id := unsnapshotted(t, h, 150)
			snaps, opts := c.opts(h)
			r := h.accounts(snaps, append(opts, eventsource.WithLoadTrigger(100))...)
			if c.mode == eventsource.ModeBackground {
				_ = r.Close(ctx)
			}
			a, err := func() (a *exampledomain.Account, err error) {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("a panic in the load's request reached the caller: %v", p)
					}
				}()
				return r.Load(ctx, id)
			}()
			if err != nil || a.Version() != 150 {
				t.Fatalf("Load = %v, %v; want the aggregate at v150", a, err)
			}
			if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrMode.String(string(c.mode)), telemetrykeys.AttrReason.String(c.reason)); got != 1 {
				t.Fatalf("failures with reason %s = %d, want 1", c.reason, got)
			}
			if got := h.requests(c.mode, telemetrykeys.RequestFailed); got != 1 {
				t.Fatalf("failed requests = %d, want 1", got)
			}
			if h.snaps.Count() != 0 {
				t.Fatal("a snapshot was stored")
			}
		})
	}
}

// The load path's hook costs a load no allocation when the trigger is
// off, when the load replayed fewer events than it counts, and when the
// aggregate asked less than an interval ago. (It is measured alone: under
// the race detector a whole load's allocations vary from run to run.)
func TestLoadTriggerNotFiringAllocatesNothing(t *testing.T) {
	h := newHarness(t)
	id := unsnapshotted(t, h, 20)
	// Without the harness's telemetry SDK: the hook's own allocations.
	plain := func(opts ...eventsource.Option) *accountRepo {
		r, err := eventsource.NewRepository[exampledomain.Account](h.store(), h.reg, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close(ctx) })
		return r
	}
	n := &requestingNotifier{}
	for name, r := range map[string]*accountRepo{
		"off":          plain(),
		"below":        plain(eventsource.WithLoadTrigger(21)),
		"rate-limited": plain(eventsource.WithAppendNotifier(n), eventsource.WithLoadTrigger(20)),
	} {
		a, replayed, _ := mustLoad(t, r, id)
		if replayed != 20 {
			t.Fatalf("replayed %d, want 20", replayed)
		}
		if got := testing.AllocsPerRun(1000, func() { eventsource.AskIfReplayedEnough(ctx, r, a) }); got != 0 {
			t.Errorf("%s: the load path's hook allocates %v times per load", name, got)
		}
	}
	if n.count() != 1 {
		t.Fatalf("%d requests, want the first load's only", n.count())
	}
}
