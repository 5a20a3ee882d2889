// Package storetest is the conformance suite every [eventsource.Store]
// runs, in the manner of testing/fstest: a backend's test calls [Run] with
// a function that returns a store, and passes only if the store keeps
// every contract written on the eventsource interfaces.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventsource.Store { return mystore.New() })
//	}
//
// The checks name every aggregate with fresh random ids and types, so the
// function may hand out one shared store (one database schema) to every
// check; it may also return a fresh one each time.
package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// Run runs every conformance check against the stores newStore returns,
// each as a subtest: the event store methods, the snapshot store methods
// (single and batched reads and writes, a row per schema version within
// the kept window, stale deletes, the schema version range),
// LoadSnapshotAndEvents, ListAggregates, the optional
// eventsource.AggregateCounter and eventsource.SnapshotPruner of a store
// that has them, and repositories loading and
// saving through the store (stale snapshots, event types the loading
// registry does not know, two schema versions of an aggregate side by
// side and a rollback, snapshots a load trigger takes, and concurrent
// loads and saves of hot aggregates checked for linearizability with the
// porcupine checker). The stores must keep
// storekit.DefaultKeptSchemaVersions schema versions per aggregate (the
// default); [RunKeptSchemaVersions] checks a store's option to keep
// another number.
//
// A store that is an [eventsource.SweepStore] is checked for its change
// order, its scans and its sweep marks too.
//
// A store whose ListAggregates yields an error matching
// [errors.ErrUnsupported] (one made by [eventsource.Split]) is checked to
// say so consistently instead of for its listings.
func Run(t *testing.T, newStore func(t *testing.T) eventsource.Store) {
	t.Helper()
	if newStore == nil {
		t.Fatal("storetest.Run: nil store function")
	}
	t.Run("EventStore", func(t *testing.T) { runEventStore(t, newStore) })
	t.Run("SnapshotStore", func(t *testing.T) { runSnapshotStore(t, newStore) })
	t.Run("SaveSnapshots", func(t *testing.T) { runSaveSnapshots(t, newStore) })
	t.Run("GetSnapshots", func(t *testing.T) { runGetSnapshots(t, newStore) })
	t.Run("SchemaVersionRows", func(t *testing.T) { runSchemaRows(t, newStore) })
	t.Run("LoadSnapshotAndEvents", func(t *testing.T) { runLoader(t, newStore) })
	t.Run("ListAggregates", func(t *testing.T) {
		if cannotList(t, newStore(t)) {
			t.Run("Unsupported", func(t *testing.T) { runCannotList(t, newStore) })
			return
		}
		runLister(t, newStore)
	})
	t.Run("Admin", func(t *testing.T) { runAdmin(t, newStore) })
	if _, ok := newStore(t).(eventsource.SweepStore); ok {
		t.Run("SweepStore", func(t *testing.T) { runSweepStore(t, newStore) })
	}
	t.Run("Repository", func(t *testing.T) {
		t.Run("UnknownEventTypeOnLoad", func(t *testing.T) { testUnknownEventTypeOnLoad(t, newStore(t)) })
		t.Run("StaleSnapshots", func(t *testing.T) { runStale(t, newStore) })
		t.Run("LoadTrigger", func(t *testing.T) { runLoadTrigger(t, newStore) })
		t.Run("Linearizable", func(t *testing.T) { testLinearizable(t, newStore(t)) })
		t.Run("TwoSchemaVersionsAndARollback", func(t *testing.T) { testRollback(t, newStore(t)) })
	})
}

// cannotList reports whether s's ListAggregates says it cannot list: its
// first yield is an error matching errors.ErrUnsupported.
func cannotList(t *testing.T, s eventsource.Store) bool {
	t.Helper()
	for _, err := range s.ListAggregates(context.Background(), uniqueType("CanList"), eventsource.ListOptions{}) {
		return errors.Is(err, errors.ErrUnsupported)
	}
	return false
}

// runCannotList checks a store that cannot list says so every time:
// whatever the type and options, and with aggregates and snapshots
// stored, ListAggregates yields exactly one error matching
// errors.ErrUnsupported and no aggregate, and stops when the caller does.
func runCannotList(t *testing.T, newStore factory) {
	s := newStore(t)
	typ, id := uniqueType("CannotList"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 3))
	mustSave(t, s, snap(typ, id, 2, 1), true)
	for _, c := range []struct {
		typ  string
		opts eventsource.ListOptions
	}{
		{typ, eventsource.ListOptions{}},
		{typ, eventsource.ListOptions{MinBehind: 1, MostBehindFirst: true, Limit: 10}},
		{typ, eventsource.ListOptions{AfterID: id, Limit: 1}},
		{uniqueType("CannotListOther"), eventsource.ListOptions{}},
	} {
		var infos, errs int
		for info, err := range s.ListAggregates(context.Background(), c.typ, c.opts) {
			if err != nil {
				errs++
				if !errors.Is(err, errors.ErrUnsupported) {
					t.Errorf("ListAggregates(%s, %+v) yielded %v, want an error matching errors.ErrUnsupported", c.typ, c.opts, err)
				}
				continue
			}
			infos++
			t.Errorf("ListAggregates(%s, %+v) yielded %+v from a store that cannot list", c.typ, c.opts, info)
		}
		if errs != 1 || infos != 0 {
			t.Errorf("ListAggregates(%s, %+v) yielded %d errors and %d aggregates, want exactly one error", c.typ, c.opts, errs, infos)
		}
	}
	for range s.ListAggregates(context.Background(), typ, eventsource.ListOptions{}) {
		break // the caller stops at the error: the store must not yield again
	}
}
