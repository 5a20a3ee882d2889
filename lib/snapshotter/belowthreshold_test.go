package snapshotter_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// Notices of aggregates whose head is below the threshold are not due
// whatever their snapshot: the worker decides them without reading
// anything. Once a save takes the head past the threshold, the next
// notice is decided on the stored snapshot and the aggregate snapshotted.
func TestWorkerDecidesBelowThresholdWithoutReads(t *testing.T) {
	forEachSetup(t, testWorkerDecidesBelowThresholdWithoutReads)
}

func testWorkerDecidesBelowThresholdWithoutReads(t *testing.T, e *env) {
	ids := make([]uuid.UUID, 20)
	for i := range ids {
		ids[i] = uuid.New()
		e.save(ids[i], 2)
		e.save(ids[i], 2) // head 4, threshold 5
	}
	// Not counted: the app's own loads.
	r0, c0 := e.store.snapReads.Load(), e.store.combinedReads.Load()
	stop := e.start(e.worker(5, nil))
	waitFor(t, 20*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	stop()
	if r, c := e.store.snapReads.Load()-r0, e.store.combinedReads.Load()-c0; r+c != 0 {
		t.Fatalf("%d snapshot reads and %d combined reads for notices below the threshold; want none", r, c)
	}
	for _, id := range ids {
		if v := e.snapshotVersion(id); v != 0 {
			t.Fatalf("%s: snapshot at v%d below the threshold", id, v)
		}
	}
	for _, id := range ids {
		e.save(id, 2) // head 6: due
	}
	r0, c0 = e.store.snapReads.Load(), e.store.combinedReads.Load()
	e.start(e.worker(5, nil))
	waitFor(t, 20*time.Second, "every aggregate snapshotted at its head", e.converged(ids, 5))
	if r, c := e.store.snapReads.Load()-r0, e.store.combinedReads.Load()-c0; r+c < int64(len(ids)) {
		t.Fatalf("%d snapshot reads and %d combined reads for %d due aggregates; want one each at least", r, c, len(ids))
	}
	e.store.checkNoRegressions(t)
}
