package memstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/storetest"
	"github.com/google/uuid"
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

// Readers copy stored events without the lock while a writer appends to
// the same stream across its chunks (the first one growing, then new
// ones): under -race, each read is contiguous, its payloads are those of
// their versions, and changing them changes nothing stored.
func TestReadWhileAppending(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewEventStore()
	id := uuid.New()
	payload := func(v int64) []byte { return []byte(fmt.Sprintf(`{"v":%d}`, v)) }
	const events = 3*256 + 10
	done := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				after := int64((n * 37 * (r + 1)) % events)
				want := after + 1
				for rec, err := range s.ReadEvents(ctx, "Account", id, after) {
					if err != nil {
						t.Error(err)
						return
					}
					if rec.Version != want || !bytes.Equal(rec.Payload, payload(want)) {
						t.Errorf("read after v%d: v%d with %s, want v%d with %s", after, rec.Version, rec.Payload, want, payload(want))
						return
					}
					clear(rec.Payload)
					want++
				}
			}
		})
	}
	for v := range int64(events) {
		ev := eventsource.NewEvent{ID: uuid.New(), Type: "Deposited", Payload: payload(v + 1)}
		if _, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), []eventsource.NewEvent{ev}); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	got := storetest.ReadAll(t, s, "Account", id, 0)
	for i, rec := range got {
		if !bytes.Equal(rec.Payload, payload(int64(i+1))) {
			t.Fatalf("stored v%d changed: %s", i+1, rec.Payload)
		}
	}
	if len(got) != events {
		t.Fatalf("%d events stored, want %d", len(got), events)
	}
}
