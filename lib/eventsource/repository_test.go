package eventsource_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

var ctx = context.Background()

// The tutorial's sync demo: one save of 16 events with threshold 10 must
// leave a snapshot at version 16 before Save returns.
func TestSyncModeSnapshotsBeforeSaveReturns(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}), eventsource.WithSnapshotMode(eventsource.ModeSync))
	a := openAccount(t, r, 16)
	s, err := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	if err != nil || s == nil {
		t.Fatalf("no snapshot right after a sync save: %v, %v", s, err)
	}
	if s.Version != 16 || s.SchemaVersion != 1 {
		t.Fatalf("snapshot v%d schema %d, want v16 schema 1", s.Version, s.SchemaVersion)
	}
	if got := h.counter("evsnap.snapshot.written", telemetrykeys.AttrMode.String("sync")); got != 1 {
		t.Fatalf("snapshots written = %d, want 1", got)
	}
	// Below the threshold since the last snapshot: no new snapshot.
	for range 9 {
		_ = a.Deposit(1)
	}
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s.Version != 16 {
		t.Fatalf("snapshot moved to v%d although only 9 events followed it", s.Version)
	}
	_ = a.Deposit(1)
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s.Version != 26 {
		t.Fatalf("snapshot at v%d, want v26 (10 events after v16)", s.Version)
	}
}

func TestBackgroundModeAwaitPending(t *testing.T) {
	h := newHarness(t)
	block := make(chan struct{})
	slow := &faultySnapshots{SnapshotStore: h.snaps, block: block}
	r := h.accounts(slow, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}), eventsource.WithSnapshotMode(eventsource.ModeBackground))
	a := openAccount(t, r, 16)
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s != nil {
		t.Fatal("background snapshot written before the store was released")
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if n, err := r.AwaitPendingSnapshots(tctx); n != 1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AwaitPendingSnapshots while blocked = %d, %v; want 1, deadline exceeded", n, err)
	}
	close(block)
	if n, err := r.AwaitPendingSnapshots(ctx); err != nil || n > 1 {
		t.Fatalf("AwaitPendingSnapshots = %d, %v; want at most 1, nil", n, err)
	}
	s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	if s == nil || s.Version != 16 {
		t.Fatalf("after awaiting: snapshot %+v, want v16", s)
	}
	if n, err := r.AwaitPendingSnapshots(ctx); n != 0 || err != nil {
		t.Fatalf("second await = %d, %v; want 0, nil", n, err)
	}
}

// Upstream's background task reads the aggregate when it runs, so events
// raised after Save (not yet committed) leak into the snapshot, and every
// later save of that aggregate fails. Here the state is captured at Save.
func TestBackgroundSnapshotCapturesStateAtSave(t *testing.T) {
	h := newHarness(t)
	block := make(chan struct{})
	slow := &faultySnapshots{SnapshotStore: h.snaps, block: block}
	r := h.accounts(slow, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}), eventsource.WithSnapshotMode(eventsource.ModeBackground))
	a := openAccount(t, r, 10)
	want := a.State()
	for range 5 {
		_ = a.Deposit(1000) // raised, not saved, while the snapshot is pending
	}
	close(block)
	if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	if s == nil || s.Version != 10 {
		t.Fatalf("snapshot %+v, want v10", s)
	}
	loaded, err := r.Load(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if loaded.State() != want || loaded.Version() != 10 {
		t.Fatalf("loaded v%d %+v, want v10 %+v (uncommitted events leaked into the snapshot)", loaded.Version(), loaded.State(), want)
	}
	if err := r.Save(ctx, a); err != nil {
		t.Fatalf("saving the aggregate after its background snapshot: %v", err)
	}
}

func TestManualModeOnlyCreateSnapshot(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeManual), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}))
	a := openAccount(t, r, 21)
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s != nil {
		t.Fatal("manual mode took a snapshot on save")
	}
	s, err := r.CreateSnapshot(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != 21 || a.SnapshotVersion() != 21 {
		t.Fatalf("CreateSnapshot v%d (aggregate knows v%d), want 21", s.Version, a.SnapshotVersion())
	}
	stored, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	if stored == nil || stored.Version != 21 {
		t.Fatalf("stored %+v", stored)
	}
}

func TestCreateSnapshotRefusals(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeManual))
	a := openAccount(t, r, 3)
	_ = a.Deposit(5)
	if _, err := r.CreateSnapshot(ctx, a); !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), "unsaved") {
		t.Fatalf("snapshot with unsaved events: %v", err)
	}
	if _, err := r.CreateSnapshot(ctx, r.New(uuid.New())); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("snapshot of an empty aggregate: %v", err)
	}
	if _, err := r.CreateSnapshot(ctx, nil); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("snapshot of nil: %v", err)
	}
	off := h.accounts(nil)
	if _, err := off.CreateSnapshot(ctx, a); !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), `"off"`) {
		t.Fatalf("snapshot with snapshots off: %v", err)
	}
	failing := &faultySnapshots{SnapshotStore: h.snaps, saveErr: errInjected}
	rf := h.accounts(failing, eventsource.WithSnapshotMode(eventsource.ModeManual))
	b := openAccount(t, rf, 2)
	if _, err := rf.CreateSnapshot(ctx, b); !errors.Is(err, errInjected) {
		t.Fatalf("CreateSnapshot must return the store's error, got %v", err)
	}
}

// accountV2 is the Account after a schema change: same type name, schema 2.
type accountV2 struct {
	eventsource.Root[exampledomain.AccountState]
}

func (*accountV2) AggregateType() string { return exampledomain.AccountType }
func (*accountV2) SchemaVersion() int    { return 2 }

