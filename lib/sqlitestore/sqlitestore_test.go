package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/evsnap/evsnap/lib/storetest"
)

// quiet keeps the store's migration logs out of test output.
var quiet = sqlitestore.WithLogger(slog.New(slog.DiscardHandler))

// openStore opens and migrates a store at path (a file or ":memory:") and
// closes it when the test ends.
func openStore(tb testing.TB, path string, opts ...sqlitestore.Option) *sqlitestore.Store {
	tb.Helper()
	s, err := sqlitestore.Open(context.Background(), path, append([]sqlitestore.Option{quiet}, opts...)...)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close(%s): %v", path, err)
		}
	})
	if err := s.Migrate(context.Background()); err != nil {
		tb.Fatalf("Migrate(%s): %v", path, err)
	}
	return s
}

func tempDB(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), "evsnap.db")
}

// backends are the ways the conformance suites get a store: a fresh file or
// in-memory store per subtest, and one file store shared by every subtest
// (the suites name everything uniquely, as a real database would be
// shared).
func backends(t *testing.T) map[string]func(t *testing.T) *sqlitestore.Store {
	shared := openStore(t, tempDB(t))
	return map[string]func(t *testing.T) *sqlitestore.Store{
		"File":       func(t *testing.T) *sqlitestore.Store { return openStore(t, tempDB(t)) },
		"Memory":     func(t *testing.T) *sqlitestore.Store { return openStore(t, sqlitestore.MemoryPath) },
		"SharedFile": func(*testing.T) *sqlitestore.Store { return shared },
	}
}

func TestConformance(t *testing.T) {
	for name, newStore := range backends(t) {
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) eventsource.Store { return newStore(t) })
		})
	}
}

// Snapshots in SQLite, events elsewhere (here in memory), joined by
// eventsource.Split.
func TestSplitConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventsource.Store {
		return eventsource.Split(memstore.NewEventStore(), openStore(t, tempDB(t)))
	})
}

// WithKeptSchemaVersions keeps that many schema versions per aggregate;
// an invalid count is refused by Open, naming it.
func TestKeptSchemaVersions(t *testing.T) {
	for _, kept := range []int{1, 3} {
		t.Run(fmt.Sprint(kept), func(t *testing.T) {
			storetest.RunKeptSchemaVersions(t, kept, func(t *testing.T) eventsource.Store {
				return openStore(t, tempDB(t), sqlitestore.WithKeptSchemaVersions(kept))
			})
		})
	}
	for _, bad := range []int{0, -1} {
		_, err := sqlitestore.Open(context.Background(), tempDB(t), sqlitestore.WithKeptSchemaVersions(bad))
		if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), fmt.Sprintf("kept schema versions %d", bad)) {
			t.Errorf("Open(WithKeptSchemaVersions(%d)) = %v, want an error matching ErrInvalidOption naming it", bad, err)
		}
	}
}
