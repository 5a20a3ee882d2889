package pgstore_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/storetest"
)

// The checks name every aggregate with fresh ids and types, so they run
// against one shared store (one schema).
func TestConformance(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	storetest.Run(t, func(*testing.T) eventsource.Store { return st })
}

// WithKeptSchemaVersions keeps that many schema versions per aggregate (a
// store per count, on its own schema); an invalid count is refused by New,
// naming it.
func TestKeptSchemaVersions(t *testing.T) {
	t.Parallel()
	for _, kept := range []int{1, 3} {
		t.Run(fmt.Sprint(kept), func(t *testing.T) {
			st := newStore(t, pgstore.WithKeptSchemaVersions(kept))
			storetest.RunKeptSchemaVersions(t, kept, func(*testing.T) eventsource.Store { return st })
		})
	}
	for _, bad := range []int{0, -1} {
		_, err := pgstore.New(testPool(t), pgstore.WithKeptSchemaVersions(bad))
		if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), fmt.Sprintf("kept schema versions %d", bad)) {
			t.Errorf("New(WithKeptSchemaVersions(%d)) = %v, want an error matching ErrInvalidOption naming it", bad, err)
		}
	}
}