// The tutorial's schema versioning demo, end to end, with a row per
// schema version (decision 28): v2 never reads v1's snapshot and writes
// its own on the next save; v1 keeps loading from and writing its own
// (a rollback finds it); v1 snapshots are pruned once v1 is gone.
func TestSchemaVersioningEndToEnd(t *testing.T) {
	h := newHarness(t)
	v1 := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
	a := openAccount(t, v1, 16)
	other := openAccount(t, v1, 12) // keeps its v1 snapshot until pruned
	s1, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	if s1 == nil || s1.SchemaVersion != 1 || s1.Version != 16 {
		t.Fatalf("v1 snapshot %+v", s1)
	}

	v2, err := eventsource.NewRepository[accountV2](h.store(h.snaps), h.reg, append(h.opts,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close(ctx)
	b, err := v2.Load(ctx, a.ID())
	if err != nil {
		t.Fatalf("v2 load with a v1 snapshot: %v", err)
	}
	if from, n := b.LoadedFromSnapshot(); from || n != 16 {
		t.Fatalf("v2 load: fromSnapshot=%v replayed=%d, want a full replay of 16", from, n)
	}
	if b.State() != a.State() {
		t.Fatalf("v2 state %+v, want %+v", b.State(), a.State())
	}
	// v2 asked for its own row, of which there is none: not a fallback.
	if got := h.counter("evsnap.snapshot.fallbacks", telemetrykeys.AttrReason.String(telemetrykeys.FallbackSchemaMismatch)); got != 0 {
		t.Fatalf("schema mismatch fallbacks = %d, want 0", got)
	}
	b.Raise(exampledomain.MoneyDeposited{Amount: 50})
	if err := v2.Save(ctx, b); err != nil {
		t.Fatal(err)
	}
	s2, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 2)
	if s2 == nil || s2.SchemaVersion != 2 || s2.Version != 17 {
		t.Fatalf("after the v2 save: snapshot %+v, want v17 schema 2", s2)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s == nil || s.Version != 16 {
		t.Fatalf("the v2 save changed the v1 snapshot: %+v, want v16", s)
	}
	// v1 (rolled back to, say) loads from its own snapshot and writes its
	// own row; the v2 row stays.
	a2, err := v1.Load(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if from, n := a2.LoadedFromSnapshot(); !from || n != 1 || a2.Version() != 17 {
		t.Fatalf("v1 load after v2 wrote: fromSnapshot=%v replayed=%d v%d, want its v16 snapshot and 1 event", from, n, a2.Version())
	}
	if _, err := v1.CreateSnapshot(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s == nil || s.Version != 17 {
		t.Fatalf("v1's snapshot after CreateSnapshot: %+v, want v17", s)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 2); s == nil || s.Version != 17 {
		t.Fatalf("a v1 writer changed the v2 snapshot: %+v", s)
	}
	n, err := h.snaps.DeleteSnapshotsByType(ctx, exampledomain.AccountType, 2)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2 (both accounts' v1 snapshots)", n, err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, other.ID(), 1); s != nil {
		t.Fatal("v1 snapshot survived pruning")
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 2); s == nil {
		t.Fatal("v2 snapshot was pruned")
	}
}

func TestInvalidOptionsFailAtConstruction(t *testing.T) {
	h := newHarness(t)
	cases := map[string][]eventsource.Option{
		"threshold 0":               {eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 0})},
		"threshold negative":        {eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: -5})},
		"external without notifier": {eventsource.WithSnapshotMode(eventsource.ModeExternal)},
		"notifier with sync":        {eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithAppendNotifier(&recordingNotifier{})},
		"unknown mode":              {eventsource.WithSnapshotMode("eventually")},
		"threshold with mode off":   {eventsource.WithSnapshotMode(eventsource.ModeOff), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10})},
		"milestones with mode off":  {eventsource.WithSnapshotMode(eventsource.ModeOff), eventsource.WithSnapshotPolicy(eventsource.Policy{Milestones: []string{"OrderShipped"}})},
		"empty milestone":           {eventsource.WithSnapshotPolicy(eventsource.Policy{Milestones: []string{""}})},
		"no milestones":             {eventsource.WithSnapshotPolicy(eventsource.Policy{Milestones: []string{}})},
		"zero workers":              {eventsource.WithBackgroundWorkers(0, 10)},
		"nil notifier":              {eventsource.WithAppendNotifier(nil)},
		"nil logger":                {eventsource.WithLogger(nil)},
		"nil option":                {nil},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := eventsource.NewRepository[exampledomain.Account](h.store(), h.reg, opts...)
			if !errors.Is(err, eventsource.ErrInvalidOption) {
				t.Fatalf("NewRepository error = %v, want ErrInvalidOption", err)
			}
		})
	}
	if _, err := eventsource.NewRepository[exampledomain.Account](nil, h.reg); !errors.Is(err, eventsource.ErrInvalidOption) {
		t.Fatalf("nil store: %v", err)
	}
	if _, err := eventsource.NewRepository[exampledomain.Account](h.store(), nil); !errors.Is(err, eventsource.ErrInvalidOption) {
		t.Fatalf("nil registry: %v", err)
	}
	_, err := eventsource.NewRepository[exampledomain.Account](h.store(), h.reg, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 0}))
	if err == nil || !strings.Contains(err.Error(), "needs a threshold of at least 1 or milestone event types") {
		t.Fatalf("the error should say what was wrong: %v", err)
	}
	if h.events.Count() != 0 {
		t.Fatal("a failed construction wrote events")
	}
}

func TestParseSnapshotMode(t *testing.T) {
	for in, want := range map[string]eventsource.SnapshotMode{"sync": eventsource.ModeSync, " Background ": eventsource.ModeBackground, "MANUAL": eventsource.ModeManual, "external": eventsource.ModeExternal} {
		if got, err := eventsource.ParseSnapshotMode(in); err != nil || got != want {
			t.Errorf("ParseSnapshotMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := eventsource.ParseSnapshotMode("sometimes"); err == nil || !strings.Contains(err.Error(), `"sometimes"`) {
		t.Errorf("bad mode error %v should name the input", err)
	}
}

// Pitfall 4 and the default: a store without a threshold uses 100; with
// threshold 1 every save snapshots (allowed, merely wasteful).
func TestDefaultThresholdAndThresholdOne(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps)
	if r.Mode() != eventsource.ModeSync {
		t.Fatalf("default mode with a store = %q, want sync", r.Mode())
	}
	a := openAccount(t, r, 99)
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s != nil {
		t.Fatal("snapshot below the default threshold of 100")
	}
	_ = a.Deposit(1)
	_ = r.Save(ctx, a)
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s == nil || s.Version != 100 {
		t.Fatalf("snapshot %+v, want v100", s)
	}
	every := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}))
	b := openAccount(t, every, 1)
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, b.ID(), 1); s == nil || s.Version != 1 {
		t.Fatalf("threshold 1: snapshot %+v, want v1", s)
	}
}

// ModeOff neither reads nor writes snapshots: its loads replay even when
// the store holds a usable snapshot (one given to LoadFrom included), its
// saves write none, and the store's snapshot is left alone.
func TestModeOffNeverTouchesSnapshots(t *testing.T) {
	h := newHarness(t)
	every := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}))
	a := openAccount(t, every, 5)
	snap, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	if snap == nil || snap.Version != 5 {
		t.Fatalf("stored snapshot %+v, want v5", snap)
	}
	off := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeOff))
	if off.Mode() != eventsource.ModeOff {
		t.Fatalf("mode %q, want off", off.Mode())
	}
	for name, load := range map[string]func() (*exampledomain.Account, error){
		"Load":     func() (*exampledomain.Account, error) { return off.Load(ctx, a.ID()) },
		"LoadFrom": func() (*exampledomain.Account, error) { return off.LoadFrom(ctx, a.ID(), snap) },
	} {
		got, err := load()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if from, n := got.LoadedFromSnapshot(); from || n != 5 || got.State() != a.State() {
			t.Fatalf("%s in ModeOff: from=%v replayed=%d; want a full replay of 5", name, from, n)
		}
	}
	for range 200 {
		_ = a.Deposit(1)
	}
	if err := off.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s == nil || s.Version != 5 {
		t.Fatalf("after a ModeOff save of 200 events the stored snapshot is %+v, want the v5 one", s)
	}
	if n := h.counter("evsnap.snapshot.fallbacks"); n != 0 {
		t.Fatalf("%d fallbacks counted; ModeOff ignores snapshots without falling back", n)
	}
}

func TestMilestoneSnapshot(t *testing.T) {
	h := newHarness(t)
	r, err := eventsource.NewRepository[exampledomain.Order](h.store(h.snaps), h.reg, append(h.opts,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100, Milestones: exampledomain.OrderMilestones}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	o := r.New(uuid.New())
	_ = o.Place("Grace")
	_ = o.AddItem("book", 2, 12.5)
	if err := r.Save(ctx, o); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.OrderType, o.ID(), 1); s != nil {
		t.Fatal("snapshot without a milestone or the threshold")
	}
	_ = o.Pay()
	if err := r.Save(ctx, o); err != nil {
		t.Fatal(err)
	}
	s, _ := h.snaps.GetSnapshot(ctx, exampledomain.OrderType, o.ID(), 1)
	if s == nil || s.Version != 3 {
		t.Fatalf("after OrderPaid: snapshot %+v, want v3", s)
	}
	loaded, err := r.Load(ctx, o.ID())
	if err != nil {
		t.Fatal(err)
	}
	if st := loaded.State(); st.Status != exampledomain.StatusPaid || st.Items["book"] != 2 || st.Total != 25 {
		t.Fatalf("state from the milestone snapshot: %+v", st)
	}
}

