package pgstore_test

import (
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storetest"
)

// The suites name every aggregate with fresh ids and types, so each runs
// against one shared store (one schema) per top-level test.

func TestEventStoreConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.TestEventStore(t, func(*testing.T) eventsource.EventStore { return st })
}

func TestSnapshotStoreConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.TestSnapshotStore(t, func(*testing.T) eventsource.SnapshotStore { return st })
}

func TestAggregateListerConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.TestAggregateLister(t, func(*testing.T) storetest.Backend { return st })
}

func TestSnapshotLoaderConformance(t *testing.T) {
	st := newStore(t)
	storetest.TestSnapshotLoader(t, func(t *testing.T) storetest.LoaderBackend { return st })
}

func TestSnapshotBatchSaverConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.TestSnapshotBatchSaver(t, func(*testing.T) storetest.BatchSnapshotStore { return st })
}

func TestSnapshotBatchGetterConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.TestSnapshotBatchGetter(t, func(*testing.T) storetest.SnapshotGetterStore { return st })
}

func TestStaleSnapshotsConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.TestStaleSnapshots(t, func(*testing.T) storetest.RepositoryBackend { return st })
}
