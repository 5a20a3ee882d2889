package storeopen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/pgcluster"
	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestOpenEachKind(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		opts func(t *testing.T) Options
		kind string
	}{
		{"memory", func(*testing.T) Options { return Options{Memory: true} }, "memory"},
		{"sqlite file", func(t *testing.T) Options { return Options{SQLitePath: filepath.Join(t.TempDir(), "sub", "e.db")} }, "sqlite"},
		{"postgres", func(t *testing.T) Options {
			// A throwaway schema, created by Migrate and dropped at the end.
			schema := pgtest.Store(t).Schema() + "_b"
			t.Cleanup(func() { dropSchema(t, schema) })
			return Options{PostgresURL: pgtest.URL(t), PostgresSchema: schema}
		}, "postgres"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := Open(ctx, c.opts(t))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Kind != c.kind || b.String() == "" {
				t.Fatalf("kind %q (%s)", b.Kind, b)
			}
			if err := b.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			var _ eventsource.Store = b
		})
	}
}

func TestOpenErrorsNameTheProblem(t *testing.T) {
	_, err := Open(context.Background(), Options{PostgresURL: "postgres://u:hunter22@127.0.0.1:1/db?connect_timeout=2"})
	if err == nil || strings.Contains(err.Error(), "hunter22") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable PostgreSQL: %v", err)
	}
	_, err = Open(context.Background(), Options{SQLitePath: "/proc/definitely/not/here/e.db"})
	if err == nil || !strings.Contains(err.Error(), "/proc/definitely/not/here") {
		t.Fatalf("bad SQLite path: %v", err)
	}
}

func dropSchema(t *testing.T, schema string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}

// With WaitForServer, a PostgreSQL server that is down does not stop Open:
// the backend connects when the server is up, and works. Without it, Open
// fails naming the server.
func TestOpenWaitsForAPostgresThatIsDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := pgcluster.Init(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cluster.Remove(); err != nil {
			t.Error(err)
		}
	}()
	url := cluster.URL("postgres") // initialised, not started: nothing listens
	if _, err := Open(ctx, Options{PostgresURL: url}); err == nil || !strings.Contains(err.Error(), strconv.Itoa(cluster.Port())) {
		t.Fatalf("Open without WaitForServer while PostgreSQL is down: %v, want an error naming the server", err)
	}
	var logs bytes.Buffer
	b, err := Open(ctx, Options{PostgresURL: url, WaitForServer: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open with WaitForServer while PostgreSQL is down: %v", err)
	}
	defer b.Close()
	if !strings.Contains(logs.String(), "PostgreSQL unreachable") || b.Kind != "postgres" {
		t.Errorf("kind %q, logs %q: want a postgres backend and a warning", b.Kind, logs.String())
	}
	if err := b.Migrate(ctx); err == nil {
		t.Fatal("Migrate succeeded with the server down")
	}
	if _, err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Migrate(ctx); err != nil {
		t.Fatalf("Migrate once the server is up: %v", err)
	}
	id := uuid.New()
	if _, err := b.Append(ctx, "Account", id, eventsource.NoStream, []eventsource.NewEvent{{ID: uuid.New(), Type: "Opened", Payload: []byte(`{}`), OccurredAt: time.Now().UTC().Truncate(time.Microsecond)}}); err != nil {
		t.Fatalf("Append once the server is up: %v", err)
	}
	if v, err := b.StreamVersion(ctx, "Account", id); err != nil || v != 1 {
		t.Fatalf("StreamVersion = %d, %v; want 1", v, err)
	}
}

// A server that refuses for good still fails Open, even with
// WaitForServer: here a database that does not exist.
func TestOpenWaitsOnlyForAnUnreachableServer(t *testing.T) {
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/evsnap_no_such_database"
	_, err = Open(context.Background(), Options{PostgresURL: u.String(), WaitForServer: true, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "evsnap_no_such_database") {
		t.Fatalf("Open of a missing database with WaitForServer: %v, want an error naming it", err)
	}
}

func TestServerUnreachable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "57P03"}, true},  // cannot_connect_now: starting up, in recovery
		{&pgconn.PgError{Code: "57P01"}, true},  // admin_shutdown: shutting down
		{&pgconn.PgError{Code: "53300"}, true},  // too_many_connections
		{&pgconn.PgError{Code: "28P01"}, false}, // invalid_password
		{&pgconn.PgError{Code: "3D000"}, false}, // invalid_catalog_name: no such database
		{fmt.Errorf("connect: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), true},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{context.DeadlineExceeded, true},
		{errors.New("something else"), false},
	} {
		if got := serverUnreachable(c.err); got != c.want {
			t.Errorf("serverUnreachable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