// A snapshot failure after a committed append is logged and counted, never
// returned: the events are committed.
func TestSnapshotFailureNeverFailsSave(t *testing.T) {
	for _, mode := range []eventsource.SnapshotMode{eventsource.ModeSync, eventsource.ModeBackground} {
		t.Run(string(mode), func(t *testing.T) {
			h := newHarness(t)
			failing := &faultySnapshots{SnapshotStore: h.snaps, saveErr: errInjected}
			r := h.accounts(failing, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 5}), eventsource.WithSnapshotMode(mode))
			a := openAccount(t, r, 7)
			if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
				t.Fatal(err)
			}
			if v, _ := h.events.StreamVersion(ctx, exampledomain.AccountType, a.ID()); v != 7 {
				t.Fatalf("stream at v%d, want 7", v)
			}
			if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailureStore)); got != 1 {
				t.Fatalf("failures counted = %d, want 1", got)
			}
			if !strings.Contains(h.logs.String(), errInjected.Error()) {
				t.Fatalf("failure not logged:\n%s", h.logs.String())
			}
			loaded, err := r.Load(ctx, a.ID())
			if err != nil || loaded.Version() != 7 {
				t.Fatalf("load after a failed snapshot: %v, %v", loaded, err)
			}
		})
	}
}

// A state that cannot be encoded is never stored as an (empty) snapshot.
type badState struct {
	F func() `json:"f"`
	N int    `json:"n"`
}

func (s badState) Apply(e eventsource.Event) badState { s.N++; return s }

type badAgg struct{ eventsource.Root[badState] }

func (*badAgg) AggregateType() string { return "Bad" }
func (*badAgg) SchemaVersion() int    { return 1 }

func TestUnencodableStateIsNeverSnapshotted(t *testing.T) {
	h := newHarness(t)
	r, err := eventsource.NewRepository[badAgg](h.store(h.snaps), h.reg, append(h.opts,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	a := r.New(uuid.New())
	a.Raise(exampledomain.MoneyDeposited{Amount: 1})
	if err := r.Save(ctx, a); err != nil {
		t.Fatalf("save failed because the snapshot could not be encoded: %v", err)
	}
	if h.snaps.Count() != 0 {
		t.Fatal("a snapshot was stored for a state that cannot be encoded")
	}
	if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailureEncode)); got != 1 {
		t.Fatalf("encode failures = %d, want 1", got)
	}
	loaded, err := r.Load(ctx, a.ID())
	if err != nil || loaded.State().N != 1 {
		t.Fatalf("load: %v, %v", loaded, err)
	}
	if _, err := r.CreateSnapshot(ctx, loaded); err == nil {
		t.Fatal("CreateSnapshot of an unencodable state succeeded")
	}
}

func TestLoadFallsBackOnBadSnapshots(t *testing.T) {
	cases := []struct {
		name   string
		reason string
		break_ func(h *harness, f *faultySnapshots, id uuid.UUID)
	}{
		{"corrupt state", telemetrykeys.FallbackDecodeError, func(h *harness, f *faultySnapshots, id uuid.UUID) {
			f.corrupt = []byte(`{"balance": "not a number"`)
		}},
		{"wrong types", telemetrykeys.FallbackDecodeError, func(h *harness, f *faultySnapshots, id uuid.UUID) {
			s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, id, 1)
			s.State = []byte(`{"balance": "lots", "owner_name": 7}`)
			if _, err := h.snaps.SaveSnapshot(ctx, *s); err != nil {
				panic(err)
			}
		}},
		{"store error", telemetrykeys.FallbackStoreError, func(h *harness, f *faultySnapshots, id uuid.UUID) {
			f.getErr = errInjected
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			f := &faultySnapshots{SnapshotStore: h.snaps}
			r := h.accounts(f, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
			a := openAccount(t, r, 12)
			_ = a.Withdraw(30)
			if err := r.Save(ctx, a); err != nil {
				t.Fatal(err)
			}
			c.break_(h, f, a.ID())
			loaded, err := r.Load(ctx, a.ID())
			if err != nil {
				t.Fatalf("load failed because of the snapshot: %v", err)
			}
			if loaded.State() != a.State() || loaded.Version() != 13 {
				t.Fatalf("loaded v%d %+v, want v13 %+v", loaded.Version(), loaded.State(), a.State())
			}
			if from, n := loaded.LoadedFromSnapshot(); from || n != 13 {
				t.Fatalf("fromSnapshot=%v replayed=%d, want a full replay", from, n)
			}
			if got := h.counter("evsnap.snapshot.fallbacks", telemetrykeys.AttrReason.String(c.reason)); got != 1 {
				t.Fatalf("fallbacks{reason=%s} = %d, want 1", c.reason, got)
			}
		})
	}
}

func TestLoadFromSnapshotWithoutLaterEvents(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 5}))
	a := openAccount(t, r, 5)
	loaded, err := r.Load(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if from, n := loaded.LoadedFromSnapshot(); !from || n != 0 || loaded.Version() != 5 || loaded.State() != a.State() {
		t.Fatalf("from=%v replayed=%d v%d %+v", from, n, loaded.Version(), loaded.State())
	}
	// Saving on top of a snapshot-only load works.
	_ = loaded.Deposit(3)
	if err := r.Save(ctx, loaded); err != nil {
		t.Fatal(err)
	}
}

func TestNotFoundAndExists(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(nil)
	id := uuid.New()
	if _, err := r.Load(ctx, id); !errors.Is(err, eventsource.ErrAggregateNotFound) {
		t.Fatalf("load of a missing aggregate: %v", err)
	}
	if ok, err := r.Exists(ctx, id); ok || err != nil {
		t.Fatalf("Exists(missing) = %v, %v", ok, err)
	}
	a := openAccount(t, r, 1)
	if ok, err := r.Exists(ctx, a.ID()); !ok || err != nil {
		t.Fatalf("Exists(saved) = %v, %v", ok, err)
	}
	if _, err := r.Load(ctx, uuid.Nil); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("load of the nil id: %v", err)
	}
	// New does no I/O: an unsaved aggregate does not exist.
	b := r.New(uuid.New())
	_ = b.Open("x", 0)
	if ok, _ := r.Exists(ctx, b.ID()); ok {
		t.Fatal("an unsaved aggregate exists")
	}
}

func TestConcurrentSavesConflict(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(nil)
	a := openAccount(t, r, 3)
	x, _ := r.Load(ctx, a.ID())
	y, _ := r.Load(ctx, a.ID())
	_ = x.Deposit(1)
	_ = y.Withdraw(1)
	_ = y.Withdraw(2)
	if err := r.Save(ctx, x); err != nil {
		t.Fatal(err)
	}
	err := r.Save(ctx, y)
	var ce *eventsource.ConflictError
	if !errors.Is(err, eventsource.ErrConcurrencyConflict) || !errors.As(err, &ce) {
		t.Fatalf("second save: %v, want a *ConflictError", err)
	}
	if ce.Expected != 3 || ce.Actual != 4 || ce.AggregateID != a.ID() || ce.AggregateType != exampledomain.AccountType {
		t.Fatalf("conflict %+v", ce)
	}
	if v, _ := h.events.StreamVersion(ctx, exampledomain.AccountType, a.ID()); v != 4 {
		t.Fatalf("stream at v%d after the conflict, want 4", v)
	}
	if len(y.Uncommitted()) != 2 {
		t.Fatal("a refused save dropped the aggregate's pending events")
	}
}

