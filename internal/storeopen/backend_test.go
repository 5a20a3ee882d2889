package storeopen

import (
	"context"
	"github.com/evsnap/evsnap/lib/eventsource"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/jackc/pgx/v5"
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
