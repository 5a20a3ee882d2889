package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// runSaveSnapshots checks [eventsource.SnapshotStore.SaveSnapshots]: every rule of SaveSnapshot holds for
// each snapshot of a batch, duplicates within a batch resolve in order, a
// bad snapshot fails the whole batch, and concurrent overlapping batches
// neither regress a snapshot nor deadlock.
func runSaveSnapshots(t *testing.T, newStore factory) {
	t.Run("Empty", func(t *testing.T) { testBatchEmpty(t, newStore(t)) })
	t.Run("InsertAndUpdate", func(t *testing.T) { testBatchInsertUpdate(t, newStore(t)) })
	t.Run("NeverMovesBackwards", func(t *testing.T) { testBatchMonotonic(t, newStore(t)) })
	t.Run("DuplicatesResolveInOrder", func(t *testing.T) { testBatchDuplicates(t, newStore(t)) })
	t.Run("InvalidFailsWholeBatch", func(t *testing.T) { testBatchInvalid(t, newStore(t)) })
	t.Run("SchemaVersionRange", func(t *testing.T) { testBatchSchemaVersionRange(t, newStore(t)) })
	t.Run("CancelledContextWritesNothing", func(t *testing.T) { testBatchCancelled(t, newStore(t)) })
	t.Run("ConcurrentOverlappingBatches", func(t *testing.T) { testBatchConcurrent(t, newStore(t)) })
}

func mustSaveBatch(t *testing.T, s eventsource.SnapshotStore, snaps []eventsource.Snapshot, want []bool) {
	t.Helper()
	stored, err := s.SaveSnapshots(context.Background(), snaps)
	if err != nil {
		t.Fatalf("SaveSnapshots(%d snapshots): %v", len(snaps), err)
	}
	if !slices.Equal(stored, want) {
		t.Fatalf("SaveSnapshots stored = %v, want %v", stored, want)
	}
}

func testBatchEmpty(t *testing.T, s eventsource.SnapshotStore) {
	stored, err := s.SaveSnapshots(context.Background(), nil)
	if err != nil || len(stored) != 0 {
		t.Fatalf("SaveSnapshots(nil) = %v, %v; want no result and no error", stored, err)
	}
}

func testBatchInsertUpdate(t *testing.T, s eventsource.SnapshotStore) {
	typ, other := uniqueType("Batch"), uniqueType("BatchOther")
	old := uuid.New()
	mustSave(t, s, snap(typ, old, 3, 1), true)
	batch := []eventsource.Snapshot{snap(typ, old, 9, 1)}
	want := []bool{true}
	for i := range 40 {
		batch = append(batch, snap(typ, uuid.New(), int64(i+1), 1))
		want = append(want, true)
	}
	// The same id under another type is another aggregate.
	batch = append(batch, snap(other, old, 2, 1))
	want = append(want, true)
	mustSaveBatch(t, s, batch, want)
	for _, sn := range batch {
		checkStored(t, s, sn.AggregateType, sn.AggregateID, sn.Version, sn.SchemaVersion)
		if got := mustGet(t, s, sn.AggregateType, sn.AggregateID, sn.SchemaVersion); got.EventID != sn.EventID {
			t.Fatalf("batch-saved snapshot has event id %s, want %s", got.EventID, sn.EventID)
		}
	}
}

func testBatchMonotonic(t *testing.T, s eventsource.SnapshotStore) {
	typ := uniqueType("BatchMono")
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	mustSave(t, s, snap(typ, a, 50, 2), true)
	mustSave(t, s, snap(typ, b, 50, 2), true)
	mustSave(t, s, snap(typ, c, 50, 2), true)
	mustSave(t, s, snap(typ, b, 90, 1), true)
	mustSaveBatch(t, s, []eventsource.Snapshot{
		snap(typ, a, 49, 2), // lower version
		snap(typ, b, 80, 1), // lower version of the older schema's row
		snap(typ, c, 50, 2), // the same again: rewritten (repair in place)
		snap(typ, d, 1, 1),  // new
		snap(typ, c, 10, 1), // the older schema's own row, at any version
	}, []bool{false, false, true, true, true})
	checkStored(t, s, typ, a, 50, 2)
	checkStored(t, s, typ, b, 50, 2)
	checkStored(t, s, typ, b, 90, 1)
	checkStored(t, s, typ, c, 50, 2)
	checkStored(t, s, typ, c, 10, 1)
	checkStored(t, s, typ, d, 1, 1)
}