func TestUnknownEventTypes(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(nil)
	a := openAccount(t, r, 1)
	a.Raise(unregistered{})
	err := r.Save(ctx, a)
	if !errors.Is(err, eventsource.ErrUnknownEventType) || !strings.Contains(err.Error(), `"Unregistered"`) {
		t.Fatalf("save of an unregistered event: %v", err)
	}
	if v, _ := h.events.StreamVersion(ctx, exampledomain.AccountType, a.ID()); v != 1 {
		t.Fatal("an unregistered event was committed")
	}
	// A stored event whose type this process does not know fails the load
	// with an error naming it (events are the truth; we cannot skip them).
	_, err = h.events.Append(ctx, exampledomain.AccountType, a.ID(), 1, []eventsource.NewEvent{{
		ID: uuid.New(), Type: "FromTheFuture", Payload: []byte(`{}`), OccurredAt: time.Now().UTC(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := eventsource.NewRepository[exampledomain.Account](eventsource.Split(&payloadOnly{EventStore: h.events}, h.snaps), h.reg)
	_, err = r2.Load(ctx, a.ID())
	var ue *eventsource.UnknownEventTypeError
	if !errors.As(err, &ue) || ue.Type != "FromTheFuture" {
		t.Fatalf("load with an unknown stored type: %v", err)
	}
	if eventsource.IsPermanent(err) != true {
		t.Fatal("unknown event type should be permanent")
	}
}

type unregistered struct{}

func (unregistered) EventType() string { return "Unregistered" }

// payloadOnly hides decoded events, as the SQL stores do, so the registry
// must decode payloads.
type payloadOnly struct{ eventsource.EventStore }

func (p *payloadOnly) ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[eventsource.RecordedEvent, error] {
	return func(yield func(eventsource.RecordedEvent, error) bool) {
		for rec, err := range p.EventStore.ReadEvents(ctx, typ, id, after) {
			rec.Event = nil
			if !yield(rec, err) {
				return
			}
		}
	}
}

func TestDecodingFromPayloads(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(nil)
	a := openAccount(t, r, 4)
	_ = a.Withdraw(2.5)
	_ = r.Save(ctx, a)
	r2, _ := eventsource.NewRepository[exampledomain.Account](eventsource.Split(&payloadOnly{EventStore: h.events}, h.snaps), h.reg)
	loaded, err := r2.Load(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if loaded.State() != a.State() {
		t.Fatalf("decoded replay %+v, want %+v", loaded.State(), a.State())
	}
	// A payload that does not decode names the event.
	_, _ = h.events.Append(ctx, exampledomain.AccountType, a.ID(), 5, []eventsource.NewEvent{{
		ID: uuid.New(), Type: exampledomain.TypeMoneyDeposited, Payload: []byte(`{"amount": "ten"}`), OccurredAt: time.Now().UTC(),
	}})
	_, err = r2.Load(ctx, a.ID())
	if !errors.Is(err, eventsource.ErrDecode) || !strings.Contains(err.Error(), "MoneyDeposited v6") {
		t.Fatalf("undecodable payload: %v", err)
	}
}

func TestMetadataFromContext(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(nil)
	a := r.New(uuid.New())
	_ = a.Open("Ada", 1)
	mctx := eventsource.ContextWithMetadata(ctx, eventsource.Metadata{CorrelationID: "req-42", CausationID: "cmd-7", Attributes: map[string]string{"user": "ada"}})
	if err := r.Save(mctx, a); err != nil {
		t.Fatal(err)
	}
	read := 0
	for rec, err := range h.events.ReadEvents(ctx, exampledomain.AccountType, a.ID(), 0) {
		if err != nil {
			t.Fatal(err)
		}
		read++
		if rec.Metadata.CorrelationID != "req-42" || rec.Metadata.CausationID != "cmd-7" || rec.Metadata.Attributes["user"] != "ada" {
			t.Fatalf("metadata %+v", rec.Metadata)
		}
		if rec.OccurredAt.IsZero() || rec.OccurredAt.Location() != time.UTC {
			t.Fatalf("occurred at %v", rec.OccurredAt)
		}
	}
	if read != 1 {
		t.Fatalf("read %d events back, want the 1 saved", read)
	}
}

// An older instance snapshotting after a newer snapshot was stored never
// moves the stored snapshot backwards.
func TestStaleCreateSnapshotKeepsNewer(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeManual))
	a := openAccount(t, r, 10)
	old, _ := r.Load(ctx, a.ID())
	_ = a.Deposit(1)
	_ = r.Save(ctx, a)
	if _, err := r.CreateSnapshot(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateSnapshot(ctx, old); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s.Version != 11 {
		t.Fatalf("stored snapshot v%d, want v11", s.Version)
	}
	if got := h.counter("evsnap.snapshot.superseded"); got != 1 {
		t.Fatalf("superseded writes = %d, want 1", got)
	}
}

func TestBackgroundQueueFullDropsAndCounts(t *testing.T) {
	h := newHarness(t)
	block := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := &faultySnapshots{SnapshotStore: h.snaps, block: block, started: started}
	r := h.accounts(slow, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}), eventsource.WithSnapshotMode(eventsource.ModeBackground),
		eventsource.WithBackgroundWorkers(1, 1))
	openAccount(t, r, 1) // taken by the worker, which blocks
	<-started
	openAccount(t, r, 1) // fills the queue
	openAccount(t, r, 1) // dropped; the save still succeeds
	if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailureQueueFull)); got != 1 {
		t.Fatalf("queue-full drops = %d, want 1", got)
	}
	if h.events.Count() != 3 {
		t.Fatalf("%d events committed, want 3", h.events.Count())
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if n, err := r.AwaitPendingSnapshots(tctx); !errors.Is(err, context.DeadlineExceeded) || n != 2 {
		t.Fatalf("await with a blocked store = %d, %v; want 2, deadline exceeded", n, err)
	}
	close(block)
	// The writers may finish before this call: it waits for whatever is left.
	if n, err := r.AwaitPendingSnapshots(ctx); err != nil || n > 2 {
		t.Fatalf("await = %d, %v", n, err)
	}
	if h.snaps.Count() != 2 {
		t.Fatalf("%d snapshots, want 2", h.snaps.Count())
	}
}

func TestCloseDrainsAndRefusesSaves(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}), eventsource.WithSnapshotMode(eventsource.ModeBackground))
	for range 20 {
		openAccount(t, r, 2)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if h.snaps.Count() != 20 {
		t.Fatalf("Close left %d of 20 snapshots unwritten", 20-h.snaps.Count())
	}
	a := r.New(uuid.New())
	_ = a.Open("late", 0)
	if err := r.Save(ctx, a); !errors.Is(err, eventsource.ErrClosed) {
		t.Fatalf("save after Close: %v", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseWithBlockedStoreHonoursContext(t *testing.T) {
	h := newHarness(t)
	slow := &faultySnapshots{SnapshotStore: h.snaps, block: make(chan struct{})}
	r, _ := eventsource.NewRepository[exampledomain.Account](h.store(slow), h.reg, append(h.opts,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}), eventsource.WithSnapshotMode(eventsource.ModeBackground))...)
	openAccount(t, r, 1)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := r.Close(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a blocked store: %v", err)
	}
	// goleak (TestMain) checks that Close really waited for its goroutines.
}

func TestSpansAndLoadMetrics(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
	a := openAccount(t, r, 25)
	_ = a.Deposit(1)
	_ = r.Save(ctx, a)
	if _, err := r.Load(ctx, a.ID()); err != nil {
		t.Fatal(err)
	}
	var load map[attribute.Key]attribute.Value
	names := map[string]int{}
	for _, s := range h.spans.Ended() {
		names[s.Name()]++
		if s.Name() == "eventsource.Load" {
			load = map[attribute.Key]attribute.Value{}
			for _, kv := range s.Attributes() {
				load[kv.Key] = kv.Value
			}
		}
	}
	for _, n := range []string{"eventsource.Save", "eventsource.Load", "eventsource.LoadSnapshotAndEvents", "eventsource.SaveSnapshot"} {
		if names[n] == 0 {
			t.Errorf("no %s span (got %v)", n, names)
		}
	}
	if load[telemetrykeys.AttrSnapshotUsed].AsBool() != true || load[telemetrykeys.AttrEventsReplayed].AsInt64() != 1 || load[telemetrykeys.AttrVersion].AsInt64() != 26 ||
		load[telemetrykeys.AttrAggregateID].AsString() != a.ID().String() || load[telemetrykeys.AttrAggregateType].AsString() != "Account" {
		t.Fatalf("load span attributes %v", load)
	}
	if got := h.counter("evsnap.load.events_replayed"); got != 1 {
		t.Fatalf("events replayed metric = %d, want 1", got)
	}
}

func TestSaveWithNothingToSaveAndNil(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(nil)
	a := openAccount(t, r, 2)
	if err := r.Save(ctx, a); err != nil {
		t.Fatalf("save with no pending events: %v", err)
	}
	if err := r.Save(ctx, nil); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("save of nil: %v", err)
	}
	if h.events.Count() != 2 {
		t.Fatal("an empty save appended")
	}
}

