package memstore_test

import (
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/storetest"
)

func TestEventStoreConformance(t *testing.T) {
	storetest.TestEventStore(t, func(t *testing.T) eventsource.EventStore { return memstore.NewEventStore() })
}

func TestSnapshotStoreConformance(t *testing.T) {
	storetest.TestSnapshotStore(t, func(t *testing.T) eventsource.SnapshotStore { return memstore.NewSnapshotStore() })
}

func TestSnapshotBatchSaverConformance(t *testing.T) {
	storetest.TestSnapshotBatchSaver(t, func(t *testing.T) storetest.BatchSnapshotStore { return memstore.NewSnapshotStore() })
}

func TestSnapshotBatchGetterConformance(t *testing.T) {
	storetest.TestSnapshotBatchGetter(t, func(t *testing.T) storetest.SnapshotGetterStore { return memstore.NewSnapshotStore() })
}

func TestCountAndClear(t *testing.T) {
	es := memstore.NewEventStore()
	ss := memstore.NewSnapshotStore()
	if es.Count() != 0 || ss.Count() != 0 {
		t.Fatal("new stores not empty")
	}
	storetest.TestEventStore(t, func(t *testing.T) eventsource.EventStore { return es })
	storetest.TestSnapshotStore(t, func(t *testing.T) eventsource.SnapshotStore { return ss })
	if es.Count() == 0 || ss.Count() == 0 {
		t.Fatalf("counts after the suites: %d events, %d snapshots", es.Count(), ss.Count())
	}
	es.Clear()
	ss.Clear()
	if es.Count() != 0 || ss.Count() != 0 {
		t.Fatalf("counts after Clear: %d events, %d snapshots", es.Count(), ss.Count())
	}
}

func TestAggregateListerConformance(t *testing.T) {
	storetest.TestAggregateLister(t, func(t *testing.T) storetest.Backend { return memstore.New() })
}

func TestSnapshotLoaderConformance(t *testing.T) {
	storetest.TestSnapshotLoader(t, func(t *testing.T) storetest.LoaderBackend { return memstore.New() })
}

func TestStaleSnapshotsConformance(t *testing.T) {
	storetest.TestStaleSnapshots(t, func(t *testing.T) storetest.RepositoryBackend { return memstore.New() })
}
