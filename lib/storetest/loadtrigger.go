package storetest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// readerAccount is staleAccount under a type of its own, which the load
// trigger cases prune whole.
type readerAccount struct{ eventsource.Root[staleState] }

const readerAccountType = "StoretestReader"

func (*readerAccount) AggregateType() string { return readerAccountType }
func (*readerAccount) SchemaVersion() int    { return 1 }

type readerRepo = eventsource.Repository[readerAccount, *readerAccount]

// loadTriggerAt is the load trigger of the cases: a load that replays at
// least this many events asks for a snapshot.
const loadTriggerAt = 50

// runLoadTrigger runs the repository-level cases of the load trigger
// (eventsource.WithLoadTrigger) in the modes that take the snapshot in
// process, sync and background, each with the repository on the backend
// and on eventsource.Split of the backend with itself: an aggregate whose
// snapshots were pruned heals from loads alone, and so does one whose
// snapshot is far behind; one only a little behind is left as it is.
func runLoadTrigger(t *testing.T, newBackend factory) {
	for _, mode := range []eventsource.SnapshotMode{eventsource.ModeSync, eventsource.ModeBackground} {
		for _, split := range []string{"OneRoundTrip", "Separate"} {
			t.Run(string(mode)+"/"+split, func(t *testing.T) {
				b := newBackend(t)
				var store eventsource.Store = b
				if split == "Separate" {
					store = eventsource.Split(b, b)
				}
				newRepo := func(opts ...eventsource.Option) *readerRepo {
					t.Helper()
					reg := eventsource.NewRegistry()
					eventsource.MustRegister[staleDeposited](reg)
					r, err := eventsource.NewRepository[readerAccount](store, reg,
						append([]eventsource.Option{eventsource.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = r.Close(context.Background()) })
					return r
				}
				// writer snapshots every 100 events, as the worker or a
				// sync repository would; unsnapshotted appends without.
				writer := newRepo(eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
				unsnapshotted := newRepo(eventsource.WithSnapshotMode(eventsource.ModeOff))
				reader := newRepo(eventsource.WithSnapshotMode(mode), eventsource.WithLoadTrigger(loadTriggerAt))
				t.Run("PrunedHealsFromReads", func(t *testing.T) {
					testPrunedHealsFromReads(t, b, writer, reader)
				})
				t.Run("FarBehindHeals", func(t *testing.T) {
					testFarBehindHeals(t, b, writer, unsnapshotted, reader)
				})
			})
		}
	}
}

// readerDeposit saves deposits to id up to version to, in saves of at
// most 10 events.
func readerDeposit(t *testing.T, r *readerRepo, id uuid.UUID, to int64) {
	t.Helper()
	ctx := context.Background()
	a, err := r.Load(ctx, id)
	if errors.Is(err, eventsource.ErrAggregateNotFound) {
		a = r.New(id)
	} else if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for a.Version() < to {
		for range min(10, to-a.Version()) {
			a.Raise(staleDeposited{Amount: 1})
		}
		if err := r.Save(ctx, a); err != nil {
			t.Fatalf("Save to v%d: %v", a.Version(), err)
		}
	}
}

// readerLoad loads id through r, waits for the snapshots r queued, and
// checks the state is the replay's; it returns how many events the load
// replayed.
func readerLoad(t *testing.T, r *readerRepo, id uuid.UUID) int64 {
	t.Helper()
	ctx := context.Background()
	a, err := r.Load(ctx, id)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
		t.Fatalf("AwaitPendingSnapshots: %v", err)
	}
	if int64(a.State().Balance) != a.Version() {
		t.Fatalf("load at v%d gives balance %d; a replay gives %d", a.Version(), a.State().Balance, a.Version())
	}
	_, replayed := a.LoadedFromSnapshot()
	return replayed
}

// snapshotVersion returns the version of id's stored snapshot, 0 for none.
func snapshotVersion(t *testing.T, s eventsource.Store, id uuid.UUID) int64 {
	t.Helper()
	snap, err := s.GetSnapshot(context.Background(), readerAccountType, id, 1) // readerAccount is schema version 1
	if err != nil {
		t.Fatalf("GetSnapshot: %v", err)
	}
	if snap == nil {
		return 0
	}
	return snap.Version
}

// testPrunedHealsFromReads saves 300 events with a snapshot every 100,
// prunes every snapshot of the type, and then only loads: the first load
// replays all 300 and asks; the snapshot is back at the head, and the
// next load replays fewer than the trigger's count.
func testPrunedHealsFromReads(t *testing.T, s eventsource.Store, writer, reader *readerRepo) {
	id := uuid.New()
	readerDeposit(t, writer, id, 300)
	if v := snapshotVersion(t, s, id); v != 300 {
		t.Fatalf("snapshot after 300 events saved with a threshold of 100 = v%d, want v300", v)
	}
	n, err := s.DeleteSnapshotsByType(context.Background(), readerAccountType, 0)
	if err != nil || n < 1 {
		t.Fatalf("DeleteSnapshotsByType = %d, %v; want at least this aggregate's", n, err)
	}
	if v := snapshotVersion(t, s, id); v != 0 {
		t.Fatalf("snapshot v%d survived pruning", v)
	}
	loadThenSnapshot(t, s, reader, id, 300, 300)
	if replayed := readerLoad(t, reader, id); replayed >= loadTriggerAt {
		t.Fatalf("the load after the heal replayed %d, want fewer than %d", replayed, loadTriggerAt)
	}
}

// testFarBehindHeals: an aggregate whose snapshot is 80 events behind
// (its snapshotter missed them) heals on its first load; one 20 behind,
// below the trigger's count, is left as it is.
func testFarBehindHeals(t *testing.T, s eventsource.Store, writer, unsnapshotted, reader *readerRepo) {
	far, near := uuid.New(), uuid.New()
	readerDeposit(t, writer, far, 100)
	readerDeposit(t, writer, near, 100)
	readerDeposit(t, unsnapshotted, far, 180)
	readerDeposit(t, unsnapshotted, near, 120)
	loadThenSnapshot(t, s, reader, far, 80, 180)
	if replayed := readerLoad(t, reader, far); replayed != 0 {
		t.Fatalf("the load after the heal replayed %d, want 0", replayed)
	}
	loadThenSnapshot(t, s, reader, near, 20, 100) // below the trigger: left as it is
}

// loadThenSnapshot loads id through reader, checks the load replayed
// replayed events, and that id's stored snapshot is then at version
// snapshot: the head when the load asked for one, the old one otherwise.
func loadThenSnapshot(t *testing.T, s eventsource.Store, reader *readerRepo, id uuid.UUID, replayed, snapshot int64) {
	t.Helper()
	if got := readerLoad(t, reader, id); got != replayed {
		t.Fatalf("load replayed %d events, want %d", got, replayed)
	}
	if v := snapshotVersion(t, s, id); v != snapshot {
		t.Fatalf("snapshot after a load that replayed %d events (trigger at %d) = v%d, want v%d", replayed, loadTriggerAt, v, snapshot)
	}
}