// recordingNotifier captures external-mode notices and counts flushes.
type recordingNotifier struct {
	got      []eventsource.Appended
	err      error
	flushes  int
	flushErr error
}

func (n *recordingNotifier) Notify(_ context.Context, a eventsource.Appended) error {
	n.got = append(n.got, a)
	return n.err
}

func (n *recordingNotifier) Flush(context.Context) error {
	n.flushes++
	return n.flushErr
}

func TestExternalModeNotifies(t *testing.T) {
	h := newHarness(t)
	n := &recordingNotifier{}
	r := h.accounts(h.snaps, eventsource.WithAppendNotifier(n))
	if r.Mode() != eventsource.ModeExternal {
		t.Fatalf("mode with a notifier = %q", r.Mode())
	}
	a := openAccount(t, r, 3)
	_ = a.Withdraw(1)
	_ = r.Save(ctx, a)
	if len(n.got) != 2 {
		t.Fatalf("%d notices, want 2", len(n.got))
	}
	first, second := n.got[0], n.got[1]
	if first.FirstVersion != 1 || first.LastVersion != 3 || len(first.EventTypes) != 3 || first.EventTypes[0] != exampledomain.TypeAccountOpened {
		t.Fatalf("first notice %+v", first)
	}
	if second.FirstVersion != 4 || second.LastVersion != 4 || second.EventTypes[0] != exampledomain.TypeMoneyWithdrawn || second.AggregateID != a.ID() {
		t.Fatalf("second notice %+v", second)
	}
	if h.snaps.Count() != 0 {
		t.Fatal("external mode wrote a snapshot in process")
	}
	n.err = errInjected
	_ = a.Deposit(1)
	if err := r.Save(ctx, a); err != nil {
		t.Fatalf("a notifier error failed the save: %v", err)
	}
	if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailureNotify)); got != 1 {
		t.Fatalf("notify failures = %d", got)
	}
}

func TestRegistry(t *testing.T) {
	reg := eventsource.NewRegistry()
	if err := eventsource.Register[exampledomain.MoneyDeposited](reg); err != nil {
		t.Fatal(err)
	}
	if err := eventsource.Register[exampledomain.MoneyDeposited](reg); err != nil {
		t.Fatalf("registering the same type twice: %v", err)
	}
	if err := eventsource.Register[clash](reg); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("clash: %v", err)
	}
	if err := eventsource.Register[nameless](reg); err == nil {
		t.Fatal("an empty event type name was accepted")
	}
	if got := reg.Types(); len(got) != 1 || got[0] != "MoneyDeposited" {
		t.Fatalf("Types() = %v", got)
	}
	e, err := reg.Decode("MoneyDeposited", []byte(`{"amount": 2.5}`))
	if err != nil || e.(exampledomain.MoneyDeposited).Amount != 2.5 {
		t.Fatalf("decode: %v, %v", e, err)
	}
	if _, err := reg.Decode("Nope", []byte(`{}`)); !errors.Is(err, eventsource.ErrUnknownEventType) || !strings.Contains(err.Error(), `"Nope"`) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := reg.Encode(clash{}); err == nil {
		t.Fatal("encoding a value of another Go type under a registered name succeeded")
	}
}

type clash struct{}

func (clash) EventType() string { return "MoneyDeposited" }

type nameless struct{}

func (nameless) EventType() string { return "" }

// memstore.Store works as both stores for the repository.
func TestCombinedMemStore(t *testing.T) {
	st := memstore.New()
	r, err := eventsource.NewRepository[exampledomain.Account](st, exampledomain.NewRegistry(), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 2}))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	a := openAccount(t, r, 3)
	if s, _ := st.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s == nil {
		t.Fatal("no snapshot")
	}
}

func TestMaxSnapshotBytes(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 1}), eventsource.WithMaxSnapshotBytes(20))
	a := openAccount(t, r, 2)
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if h.snaps.Count() != 0 {
		t.Fatal("an oversized snapshot was stored")
	}
	if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailureEncode)); got != 1 {
		t.Fatalf("oversized snapshot failures = %d, want 1", got)
	}
	_, err := r.CreateSnapshot(ctx, a)
	if !errors.Is(err, eventsource.ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "20-byte maximum") {
		t.Fatalf("CreateSnapshot of an oversized state: %v", err)
	}
	if _, err := eventsource.NewRepository[exampledomain.Account](h.store(), h.reg, eventsource.WithMaxSnapshotBytes(0)); !errors.Is(err, eventsource.ErrInvalidOption) {
		t.Fatalf("max 0: %v", err)
	}
}

// A snapshot claiming a version the stream does not have (a restored
// database) is not trusted: the load replays, counts it and removes it.
func TestSnapshotAheadOfStreamFallsBack(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
	a := openAccount(t, r, 3)
	_, _ = h.snaps.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: a.ID(), AggregateType: exampledomain.AccountType,
		Version: 10, SchemaVersion: 1, EventID: uuid.New(), State: []byte(`{"open":true,"balance":12345}`), CreatedAt: time.Now()})
	loaded, err := r.Load(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Version() != 3 || loaded.State() != a.State() {
		t.Fatalf("loaded v%d %+v, want v3 %+v", loaded.Version(), loaded.State(), a.State())
	}
	if from, _ := loaded.LoadedFromSnapshot(); from || loaded.SnapshotVersion() != 0 {
		t.Fatalf("the ahead-of-stream snapshot was used (from=%v, snapshot version %d)", from, loaded.SnapshotVersion())
	}
	if got := h.counter("evsnap.snapshot.fallbacks", telemetrykeys.AttrReason.String(telemetrykeys.FallbackStale)); got != 1 {
		t.Fatalf("stale fallbacks = %d", got)
	}
	if got := h.counter("evsnap.snapshot.stale_deletes", telemetrykeys.AttrResult.String(telemetrykeys.StaleDeleted)); got != 1 {
		t.Fatalf("stale deletes = %d", got)
	}
	if h.snaps.Count() != 0 {
		t.Fatal("the stale snapshot is still stored")
	}
	_ = loaded.Deposit(1)
	if err := r.Save(ctx, loaded); err != nil {
		t.Fatalf("saving after the fallback: %v", err)
	}
}

