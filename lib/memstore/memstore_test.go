package memstore_test

import (
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventsource.Store { return memstore.New() })
}

// The two halves stand alone: joined by eventsource.Split, a load reads
// the snapshot and then the events, and listing is unsupported.
func TestSplitConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventsource.Store {
		return eventsource.Split(memstore.NewEventStore(), memstore.NewSnapshotStore())
	})
}

func TestCountAndClear(t *testing.T) {
	s := memstore.New()
	if s.EventStore.Count() != 0 || s.SnapshotStore.Count() != 0 {
		t.Fatal("new store not empty")
	}
	storetest.Run(t, func(t *testing.T) eventsource.Store { return s })
	if s.EventStore.Count() == 0 || s.SnapshotStore.Count() == 0 {
		t.Fatalf("counts after the suite: %d events, %d snapshots", s.EventStore.Count(), s.SnapshotStore.Count())
	}
	s.Clear()
	if s.EventStore.Count() != 0 || s.SnapshotStore.Count() != 0 {
		t.Fatalf("counts after Clear: %d events, %d snapshots", s.EventStore.Count(), s.SnapshotStore.Count())
	}
}
