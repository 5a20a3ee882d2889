package storetest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/storetest"
	"github.com/google/uuid"
)

// auditStore is a custom store, the shape of one that adds to a backend
// (an audit trail, a hook, a cache): memstore's store, whose Append also
// records what it committed. Every method it does not write is memstore's,
// so it keeps the eventsource.Store contract as long as Append passes the
// result and the error through unchanged.
type auditStore struct {
	*memstore.Store
	mu       sync.Mutex
	trail    []string
	appended int // events on the trail
}

var _ eventsource.Store = (*auditStore)(nil)

// Append implements eventsource.Store.
func (s *auditStore) Append(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) (eventsource.AppendResult, error) {
	res, err := s.Store.Append(ctx, typ, id, expected, events)
	if err == nil {
		s.mu.Lock()
		s.trail = append(s.trail, fmt.Sprintf("%s %s v%d-v%d", typ, id, res.FirstVersion, res.LastVersion))
		s.appended += int(res.LastVersion - res.FirstVersion + 1)
		s.mu.Unlock()
	}
	return res, err
}

// A custom store runs the conformance suite like the backends do: a fresh
// store per check here; one shared store would do as well.
func TestCustomStoreConformance(t *testing.T) {
	var stores []*auditStore
	storetest.Run(t, func(t *testing.T) eventsource.Store {
		s := &auditStore{Store: memstore.New()}
		stores = append(stores, s)
		return s
	})
	// The suite went through the custom Append, and the trail holds
	// exactly the events each store committed.
	if !slices.ContainsFunc(stores, func(s *auditStore) bool { return len(s.trail) > 0 }) {
		t.Fatal("no append reached the audit trail")
	}
	for _, s := range stores {
		if s.appended != s.EventStore.Count() {
			t.Fatalf("the trail has %d events, the store %d", s.appended, s.EventStore.Count())
		}
	}
}