// A snapshot at a version the stream has, but built from another history
// (an aggregate created anew over a left-over snapshot), is stale too;
// a correct snapshot written between the load's read and its delete is
// kept; and a failing delete never fails the load.
func TestSnapshotOfAnotherHistoryFallsBack(t *testing.T) {
	h := newHarness(t)
	fs := &faultySnapshots{SnapshotStore: h.snaps}
	r := h.accounts(fs, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}), eventsource.WithSnapshotMode(eventsource.ModeManual))
	a := openAccount(t, r, 6)
	good, err := r.CreateSnapshot(ctx, a)
	if err != nil || good.EventID == uuid.Nil {
		t.Fatalf("CreateSnapshot = %+v, %v; want one with an event id", good, err)
	}
	stale := *good
	stale.EventID, stale.State = uuid.New(), []byte(`{"open":true,"balance":12345}`)
	_, _ = h.snaps.SaveSnapshot(ctx, stale)

	loaded, err := r.LoadFrom(ctx, a.ID(), &stale)
	if err != nil || loaded.State() != a.State() {
		t.Fatalf("load over a snapshot of another history: %+v, %v; want %+v", loaded.State(), err, a.State())
	}
	if h.snaps.Count() != 0 {
		t.Fatal("the stale snapshot is still stored")
	}
	// The store holds the correct snapshot again: a load that still has
	// the stale one in hand must not remove it.
	_, _ = h.snaps.SaveSnapshot(ctx, *good)
	if loaded, err = r.LoadFrom(ctx, a.ID(), &stale); err != nil || loaded.State() != a.State() {
		t.Fatalf("second load: %v", err)
	}
	if got, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); got == nil || got.EventID != good.EventID {
		t.Fatalf("a load with a stale snapshot in hand removed the correct one: %+v", got)
	}
	if got := h.counter("evsnap.snapshot.stale_deletes", telemetrykeys.AttrResult.String(telemetrykeys.StaleAlreadyReplaced)); got != 1 {
		t.Fatalf("already-replaced stale deletes = %d", got)
	}
	// A failing delete is logged and counted; the load still succeeds.
	_, _ = h.snaps.SaveSnapshot(ctx, stale)
	fs.mu.Lock()
	fs.deleteErr = errInjected
	fs.mu.Unlock()
	if loaded, err = r.Load(ctx, a.ID()); err != nil || loaded.State() != a.State() {
		t.Fatalf("load with a failing delete: %v", err)
	}
	if got := h.counter("evsnap.snapshot.stale_deletes", telemetrykeys.AttrResult.String(telemetrykeys.StaleDeleteFailed)); got != 1 {
		t.Fatalf("failed stale deletes = %d", got)
	}
	if !strings.Contains(h.logs.String(), "stale snapshot not removed") {
		t.Fatalf("no log line for the failed delete:\n%s", h.logs.String())
	}
	if got := h.counter("evsnap.snapshot.fallbacks", telemetrykeys.AttrReason.String(telemetrykeys.FallbackStale)); got != 3 {
		t.Fatalf("stale fallbacks = %d, want 3", got)
	}
}

// An aggregate built with LoadFromHistory names no stored event, so it
// cannot be snapshotted; a nil EventID is refused by every store.
func TestSnapshotNeedsAnEventID(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotMode(eventsource.ModeManual))
	a := r.New(uuid.New())
	a.LoadFromHistory(exampledomain.AccountOpened{OwnerName: "Ada", InitialBalance: 1})
	if _, err := r.CreateSnapshot(ctx, a); !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), "event id") {
		t.Fatalf("CreateSnapshot of a LoadFromHistory aggregate: %v", err)
	}
	s := eventsource.Snapshot{AggregateID: a.ID(), AggregateType: "Account", Version: 1, SchemaVersion: 1, State: []byte(`{}`)}
	if err := s.Validate(); !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), "nil event id") {
		t.Fatalf("Validate of a snapshot without an event id: %v", err)
	}
}

func FuzzLoadWithSnapshotState(f *testing.F) {
	f.Add([]byte(`{"open":true,"owner_name":"Ada","balance":102,"transaction_count":2}`), int64(3), 1)
	f.Add([]byte(`{"balance":"x"}`), int64(2), 1)
	f.Add([]byte(`null`), int64(1), 1)
	f.Add([]byte(`[1,2,3]`), int64(9), 1)
	f.Add([]byte("\xff\xfe"), int64(3), 2)
	f.Add([]byte(`{"balance":1e400}`), int64(3), 1)
	f.Fuzz(func(t *testing.T, state []byte, version int64, schema int) {
		es, ss := memstore.NewEventStore(), &rowStore{}
		r, err := eventsource.NewRepository[exampledomain.Account](eventsource.Split(es, ss), exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeManual))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		a := r.New(uuid.New())
		_ = a.Open("Ada", 100)
		_ = a.Deposit(1)
		_ = a.Deposit(1)
		if err := r.Save(context.Background(), a); err != nil {
			t.Fatal(err)
		}
		// Tied to the stream's event at its version when there is one.
		eventID := uuid.New()
		for rec, err := range es.ReadEvents(context.Background(), exampledomain.AccountType, a.ID(), 0) {
			if err == nil && rec.Version == version {
				eventID = rec.ID
			}
		}
		ss.row = &eventsource.Snapshot{AggregateID: a.ID(), AggregateType: exampledomain.AccountType,
			Version: version, SchemaVersion: schema, EventID: eventID, State: state, CreatedAt: time.Now()}
		loaded, err := r.Load(context.Background(), a.ID())
		if err != nil {
			t.Fatalf("load failed because of a snapshot (state %q, v%d, schema %d): %v", state, version, schema, err)
		}
		if loaded.Version() != 3 {
			t.Fatalf("loaded v%d, want 3", loaded.Version())
		}
		if from, _ := loaded.LoadedFromSnapshot(); !from && loaded.State() != a.State() {
			t.Fatalf("full replay gave %+v, want %+v", loaded.State(), a.State())
		}
	})
}

func FuzzRegistryDecode(f *testing.F) {
	for _, c := range []struct{ typ, payload string }{
		{exampledomain.TypeAccountOpened, `{"owner_name":"Ada","initial_balance":10}`},
		{exampledomain.TypeMoneyDeposited, `{"amount":2.5}`},
		{exampledomain.TypeItemAdded, `{"sku":"x","quantity":1,"price":2}`},
		{exampledomain.TypeMoneyDeposited, `{"amount":"ten"}`},
		{"Unknown", `{}`},
		{exampledomain.TypeOrderPaid, ``},
	} {
		f.Add(c.typ, []byte(c.payload))
	}
	reg := exampledomain.NewRegistry()
	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		e, err := reg.Decode(typ, payload)
		if err != nil {
			if !errors.Is(err, eventsource.ErrUnknownEventType) && !errors.Is(err, eventsource.ErrDecode) {
				t.Fatalf("untyped decode error %v", err)
			}
			if !eventsource.IsPermanent(err) {
				t.Fatalf("decode error %v is not permanent", err)
			}
			return
		}
		if e.EventType() != typ {
			t.Fatalf("decoded %T named %q from type %q", e, e.EventType(), typ)
		}
		again, err := reg.Encode(e)
		if err != nil {
			t.Fatalf("re-encode %T: %v", e, err)
		}
		if _, err := reg.Decode(typ, again); err != nil {
			t.Fatalf("round trip of %s: %v", again, err)
		}
	})
}

// rowStore hands back whatever row it holds, however damaged (of any
// schema version, whichever one is asked for): what a snapshot store
// returns after on-disk corruption or a bad manual edit.
type rowStore struct {
	eventsource.SnapshotStore
	row *eventsource.Snapshot
}

func (r *rowStore) GetSnapshot(context.Context, string, uuid.UUID, int) (*eventsource.Snapshot, error) {
	if r.row == nil {
		return nil, nil
	}
	s := *r.row
	return &s, nil
}

func (r *rowStore) DeleteStaleSnapshot(_ context.Context, s eventsource.Snapshot) (bool, error) {
	if r.row == nil || r.row.Version != s.Version || r.row.SchemaVersion != s.SchemaVersion || r.row.EventID != s.EventID {
		return false, nil
	}
	r.row = nil
	return true, nil
}

