package memstore_test

import (
	"errors"
	"fmt"
	"strings"
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

// WithKeptSchemaVersions keeps that many schema versions per aggregate;
// an invalid count panics with an error naming it.
func TestKeptSchemaVersions(t *testing.T) {
	for _, kept := range []int{1, 3} {
		t.Run(fmt.Sprint(kept), func(t *testing.T) {
			storetest.RunKeptSchemaVersions(t, kept, func(*testing.T) eventsource.Store { return memstore.New(memstore.WithKeptSchemaVersions(kept)) })
		})
	}
	for _, bad := range []int{0, -1} {
		func() {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), fmt.Sprintf("kept schema versions %d", bad)) {
					t.Errorf("New(WithKeptSchemaVersions(%d)) panicked with %v, want an error matching ErrInvalidOption naming it", bad, err)
				}
			}()
			memstore.New(memstore.WithKeptSchemaVersions(bad))
		}()
	}
}
