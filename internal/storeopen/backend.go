// Package storeopen opens the event and snapshot store a program is
// configured with: PostgreSQL when a URL is given, otherwise SQLite (a file
// under ./data by default), or memory for tests. Both cmd/ programs use it.
package storeopen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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
	// WaitForServer makes Open succeed when the PostgreSQL server does
	// not answer yet (down, starting up, in crash recovery, shutting
	// down, out of connection slots): the store's pool connects when it
	// is first used, and operations fail with connection errors until
	// then, as when the server goes away later. For a worker started
	// during an outage, or before the database, as in compose or
	// Kubernetes. A server that answers with a refusal that lasts (bad
	// credentials, no such database) still fails Open.
	WaitForServer bool

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
		where := pgstore.RedactDSN(o.PostgresURL)
		s, err := pgstore.Open(ctx, o.PostgresURL, opts...)
		if err != nil && o.WaitForServer && serverUnreachable(err) {
			return openUnreachable(ctx, o, where, opts, err)
		}
		if err != nil {
			return nil, err
		}
		return &Backend{Store: s, Kind: "postgres", Where: where,
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

// openUnreachable returns a PostgreSQL backend on a pool that has not
// connected (pgxpool connects when a connection is first needed), after
// Open found the server unreachable with cause.
func openUnreachable(ctx context.Context, o Options, where string, opts []pgstore.Option, cause error) (*Backend, error) {
	pcfg, err := pgxpool.ParseConfig(o.PostgresURL)
	if err != nil { // pgstore.Open parsed it already
		return nil, cause
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg) // no I/O: MinConns is 0
	if err != nil {
		return nil, errors.Join(cause, err)
	}
	s, err := pgstore.New(pool, opts...)
	if err != nil {
		pool.Close()
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Warn("PostgreSQL unreachable at start-up; starting anyway, the store connects when it can", "postgres", where, "error", cause.Error())
	return &Backend{Store: s, Kind: "postgres", Where: where,
		migrate: s.Migrate, close: func() error { pool.Close(); return nil }}, nil
}

// serverUnreachable reports whether err, from connecting to PostgreSQL,
// says the server cannot be reached or does not take connections for now
// (starting up, in recovery, shutting down, out of connection slots), as
// opposed to refusing them for good (authentication, a missing database).
func serverUnreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerrcode.CannotConnectNow, pgerrcode.AdminShutdown, pgerrcode.CrashShutdown,
			pgerrcode.TooManyConnections, pgerrcode.ConnectionFailure:
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, context.DeadlineExceeded)
}

// Migrate creates or upgrades the tables.
func (b *Backend) Migrate(ctx context.Context) error { return b.migrate(ctx) }

// Close closes the backend.
func (b *Backend) Close() error { return b.close() }

// String describes the backend for logs.
func (b *Backend) String() string { return b.Kind + " (" + b.Where + ")" }