func TestLoadFrom(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 5}))
	a := openAccount(t, r, 7)
	_ = a.Deposit(1)
	_ = r.Save(ctx, a)
	s, _ := h.snaps.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	got, err := r.LoadFrom(ctx, a.ID(), s)
	if err != nil {
		t.Fatal(err)
	}
	if from, n := got.LoadedFromSnapshot(); !from || n != 1 || got.State() != a.State() {
		t.Fatalf("LoadFrom(snapshot): from=%v replayed=%d %+v", from, n, got.State())
	}
	got, err = r.LoadFrom(ctx, a.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if from, n := got.LoadedFromSnapshot(); from || n != 8 || got.State() != a.State() {
		t.Fatalf("LoadFrom(nil): from=%v replayed=%d", from, n)
	}
	other := openAccount(t, r, 2)
	if _, err := r.LoadFrom(ctx, other.ID(), s); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("LoadFrom with another aggregate's snapshot: %v", err)
	}
}

// LoadFromEvents builds the aggregate from what LoadSnapshotAndEvents read, as
// Load would: from a usable snapshot plus the events after it, from all
// the events when the snapshot is of another schema version, and from a
// fresh full read when the snapshot's state does not decode.
func TestLoadFromEvents(t *testing.T) {
	st := memstore.New()
	reg := exampledomain.NewRegistry()
	r, err := eventsource.NewRepository[exampledomain.Account](st, reg)
	if err != nil {
		t.Fatal(err)
	}
	a := r.New(uuid.New())
	_ = a.Open("Ada", 10)
	for range 6 {
		_ = a.Deposit(1)
	}
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateSnapshot(ctx, a); err != nil {
		t.Fatal(err)
	}
	_ = a.Deposit(5)
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	load := func(schema int) (*eventsource.Snapshot, iter.Seq2[eventsource.RecordedEvent, error]) {
		snap, events, err := st.LoadSnapshotAndEvents(ctx, exampledomain.AccountType, a.ID(), schema)
		if err != nil {
			t.Fatal(err)
		}
		return snap, events
	}
	snap, events := load(1)
	got, err := r.LoadFromEvents(ctx, a.ID(), snap, events)
	if err != nil {
		t.Fatal(err)
	}
	if from, n := got.LoadedFromSnapshot(); !from || n != 1 || got.State() != a.State() || got.Version() != 8 {
		t.Fatalf("from a snapshot: from=%v replayed=%d v%d %+v, want from the snapshot, 1 replayed, v8 %+v", from, n, got.Version(), got.State(), a.State())
	}
	// A snapshot of another schema version (a caller that read another
	// row) with every event: the snapshot is ignored.
	if s, _ := load(2); s != nil {
		t.Fatalf("LoadSnapshotAndEvents of schema 2 returned %+v; the aggregate has no schema 2 row", s)
	}
	snap, _ = load(1)
	snap.SchemaVersion = 2
	events = st.ReadEvents(ctx, exampledomain.AccountType, a.ID(), 0)
	if got, err = r.LoadFromEvents(ctx, a.ID(), snap, events); err != nil || got.State() != a.State() {
		t.Fatalf("another schema: %v, %+v", err, got)
	}
	if from, n := got.LoadedFromSnapshot(); from || n != 8 {
		t.Fatalf("another schema: from=%v replayed=%d, want a full replay of 8", from, n)
	}
	// A snapshot whose state does not decode: the events from it are set
	// aside and the stream read in full.
	snap, events = load(1)
	snap.State = []byte(`{"balance": "not a number"}`)
	if got, err = r.LoadFromEvents(ctx, a.ID(), snap, events); err != nil || got.State() != a.State() {
		t.Fatalf("undecodable snapshot: %v, %+v", err, got)
	}
	if from, n := got.LoadedFromSnapshot(); from || n != 8 {
		t.Fatalf("undecodable snapshot: from=%v replayed=%d, want a full replay of 8", from, n)
	}
	if _, err := r.LoadFromEvents(ctx, a.ID(), nil, nil); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("no events: %v, want ErrInvalidArgument", err)
	}
	other := uuid.New()
	snap, events = load(1)
	if _, err := r.LoadFromEvents(ctx, other, snap, events); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("another aggregate's snapshot: %v, want ErrInvalidArgument", err)
	}
}

// During a NATS outage every save fails to notify; the warning is logged
// once per interval, while the metric counts every failure.
func TestNotifyFailuresAreRateLimitedInLogs(t *testing.T) {
	h := newHarness(t)
	n := &recordingNotifier{err: errInjected}
	r := h.accounts(h.snaps, eventsource.WithAppendNotifier(n))
	clock := newFrozenClock() // however slow the machine, the 50 saves fall in one interval
	eventsource.SetClock(r, clock.Now)
	for range 50 {
		openAccount(t, r, 1)
	}
	if got := strings.Count(h.logs.String(), "append notice not sent"); got != 1 {
		t.Fatalf("%d warnings for 50 failed notices, want 1", got)
	}
	if got := h.counter("evsnap.snapshot.failures", telemetrykeys.AttrReason.String(telemetrykeys.FailureNotify)); got != 50 {
		t.Fatalf("notify failures counted = %d, want 50", got)
	}
	clock.Advance(time.Minute)
	openAccount(t, r, 1)
	logs := h.logs.String()
	if got := strings.Count(logs, "append notice not sent"); got != 2 {
		t.Fatalf("%d warnings once the interval passed, want 2:\n%s", got, logs)
	}
	if !strings.Contains(logs, "suppressed_since_last=49") {
		t.Fatalf("the second warning does not count the 49 suppressed:\n%s", logs)
	}
}

// In external mode AwaitPendingSnapshots is the notifier's Flush, whose
// error it returns.
func TestAwaitPendingFlushesTheNotifier(t *testing.T) {
	h := newHarness(t)
	n := &recordingNotifier{}
	r := h.accounts(h.snaps, eventsource.WithAppendNotifier(n))
	openAccount(t, r, 2)
	if pending, err := r.AwaitPendingSnapshots(ctx); err != nil || pending != 0 || n.flushes != 1 {
		t.Fatalf("await in external mode = %d, %v after %d flushes; want 0, nil after 1", pending, err, n.flushes)
	}
	n.flushErr = errInjected
	if _, err := r.AwaitPendingSnapshots(ctx); !errors.Is(err, errInjected) || n.flushes != 2 {
		t.Fatalf("await with a failing Flush = %v after %d flushes; want the Flush error", err, n.flushes)
	}
}

// panickyCodec stands for a third-party decoder that panics on bad input.
type panickyCodec struct{ eventsource.Codec }

func (p panickyCodec) Unmarshal(data []byte, v any) error {
	if len(data) > 0 && data[0] == '!' {
		panic("index out of range")
	}
	return p.Codec.Unmarshal(data, v)
}

func TestCodecPanicsBecomeErrors(t *testing.T) {
	reg := exampledomain.NewRegistry(eventsource.WithCodec(panickyCodec{eventsource.NewRegistry().Codec()}))
	if _, err := reg.Decode(exampledomain.TypeMoneyDeposited, []byte("!boom")); !errors.Is(err, eventsource.ErrDecode) {
		t.Fatalf("decode with a panicking codec: %v", err)
	}
	es := memstore.NewEventStore()
	ss := &rowStore{}
	r, _ := eventsource.NewRepository[exampledomain.Account](eventsource.Split(es, ss), reg, eventsource.WithSnapshotMode(eventsource.ModeManual))
	defer r.Close(ctx)
	a := r.New(uuid.New())
	_ = a.Open("x", 1)
	_ = r.Save(ctx, a)
	ss.row = &eventsource.Snapshot{AggregateID: a.ID(), AggregateType: exampledomain.AccountType, Version: 1, SchemaVersion: 1, State: []byte("!boom")}
	loaded, err := r.Load(ctx, a.ID())
	if err != nil || loaded.State() != a.State() {
		t.Fatalf("load with a panicking snapshot decode: %v", err)
	}
}

