package storetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// Two releases of one aggregate type, as a rolling deploy runs them: the
// same AggregateType and events, schema versions 1 and 2, and state
// encoded differently (v2 keeps cents and counts the deposits).

type ledgerDeposited struct {
	Amount int `json:"amount"`
}

func (ledgerDeposited) EventType() string { return "storetest.LedgerDeposited" }

const ledgerType = "storetest.Ledger"

type ledgerStateV1 struct {
	Balance int `json:"balance"`
}

func (s ledgerStateV1) Apply(e eventsource.Event) ledgerStateV1 {
	if d, ok := e.(ledgerDeposited); ok {
		s.Balance += d.Amount
	}
	return s
}

type ledgerV1 struct {
	eventsource.Root[ledgerStateV1]
}

func (*ledgerV1) AggregateType() string { return ledgerType }
func (*ledgerV1) SchemaVersion() int    { return 1 }

type ledgerStateV2 struct {
	Cents    int `json:"cents"`
	Deposits int `json:"deposits"`
}

func (s ledgerStateV2) Apply(e eventsource.Event) ledgerStateV2 {
	if d, ok := e.(ledgerDeposited); ok {
		s.Cents += 100 * d.Amount
		s.Deposits++
	}
	return s
}

type ledgerV2 struct {
	eventsource.Root[ledgerStateV2]
}

func (*ledgerV2) AggregateType() string { return ledgerType }
func (*ledgerV2) SchemaVersion() int    { return 2 }

// rowWatch is a store that reads back the row of every snapshot it
// writes and records any row (aggregate and schema version) that ever
// holds a lower version than it held before.
type rowWatch struct {
	eventsource.Store
	mu          sync.Mutex
	highest     map[string]int64
	regressions []string
}

func (w *rowWatch) SaveSnapshot(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	stored, err := w.Store.SaveSnapshot(ctx, s)
	if err != nil {
		return stored, err
	}
	cur, err := w.Store.GetSnapshot(ctx, s.AggregateType, s.AggregateID, s.SchemaVersion)
	if err != nil {
		return stored, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	key := fmt.Sprintf("%s schema %d", s.AggregateID, s.SchemaVersion)
	v := int64(0)
	if cur != nil {
		v = cur.Version
	}
	if v < w.highest[key] {
		w.regressions = append(w.regressions, fmt.Sprintf("%s went from v%d to v%d", key, w.highest[key], v))
	}
	w.highest[key] = max(w.highest[key], v)
	return stored, nil
}

// testRollback runs v1 and v2 repositories of one aggregate type side by
// side on the store, both saving (each snapshotting in sync mode when its
// policy says so) and both loading every aggregate, and then rolls v2
// back: only v1 goes on. Every v1 load of an aggregate v1 had snapshotted
// reads v1's snapshot and replays only the events after it (zero full
// replays), every v2 load after v2's first snapshot reads v2's, both give
// the state a replay gives, and no snapshot row ever moves backwards. On
// a store that kept one snapshot per aggregate, whichever schema wrote
// last, v1 would replay in full every aggregate v2 had snapshotted.
func testRollback(t *testing.T, s eventsource.Store) {
	ctx := context.Background()
	watch := &rowWatch{Store: s, highest: map[string]int64{}}
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[ledgerDeposited](reg)
	opts := []eventsource.Option{
		eventsource.WithSnapshotMode(eventsource.ModeSync),
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 4}),
		eventsource.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	v1, err := eventsource.NewRepository[ledgerV1](watch, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer v1.Close(ctx)
	v2, err := eventsource.NewRepository[ledgerV2](watch, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close(ctx)

	ids := make([]uuid.UUID, 6)
	for i := range ids {
		ids[i] = uuid.New()
		a := v1.New(ids[i])
		for range 5 { // due at threshold 4: v1 snapshots every aggregate
			a.Raise(ledgerDeposited{Amount: 1})
		}
		if err := v1.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	var v1Full, v2Full, v2FromSnapshot int
	loadV1 := func(id uuid.UUID, deposit bool) {
		t.Helper()
		a, err := v1.Load(ctx, id)
		if err != nil {
			t.Fatalf("v1 load: %v", err)
		}
		if from, _ := a.LoadedFromSnapshot(); !from {
			v1Full++
		}
		if int64(a.State().Balance) != a.Version() {
			t.Fatalf("v1 load of %s at v%d gives balance %d, a replay %d", id, a.Version(), a.State().Balance, a.Version())
		}
		if deposit {
			a.Raise(ledgerDeposited{Amount: 1})
			if err := v1.Save(ctx, a); err != nil {
				t.Fatalf("v1 save: %v", err)
			}
		}
	}
	// Side by side: each round, v1 or v2 (alternately per aggregate) loads
	// and saves two deposits, and the other loads.
	for round := range 8 {
		for i, id := range ids {
			if (i+round)%2 == 0 {
				loadV1(id, true)
				loadV1(id, true)
			}
			b, err := v2.Load(ctx, id)
			if err != nil {
				t.Fatalf("v2 load: %v", err)
			}
			if from, _ := b.LoadedFromSnapshot(); from {
				v2FromSnapshot++
			} else {
				v2Full++
			}
			if b.State().Cents != 100*int(b.Version()) || int64(b.State().Deposits) != b.Version() {
				t.Fatalf("v2 load of %s at v%d gives %+v, a replay {%d %d}", id, b.Version(), b.State(), 100*b.Version(), b.Version())
			}
			if (i+round)%2 == 1 {
				b.Raise(ledgerDeposited{Amount: 1})
				b.Raise(ledgerDeposited{Amount: 1})
				if err := v2.Save(ctx, b); err != nil {
					t.Fatalf("v2 save: %v", err)
				}
			}
		}
	}
	if v1Full != 0 {
		t.Errorf("while v2 ran beside it, %d v1 loads replayed every event; want 0 (v1 had snapshotted every aggregate)", v1Full)
	}
	// v2 replays an aggregate until its first save of it takes v2's first
	// snapshot: at most two loads, the one of the round before and the
	// one of that save.
	if v2FromSnapshot == 0 || v2Full > 2*len(ids) {
		t.Errorf("v2 loads: %d from its snapshots, %d full replays; want at most two full replays per aggregate (until its first snapshot)", v2FromSnapshot, v2Full)
	}
	for _, id := range ids {
		if got, err := s.GetSnapshot(ctx, ledgerType, id, 2); err != nil || got == nil {
			t.Fatalf("no v2 snapshot of %s after the side-by-side rounds: %v", id, err)
		}
	}
	// v2 is rolled back: only v1 loads and saves.
	v1Full = 0
	for range 3 {
		for _, id := range ids {
			loadV1(id, true)
		}
	}
	if v1Full != 0 {
		t.Errorf("after v2 was rolled back, %d v1 loads replayed every event; want 0 (v1 had snapshotted every aggregate)", v1Full)
	}
	if n := len(watch.regressions); n > 0 {
		t.Errorf("snapshot rows moved backwards %d times, first: %v", n, watch.regressions[:min(n, 3)])
	}
}
