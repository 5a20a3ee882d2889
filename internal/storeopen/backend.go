// Package storeopen opens the event and snapshot store a program is
// configured with: PostgreSQL when a URL is given, otherwise SQLite (a file
// under ./data by default), or memory for tests. Both cmd/ programs use it.
package storeopen

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"go.opentelemetry.io/otel/trace"
)

// The SQLite default, shared by both cmd/ programs so that `example-app
// load` and `snapshotter run`, started without configuration in one
// directory, use one store (with two files the worker finds none of the
// aggregates the notices name).
const (
	// DefaultDataDir is the directory, relative to the working directory,
	// where the programs keep local files when not told otherwise.
	DefaultDataDir = "data"
	// DefaultSQLiteFile is the name of the default SQLite database in
	// the data directory.
	DefaultSQLiteFile = "evsnap.db"
	// DefaultSQLitePath is where the embedded default keeps its database:
	// DefaultSQLiteFile in DefaultDataDir.
	DefaultSQLitePath = DefaultDataDir + "/" + DefaultSQLiteFile
)

// Options selects and configures the backend.
type Options struct {
	// PostgresURL selects PostgreSQL.
	PostgresURL string
	// PostgresSchema is the PostgreSQL schema of the tables (default public).
	PostgresSchema string
	// SQLitePath selects SQLite when PostgresURL is empty
	// (DefaultSQLitePath when empty too). ":memory:" is a private
	// in-memory SQLite database.
	SQLitePath string
	// Memory selects memstore (tests and throwaway demos).
	Memory bool

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
}

// Backend is an open store.
type Backend struct {
	// Store is the store (a *pgstore.Store, *sqlitestore.Store or
	// *memstore.Store): give it to repositories and the worker.
	eventsource.Store
	// Kind is "postgres", "sqlite" or "memory".
	Kind string
	// Where describes the location, with any password redacted.
	Where string

	migrate func(context.Context) error
	close   func() error
}

// Open opens the configured backend. It does not migrate.
func Open(ctx context.Context, o Options) (*Backend, error) {
	switch {
	case o.Memory:
		return &Backend{Store: memstore.New(), Kind: "memory", Where: "memory",
			migrate: func(context.Context) error { return nil }, close: func() error { return nil }}, nil
	case o.PostgresURL != "":
		var opts []pgstore.Option
		if o.PostgresSchema != "" {
			opts = append(opts, pgstore.WithSchema(o.PostgresSchema))
		}
		if o.Logger != nil {
			opts = append(opts, pgstore.WithLogger(o.Logger))
		}
		if o.TracerProvider != nil {
			opts = append(opts, pgstore.WithTracerProvider(o.TracerProvider))
		}
		s, err := pgstore.Open(ctx, o.PostgresURL, opts...)
		if err != nil {
			return nil, err
		}
		return &Backend{Store: s, Kind: "postgres", Where: pgstore.RedactDSN(o.PostgresURL),
			migrate: s.Migrate, close: func() error { s.Close(); return nil }}, nil
	default:
		path := o.SQLitePath
		if path == "" {
			path = DefaultSQLitePath
		}
		if path != sqlitestore.MemoryPath {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, fmt.Errorf("sqlite: create the directory of %s: %w", path, err)
			}
		}
		var opts []sqlitestore.Option
		if o.Logger != nil {
			opts = append(opts, sqlitestore.WithLogger(o.Logger))
		}
		if o.TracerProvider != nil {
			opts = append(opts, sqlitestore.WithTracerProvider(o.TracerProvider))
		}
		s, err := sqlitestore.Open(ctx, path, opts...)
		if err != nil {
			return nil, err
		}
		return &Backend{Store: s, Kind: "sqlite", Where: path, migrate: s.Migrate, close: s.Close}, nil
	}
}

// Migrate creates or upgrades the tables.
func (b *Backend) Migrate(ctx context.Context) error { return b.migrate(ctx) }

// Close closes the backend.
func (b *Backend) Close() error { return b.close() }

// String describes the backend for logs.
func (b *Backend) String() string { return b.Kind + " (" + b.Where + ")" }