// With one store for events and snapshots (memstore.Store, pgstore) loads
// go through its LoadSnapshotAndEvents; every fallback still works.
func TestOneTripLoadFallbacks(t *testing.T) {
	st := memstore.New()
	r, err := eventsource.NewRepository[exampledomain.Account](st, exampledomain.NewRegistry(), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 5}))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	a := r.New(uuid.New())
	_ = a.Open("one trip", 10)
	for range 7 {
		_ = a.Deposit(1)
	}
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	_ = a.Deposit(2)
	_ = r.Save(ctx, a)
	check := func(name string, wantFrom bool, wantReplayed int64) {
		t.Helper()
		got, err := r.Load(ctx, a.ID())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		from, n := got.LoadedFromSnapshot()
		if got.State() != a.State() || got.Version() != 9 || from != wantFrom || n != wantReplayed {
			t.Fatalf("%s: v%d %+v from=%v replayed=%d; want v9 %+v from=%v replayed=%d", name, got.Version(), got.State(), from, n, a.State(), wantFrom, wantReplayed)
		}
	}
	check("snapshot at v8", true, 1)
	s, _ := st.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	st.SnapshotStore.Clear()
	bad := *s
	bad.State = []byte(`{"balance":"lots"}`)
	_, _ = st.SaveSnapshot(ctx, bad)
	check("undecodable state", false, 9)
	st.SnapshotStore.Clear()
	ahead := *s
	ahead.Version = 50
	_, _ = st.SaveSnapshot(ctx, ahead)
	check("ahead of stream", false, 9)
	st.SnapshotStore.Clear()
	other := *s
	other.SchemaVersion = 3
	_, _ = st.SaveSnapshot(ctx, other)
	check("other schema", false, 9)
	st.SnapshotStore.Clear()
	check("no snapshot", false, 9)
	if _, err := r.Load(ctx, uuid.New()); !errors.Is(err, eventsource.ErrAggregateNotFound) {
		t.Fatalf("missing aggregate: %v", err)
	}
}

// failingLoader is a combined store whose one-round-trip read fails (a
// fault a real store cannot be made to produce on demand).
type failingLoader struct{ *memstore.Store }

func (failingLoader) LoadSnapshotAndEvents(context.Context, string, uuid.UUID, int) (*eventsource.Snapshot, iter.Seq2[eventsource.RecordedEvent, error], error) {
	return nil, nil, errInjected
}

// A failed LoadSnapshotAndEvents is a snapshot store error: the load
// logs it, counts a store_error fallback and replays every event.
func TestLoadSnapshotAndEventsFailureReplays(t *testing.T) {
	h := newHarness(t)
	st := failingLoader{memstore.New()}
	r, err := eventsource.NewRepository[exampledomain.Account](st, h.reg, append(h.opts,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 5}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	a := openAccount(t, r, 6)
	_ = a.Deposit(1)
	_ = r.Save(ctx, a)
	if s, _ := st.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); s == nil || s.Version != 6 {
		t.Fatalf("stored snapshot %+v, want v6", s)
	}
	got, err := r.Load(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if from, n := got.LoadedFromSnapshot(); from || n != 7 || got.State() != a.State() {
		t.Fatalf("from=%v replayed=%d %+v; want a full replay of 7", from, n, got.State())
	}
	if !strings.Contains(h.logs.String(), "snapshot and events read failed") {
		t.Fatalf("fallback not logged:\n%s", h.logs.String())
	}
	if n := h.counter("evsnap.snapshot.fallbacks", telemetrykeys.AttrReason.String(telemetrykeys.FallbackStoreError)); n != 1 {
		t.Fatalf("store_error fallbacks = %d, want 1", n)
	}
}

// LoadFrom is observed like Load: span and metrics.
func TestLoadFromRecordsMetrics(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(h.snaps, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
	a := openAccount(t, r, 4)
	if _, err := r.LoadFrom(ctx, a.ID(), nil); err != nil {
		t.Fatal(err)
	}
	if got := h.counter("evsnap.load.events_replayed"); got != 4 {
		t.Fatalf("events replayed metric after LoadFrom = %d, want 4", got)
	}
	if _, err := r.LoadFrom(ctx, uuid.Nil, nil); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("LoadFrom(nil id): %v", err)
	}
}

// Many goroutines saving through one repository, several on the same
// aggregate, in background mode: conflicts are the only errors, every
// committed event is there once, and snapshots stay loadable (run with
// -race).
func TestConcurrentCallersOneRepository(t *testing.T) {
	h := newHarness(t)
	st := memstore.New()
	r, err := eventsource.NewRepository[exampledomain.Account](st, h.reg, append(h.opts,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 3}), eventsource.WithSnapshotMode(eventsource.ModeBackground))...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	ids := []uuid.UUID{openAccount(t, r, 1).ID(), openAccount(t, r, 1).ID()}
	var wg sync.WaitGroup
	var committed [2]atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				k := (g + i) % 2
				a, err := r.Load(ctx, ids[k])
				if err != nil {
					t.Error(err)
					return
				}
				_ = a.Deposit(1)
				switch err := r.Save(ctx, a); {
				case err == nil:
					committed[k].Add(1)
				case !errors.Is(err, eventsource.ErrConcurrencyConflict):
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	for k, id := range ids {
		a, err := r.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 + committed[k].Load(); a.Version() != want || a.State().TransactionCount != int(want-1) {
			t.Fatalf("aggregate %d at v%d with %d deposits, want v%d", k, a.Version(), a.State().TransactionCount, want)
		}
	}
}

// Split refuses a nil half at once, naming it, rather than at the first
// load or save.
func TestSplitRefusesNil(t *testing.T) {
	for name, split := range map[string]func(){
		"event store":    func() { eventsource.Split(nil, memstore.NewSnapshotStore()) },
		"snapshot store": func() { eventsource.Split(memstore.NewEventStore(), nil) },
	} {
		func() {
			defer func() {
				if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "nil "+name) {
					t.Errorf("Split with a nil %s: recovered %v, want a panic naming it", name, p)
				}
			}()
			split()
		}()
	}
}

// The events a save appends have time-ordered ids (UUIDv7) that carry the
// millisecond they were raised in, the event's OccurredAt.
func TestEventIDsAreTimeOrdered(t *testing.T) {
	h := newHarness(t)
	r := h.accounts(nil)
	a := openAccount(t, r, 20)
	var prev eventsource.RecordedEvent
	for rec, err := range h.events.ReadEvents(ctx, "Account", a.ID(), 0) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.ID.Version() != 7 {
			t.Fatalf("v%d's id %s is a version %d UUID, want 7", rec.Version, rec.ID, rec.ID.Version())
		}
		if sec, nsec := rec.ID.Time().UnixTime(); time.Unix(sec, nsec).UnixMilli() != rec.OccurredAt.UnixMilli() {
			t.Fatalf("v%d's id %s carries %v, not the millisecond it occurred at, %v", rec.Version, rec.ID, time.Unix(sec, nsec).UTC(), rec.OccurredAt)
		}
		if rec.Version > 1 && rec.OccurredAt.After(prev.OccurredAt) && bytes.Compare(rec.ID[:], prev.ID[:]) <= 0 {
			t.Fatalf("v%d's id %s, raised after v%d's, sorts before its %s", rec.Version, rec.ID, prev.Version, prev.ID)
		}
		prev = rec
	}
}
