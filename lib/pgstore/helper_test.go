package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// testURL returns the PostgreSQL URL the tests run against (see
// internal/tooling/pgtest: skipped without one unless EVSNAP_REQUIRE_SERVICES=1,
// and the server is probed once per run).
func testURL(t testing.TB) string {
	t.Helper()
	return pgtest.URL(t)
}

// testPool returns a pool on the test server, closed when the test ends.
// The first call of the run checks the server answers, so a stopped server
// gives one actionable failure. Cleanup checks no connection is left
// acquired (an iterator that leaked its rows would hold one).
func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return testPoolConfig(t, nil)
}

func testPoolConfig(t testing.TB, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	url := testURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("%s: %v", pgtest.EnvURL, err)
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pool for %s: %v", pgstore.RedactDSN(url), err)
	}
	t.Cleanup(func() {
		if n := pool.Stat().AcquiredConns(); n != 0 {
			t.Errorf("%d pool connections still acquired at the end of the test: leaked rows?", n)
		}
		pool.Close()
	})
	return pool
}

// newSchemaName returns a schema name no other test run uses.
func newSchemaName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "evsnap_test_" + hex.EncodeToString(b[:])
}

// dropSchemaAtCleanup drops schema when the test ends.
func dropSchemaAtCleanup(t testing.TB, pool *pgxpool.Pool, schema string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
	})
}

// newStore returns a migrated store in a fresh schema of its own, dropped
// when the test ends.
func newStore(t testing.TB, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	return newStoreOn(t, testPool(t), opts...)
}

func newStoreOn(t testing.TB, pool *pgxpool.Pool, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	schema := newSchemaName()
	st, err := pgstore.New(pool, append([]pgstore.Option{pgstore.WithSchema(schema), pgstore.WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	dropSchemaAtCleanup(t, pool, schema)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return st
}

// testLogger logs to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// qualified returns the quoted name of a table in st's schema.
func qualified(st *pgstore.Store, table string) string {
	return pgx.Identifier{st.Schema(), table}.Sanitize()
}

// newStoreAt returns a store on a schema of its own migrated up to
// version only (a schema as an earlier release left it), and its pool.
func newStoreAt(t testing.TB, version int) (*pgstore.Store, *pgxpool.Pool) {
	t.Helper()
	pool := testPool(t)
	schema := newSchemaName()
	dropSchemaAtCleanup(t, pool, schema)
	st, err := pgstore.New(pool, pgstore.WithSchema(schema), pgstore.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pgstore.MigrateTo(context.Background(), st, version); err != nil {
		t.Fatal(err)
	}
	return st, pool
}
