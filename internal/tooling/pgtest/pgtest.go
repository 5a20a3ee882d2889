// Package pgtest gives tests outside lib/pgstore a migrated PostgreSQL
// store of their own: a fresh schema on the server named by
// EVSNAP_TEST_POSTGRES_URL, dropped when the test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Environment variables.
const (
	EnvURL             = "EVSNAP_TEST_POSTGRES_URL"
	EnvRequireServices = "EVSNAP_REQUIRE_SERVICES"
)

var (
	probeOnce sync.Once
	probeErr  error
)

// URL returns EVSNAP_TEST_POSTGRES_URL. Without it the test is skipped,
// unless EVSNAP_REQUIRE_SERVICES=1, which fails it. The server is probed
// once per test binary so a stopped server gives one clear failure.
func URL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(EnvURL)
	if url == "" {
		msg := EnvURL + " is not set: this test needs PostgreSQL, e.g. " + EnvURL + "=postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
		if os.Getenv(EnvRequireServices) == "1" {
			t.Fatal(msg + " (" + EnvRequireServices + "=1 forbids skipping)")
		}
		t.Skip(msg)
	}
	probeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			probeErr = err
			return
		}
		defer conn.Close(ctx)
		probeErr = conn.Ping(ctx)
	})
	if probeErr != nil {
		t.Fatalf("pgtest: %s=%s does not answer: %v\n\tstart it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
			EnvURL, pgstore.RedactDSN(url), probeErr)
	}
	return url
}

// Store returns a migrated store in a fresh schema; the schema is dropped
// and the pool closed when the test ends.
func Store(t testing.TB, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	url := URL(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "evsnap_t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	s, err := pgstore.New(pool, append([]pgstore.Option{pgstore.WithSchema(schema), pgstore.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		pool.Close()
		t.Fatalf("pgtest: store: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
		pool.Close()
	})
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("pgtest: migrate: %v", err)
	}
	return s
}
