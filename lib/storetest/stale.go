package storetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// staleDeposited, staleState and staleAccount are the aggregate the
// repository-level cases load and save: a balance that every event adds
// one to, so after a replay the balance equals the version.
type staleDeposited struct {
	Amount int `json:"amount"`
}

func (staleDeposited) EventType() string { return "StoretestDeposited" }

type staleState struct {
	Balance int `json:"balance"`
}

func (s staleState) Apply(e eventsource.Event) staleState {
	if d, ok := e.(staleDeposited); ok {
		s.Balance += d.Amount
	}
	return s
}

type staleAccount struct{ eventsource.Root[staleState] }

const staleAccountType = "StoretestAccount"

func (*staleAccount) AggregateType() string { return staleAccountType }
func (*staleAccount) SchemaVersion() int    { return 1 }

type staleRepo = eventsource.Repository[staleAccount, *staleAccount]

// runStale runs the repository-level conformance cases of
// snapshots that do not belong to their stream's history (a snapshot
// store restored from a newer backup than the events, or a snapshot left
// over from an aggregate created anew): a load never uses such a
// snapshot, removes it, and the next due save stores one tied to the
// stream. Each case runs with the repository on the backend (reading the
// snapshot and the events with its LoadSnapshotAndEvents) and on
// eventsource.Split of the backend with itself (reading them separately).
func runStale(t *testing.T, newBackend factory) {
	for _, mode := range []string{"OneRoundTrip", "Separate"} {
		t.Run(mode, func(t *testing.T) {
			newRepo := func(t *testing.T, b eventsource.Store, threshold int) *staleRepo {
				t.Helper()
				reg := eventsource.NewRegistry()
				eventsource.MustRegister[staleDeposited](reg)
				var store eventsource.Store = b
				if mode == "Separate" {
					store = eventsource.Split(b, b)
				}
				r, err := eventsource.NewRepository[staleAccount](store, reg,
					eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: threshold}),
					eventsource.WithSnapshotMode(eventsource.ModeSync),
					eventsource.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = r.Close(context.Background()) })
				return r
			}
			t.Run("RestoredAheadOfStream", func(t *testing.T) {
				b := newBackend(t)
				testStaleRestored(t, b, newRepo(t, b, 100))
			})
			t.Run("LeftOverFromEarlierAggregate", func(t *testing.T) {
				b := newBackend(t)
				testStaleLeftOver(t, b, newRepo(t, b, 100))
			})
		})
	}
}

// staleSnapshot is a snapshot of id at version whose event id is in no
// stream's history and whose state no replay gives.
func staleSnapshot(id uuid.UUID, version int64) eventsource.Snapshot {
	return eventsource.Snapshot{
		AggregateID:   id,
		AggregateType: staleAccountType,
		Version:       version,
		SchemaVersion: 1,
		EventID:       uuid.New(),
		State:         []byte(`{"balance": 999}`),
		CreatedAt:     time.Now().UTC().Truncate(time.Microsecond),
	}
}

// depositTo loads id (or starts it when it has no events yet), checks the
// loaded balance equals its version, as a replay gives, and saves deposits
// up to version to.
func depositTo(t *testing.T, r *staleRepo, id uuid.UUID, to int64, isNew bool) {
	t.Helper()
	ctx := context.Background()
	a := r.New(id)
	if !isNew {
		var err error
		if a, err = r.Load(ctx, id); err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got := a.State().Balance; int64(got) != a.Version() {
			fromSnap, _ := a.LoadedFromSnapshot()
			t.Fatalf("load at v%d gives balance %d (from a snapshot: %v); a replay gives %d", a.Version(), got, fromSnap, a.Version())
		}
	}
	for a.Version() < to {
		a.Raise(staleDeposited{Amount: 1})
	}
	if err := r.Save(ctx, a); err != nil {
		t.Fatalf("Save to v%d: %v", to, err)
	}
}

// checkLoad loads id and checks the balance is the replayed one.
func checkLoad(t *testing.T, r *staleRepo, id uuid.UUID, version int64) *staleAccount {
	t.Helper()
	a, err := r.Load(context.Background(), id)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if a.Version() != version || int64(a.State().Balance) != version {
		fromSnap, _ := a.LoadedFromSnapshot()
		t.Fatalf("load gives v%d balance %d (from a snapshot: %v); want v%d balance %d", a.Version(), a.State().Balance, fromSnap, version, version)
	}
	return a
}

// checkTied checks the stored snapshot of id is at version, tied to the
// stream's event there, holds the replayed state, and is used by loads.
func checkTied(t *testing.T, b eventsource.Store, r *staleRepo, id uuid.UUID, version int64) {
	t.Helper()
	ctx := context.Background()
	got, err := b.GetSnapshot(ctx, staleAccountType, id, 1)
	if err != nil {
		t.Fatalf("GetSnapshot: %v", err)
	}
	if got == nil || got.Version != version {
		t.Fatalf("stored snapshot %+v, want one at v%d", got, version)
	}
	evs := ReadAll(t, b, staleAccountType, id, version-1)
	if len(evs) == 0 || evs[0].Version != version || got.EventID != evs[0].ID {
		t.Fatalf("stored snapshot v%d has event id %s, not that of the stream's event at v%d", got.Version, got.EventID, version)
	}
	if want := []byte(fmt.Sprintf(`{"balance": %d}`, version)); !jsonEqual(got.State, want) {
		t.Fatalf("stored snapshot state %s, want %s", got.State, want)
	}
	a := checkLoad(t, r, id, version)
	if fromSnap, _ := a.LoadedFromSnapshot(); !fromSnap {
		t.Fatal("the load did not use the stored snapshot tied to the stream")
	}
}

// testStaleRestored: the events were restored from an older backup than
// the snapshots. The stream holds 1 event and the store a v50 snapshot of
// another history; the stream then grows past v50.
func testStaleRestored(t *testing.T, b eventsource.Store, r *staleRepo) {
	id := uuid.New()
	depositTo(t, r, id, 1, true)
	stale := staleSnapshot(id, 50)
	mustSave(t, b, stale, true)

	checkLoad(t, r, id, 1)
	if got := mustGet(t, b, staleAccountType, id, 1); got != nil {
		t.Fatalf("after a load found it stale, the store still holds the snapshot %+v", got)
	}
	for v := int64(10); v <= 60; v += 10 {
		depositTo(t, r, id, v, false)
		checkLoad(t, r, id, v) // past v50 a stale snapshot would give 999+
	}
	// Due at threshold 100 (the store no longer holds a snapshot).
	depositTo(t, r, id, 100, false)
	checkTied(t, b, r, id, 100)
}

// testStaleLeftOver: a v5 snapshot left over from an earlier aggregate
// with the same id, whose stream is gone, and the aggregate is then
// created anew. The event at v5 exists but is another one.
func testStaleLeftOver(t *testing.T, b eventsource.Store, r *staleRepo) {
	id := uuid.New()
	mustSave(t, b, staleSnapshot(id, 5), true)
	depositTo(t, r, id, 20, true)
	checkLoad(t, r, id, 20)
	if got := mustGet(t, b, staleAccountType, id, 1); got != nil {
		t.Fatalf("after a load found it stale, the store still holds the snapshot %+v", got)
	}
	depositTo(t, r, id, 100, false)
	checkTied(t, b, r, id, 100)
}
