package eventsource_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// frozenClock is a clock tests move by hand.
type frozenClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFrozenClock() *frozenClock {
	return &frozenClock{now: time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)}
}

func (c *frozenClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *frozenClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// panickingNotifier stands for a notifier with a bug.
type panickingNotifier struct{ calls int }

func (n *panickingNotifier) Notify(context.Context, eventsource.Appended) error {
	n.calls++
	panic("notifier bug")
}

func (n *panickingNotifier) Flush(context.Context) error { return nil }

// panickingSnapshots stands for a snapshot store with a bug.
type panickingSnapshots struct{ eventsource.SnapshotStore }

func (panickingSnapshots) SaveSnapshot(context.Context, eventsource.Snapshot) (bool, error) {
	panic("snapshot store bug")
}

// panickyMarshal stands for a codec that panics encoding a state.
type panickyMarshal struct{ eventsource.Codec }

func (p panickyMarshal) Marshal(v any) ([]byte, error) {
	if _, ok := v.(exampledomain.AccountState); ok {
		panic("marshal bug")
	}
	return p.Codec.Marshal(v)
}

// saveAfterCommitPanics saves n accounts of two events each and checks that
// every save returned nil with its events committed, whatever panicked
// after the commit.
func saveAfterCommitPanics(t *testing.T, h *harness, r *accountRepo, n int) {
	t.Helper()
	for i := range n {
		a := r.New(uuid.New())
		_ = a.Open("Ada", 100)
		_ = a.Deposit(1)
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("save %d: a panic after the commit reached the caller: %v", i, p)
				}
			}()
			if err := r.Save(ctx, a); err != nil {
				t.Fatalf("save %d: %v", i, err)
			}
		}()
		if v, err := h.events.StreamVersion(ctx, exampledomain.AccountType, a.ID()); err != nil || v != 2 {
			t.Fatalf("save %d: stream at v%d (%v), want the 2 events committed", i, v, err)
		}
		if a.Version() != 2 || len(a.Uncommitted()) != 0 {
			t.Fatalf("save %d: aggregate at v%d with %d uncommitted events", i, a.Version(), len(a.Uncommitted()))
		}
	}
}

// After a commit, nothing a notifier does reaches the caller: a panic is
// recovered, logged once per interval, counted, and Save returns nil.
func TestNotifierPanicNeverEscapesSave(t *testing.T) {
	h := newHarness(t)
	n := &panickingNotifier{}
	r := h.accounts(h.snaps, eventsource.WithAppendNotifier(n))
	clock := newFrozenClock()
	eventsource.SetClock(r, clock.Now)

	saveAfterCommitPanics(t, h, r, 20)
	if n.calls != 20 {
		t.Fatalf("notifier called %d times, want 20", n.calls)
	}
	if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailurePanic),
		telemetrykeys.AttrMode.String(string(eventsource.ModeExternal))); got != 20 {
		t.Fatalf("panics counted = %d, want 20", got)
	}
	logs := h.logs.String()
	if got := strings.Count(logs, "panicked after a committed save"); got != 1 {
		t.Fatalf("%d log lines for 20 panics within one interval, want 1:\n%s", got, logs)
	}
	if !strings.Contains(logs, "notifier bug") {
		t.Fatalf("the log line does not carry the panic value:\n%s", logs)
	}

	clock.Advance(time.Minute)
	saveAfterCommitPanics(t, h, r, 1)
	logs = h.logs.String()
	if got := strings.Count(logs, "panicked after a committed save"); got != 2 {
		t.Fatalf("%d log lines after the interval passed, want 2:\n%s", got, logs)
	}
	if !strings.Contains(logs, "suppressed_since_last=19") {
		t.Fatalf("the second line does not count the 19 suppressed panics:\n%s", logs)
	}
}

// The same holds for the snapshot a sync save takes: a store or a codec
// that panics is counted and logged, and the save succeeds.
func TestSyncSnapshotPanicNeverEscapesSave(t *testing.T) {
	for name, setup := range map[string]func(h *harness) *accountRepo{
		"store": func(h *harness) *accountRepo {
			return h.accounts(panickingSnapshots{h.snaps}, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}))
		},
		"codec": func(h *harness) *accountRepo {
			h.reg = exampledomain.NewRegistry(eventsource.WithCodec(panickyMarshal{eventsource.NewRegistry().Codec()}))
			return h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}))
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			r := setup(h)
			eventsource.SetClock(r, newFrozenClock().Now)
			saveAfterCommitPanics(t, h, r, 5)
			if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailurePanic),
				telemetrykeys.AttrMode.String(string(eventsource.ModeSync))); got != 5 {
				t.Fatalf("panics counted = %d, want 5", got)
			}
			if got := strings.Count(h.logs.String(), "panicked after a committed save"); got != 1 {
				t.Fatalf("%d log lines for 5 panics within one interval, want 1:\n%s", got, h.logs.String())
			}
		})
	}
}

// A background writer whose store panics keeps the process alive, counts
// the panic and goes on writing.
func TestBackgroundSnapshotPanicIsCounted(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(panickingSnapshots{h.snaps}, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}),
		eventsource.WithSnapshotMode(eventsource.ModeBackground))
	saveAfterCommitPanics(t, h, r, 3)
	if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailurePanic),
		telemetrykeys.AttrMode.String(string(eventsource.ModeBackground))); got != 3 {
		t.Fatalf("panics counted = %d, want 3", got)
	}
	if !strings.Contains(h.logs.String(), "snapshot store bug") {
		t.Fatalf("no log line carries the panic value:\n%s", h.logs.String())
	}
}
