package pgstore_test

import (
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storetest"
)

// The checks name every aggregate with fresh ids and types, so they run
// against one shared store (one schema).
func TestConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.Run(t, func(*testing.T) eventsource.Store { return st })
}