func testBatchDuplicates(t *testing.T, s eventsource.SnapshotStore) {
	typ := uniqueType("BatchDup")
	a, b := uuid.New(), uuid.New()
	mustSaveBatch(t, s, []eventsource.Snapshot{
		snap(typ, a, 3, 1),
		snap(typ, a, 7, 1), // supersedes v3
		snap(typ, b, 7, 1),
		snap(typ, a, 5, 1), // lower than v7: refused
		snap(typ, b, 3, 2), // another schema's row: written
		snap(typ, b, 2, 2), // lower than that: refused
	}, []bool{false, true, true, false, true, false})
	checkStored(t, s, typ, a, 7, 1)
	checkStored(t, s, typ, b, 7, 1)
	checkStored(t, s, typ, b, 3, 2)
	// Against what is stored: the batch's winner is still checked.
	mustSaveBatch(t, s, []eventsource.Snapshot{snap(typ, a, 6, 1), snap(typ, a, 4, 1), snap(typ, a, 6, 2)}, []bool{false, false, true})
	checkStored(t, s, typ, a, 7, 1)
	checkStored(t, s, typ, a, 6, 2)
}

func testBatchInvalid(t *testing.T, s eventsource.SnapshotStore) {
	typ := uniqueType("BatchBad")
	good, bad := uuid.New(), uuid.New()
	notJSON := snap(typ, bad, 2, 1)
	notJSON.State = []byte(`{"balance": 1`)
	noEventID := snap(typ, bad, 2, 1)
	noEventID.EventID = uuid.Nil
	for name, b := range map[string]eventsource.Snapshot{
		"version 0":      snap(typ, bad, 0, 1),
		"state not JSON": notJSON,
		"nil id":         snap(typ, uuid.Nil, 1, 1),
		"nil event id":   noEventID,
	} {
		stored, err := s.SaveSnapshots(context.Background(), []eventsource.Snapshot{snap(typ, good, 1, 1), b})
		if !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("%s: SaveSnapshots error = %v, want ErrInvalidArgument", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "snapshot 1") {
			t.Errorf("%s: error %q does not name the bad snapshot's index (1)", name, err)
		}
		if stored != nil {
			t.Errorf("%s: stored = %v on error, want nil", name, stored)
		}
	}
	if got := mustGet(t, s, typ, good, 1); got != nil {
		t.Fatalf("a failed batch wrote its valid snapshot: %+v", got)
	}
}

func testBatchCancelled(t *testing.T, s eventsource.SnapshotStore) {
	typ, id := uniqueType("BatchCancel"), uuid.New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.SaveSnapshots(ctx, []eventsource.Snapshot{snap(typ, id, 1, 1)}); err == nil {
		t.Fatal("SaveSnapshots with a cancelled context: no error")
	}
	if got := mustGet(t, s, typ, id, 1); got != nil {
		t.Fatalf("a cancelled batch wrote a snapshot: %+v", got)
	}
}

// testBatchConcurrent races writers whose batches cover the same
// aggregates in different orders: a store that locks rows in batch order
// would deadlock (PostgreSQL reports it as an error); none may regress.
func testBatchConcurrent(t *testing.T, s eventsource.SnapshotStore) {
	typ := uniqueType("BatchRace")
	ids := make([]uuid.UUID, 12)
	for i := range ids {
		ids[i] = uuid.New()
	}
	const writers, rounds = 4, 15
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for round := range rounds {
				order := r.Perm(len(ids))
				batch := make([]eventsource.Snapshot, len(order))
				for i, j := range order {
					batch[i] = snap(typ, ids[j], int64(round*writers+w+1), 1)
				}
				if _, err := s.SaveSnapshots(context.Background(), batch); err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, round, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, id := range ids {
		checkStored(t, s, typ, id, rounds*writers, 1)
	}
}
