package sqlitestore

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// Default table names. They follow the tutorial (events, snapshots) plus the
// streams table of stream heads and the table of applied migrations.
const (
	DefaultEventsTable     = "events"
	DefaultSnapshotsTable  = "snapshots"
	DefaultStreamsTable    = "streams"
	DefaultMigrationsTable = "evsnap_migrations"
)

// Defaults of the options that apply to [Open].
const (
	// DefaultBusyTimeout is how long a write waits for another connection
	// (another process, or another Store on the same file) to release the
	// database's write lock before it fails.
	DefaultBusyTimeout = 5 * time.Second
	// DefaultSynchronous is the durability of a committed write; see
	// [Synchronous].
	DefaultSynchronous = SyncFull
)

// Synchronous is SQLite's synchronous setting for a file database in WAL
// mode: what a successful commit promises.
type Synchronous string

const (
	// SyncFull (the default) syncs the write-ahead log on every commit: a
	// committed append or snapshot survives an operating-system crash or a
	// power loss, as a PostgreSQL commit with synchronous_commit=on does.
	// Each write transaction pays one fsync.
	SyncFull Synchronous = "FULL"
	// SyncNormal syncs only at checkpoints. The database is never
	// corrupted and survives an application crash, but the last
	// transactions committed before an OS crash or power loss may be rolled
	// back: an append the caller saw succeed (and may have announced with a
	// notice) can disappear. Choose it for caches, tests and edge devices
	// that can re-derive their data; writes are several times faster.
	SyncNormal Synchronous = "NORMAL"
)

// Option configures a [Store]. Options validate their arguments: an invalid
// option makes [Open] or [New] fail with an error matching
// [eventsource.ErrInvalidOption], before anything is opened.
type Option func(*config) error

type config struct {
	events, snapshots, streams, migrations string

	logger         *slog.Logger
	tracerProvider trace.TracerProvider
	kept           int

	// Options of Open only; New refuses them.
	busyTimeout time.Duration
	sync        Synchronous
	readConns   int
	openOnly    []string
}

// identifier is what a table name must look like. Names are also quoted in
// every statement, so a keyword such as "order" is a valid name.
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func invalidOption(format string, args ...any) error {
	return fmt.Errorf("%w: sqlitestore: "+format, append([]any{eventsource.ErrInvalidOption}, args...)...)
}

func tableOption(what string, dst func(*config) *string, name string) Option {
	return func(c *config) error {
		if !identifier.MatchString(name) {
			return invalidOption("%s table name %q is not an identifier matching %s", what, name, identifier)
		}
		if strings.HasPrefix(name, "sqlite_") {
			return invalidOption("%s table name %q: names starting with sqlite_ are reserved by SQLite", what, name)
		}
		*dst(c) = name
		return nil
	}
}

// WithEventsTable sets the name of the events table (default "events"). It
// must match ^[a-z_][a-z0-9_]{0,62}$ and not start with "sqlite_"; its
// indexes are named after it.
func WithEventsTable(name string) Option {
	return tableOption("events", func(c *config) *string { return &c.events }, name)
}

// WithSnapshotsTable sets the name of the snapshots table (default
// "snapshots"), with the same rules as [WithEventsTable].
func WithSnapshotsTable(name string) Option {
	return tableOption("snapshots", func(c *config) *string { return &c.snapshots }, name)
}

// WithStreamsTable sets the name of the table of stream heads (default
// "streams"), with the same rules as [WithEventsTable].
func WithStreamsTable(name string) Option {
	return tableOption("streams", func(c *config) *string { return &c.streams }, name)
}

// WithMigrationsTable sets the name of the table that records applied
// migrations (default "evsnap_migrations"), with the same rules as
// [WithEventsTable]. Stores with different table names may share it: each
// records its migrations under its own table names.
func WithMigrationsTable(name string) Option {
	return tableOption("migrations", func(c *config) *string { return &c.migrations }, name)
}

// WithLogger sets the logger (default slog.Default()). The store logs
// applied migrations and anomalies, never per-operation chatter.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return invalidOption("WithLogger(nil)")
		}
		c.logger = l
		return nil
	}
}

// WithTracerProvider sets the OpenTelemetry tracer provider of the store's
// spans (default otel.GetTracerProvider(), which is a no-op until an
// application installs an SDK).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) error {
		if tp == nil {
			return invalidOption("WithTracerProvider(nil)")
		}
		c.tracerProvider = tp
		return nil
	}
}

// WithKeptSchemaVersions sets how many schema versions' snapshots the
// store keeps per aggregate (default storekit.DefaultKeptSchemaVersions,
// 2: the current and the previous), from 1 to
// eventsource.MaxSchemaVersion; see [eventsource.SnapshotStore]. Every
// process writing to one database should use the same value.
func WithKeptSchemaVersions(n int) Option {
	return func(c *config) error {
		if err := storekit.ValidateKeptSchemaVersions(n); err != nil {
			return fmt.Errorf("sqlitestore: %w", err)
		}
		c.kept = n
		return nil
	}
}

// WithBusyTimeout sets how long a write waits for the database's write lock
// when another process or another Store holds it (default 5s), at
// millisecond precision. Writes from one Store never wait on each other
// this way: they queue for the Store's single write connection. Only for
// [Open].
func WithBusyTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Millisecond {
			return invalidOption("busy timeout %v: want at least 1ms (a zero timeout fails writes with SQLITE_BUSY whenever another connection writes)", d)
		}
		c.busyTimeout = d
		c.openOnly = append(c.openOnly, "WithBusyTimeout")
		return nil
	}
}

// WithSynchronous sets the durability of commits to a file database
// (default [SyncFull]); see [Synchronous]. Only for [Open].
func WithSynchronous(s Synchronous) Option {
	return func(c *config) error {
		switch s {
		case SyncFull, SyncNormal:
		default:
			return invalidOption("synchronous %q: want %q or %q", s, SyncFull, SyncNormal)
		}
		c.sync = s
		c.openOnly = append(c.openOnly, "WithSynchronous")
		return nil
	}
}

// WithReadConns sets how many connections a file store reads with (default
// max(4, GOMAXPROCS)). Writes always use one connection. An in-memory store
// has exactly one connection and ignores it. Only for [Open].
func WithReadConns(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1024 {
			return invalidOption("read connections %d: want 1..1024", n)
		}
		c.readConns = n
		c.openOnly = append(c.openOnly, "WithReadConns")
		return nil
	}
}

func newConfig(opts []Option) (*config, error) {
	c := &config{
		events:      DefaultEventsTable,
		snapshots:   DefaultSnapshotsTable,
		streams:     DefaultStreamsTable,
		migrations:  DefaultMigrationsTable,
		busyTimeout: DefaultBusyTimeout,
		sync:        DefaultSynchronous,
		kept:        storekit.DefaultKeptSchemaVersions,
	}
	for _, o := range opts {
		if o == nil {
			return nil, invalidOption("nil Option")
		}
		if err := o(c); err != nil {
			return nil, err
		}
	}
	names := map[string]string{}
	for _, t := range []struct{ what, name string }{
		{"events", c.events}, {"snapshots", c.snapshots}, {"streams", c.streams}, {"migrations", c.migrations},
	} {
		if other, dup := names[t.name]; dup {
			return nil, invalidOption("the %s and %s tables are both named %q", other, t.what, t.name)
		}
		names[t.name] = t.what
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if c.tracerProvider == nil {
		c.tracerProvider = otel.GetTracerProvider()
	}
	return c, nil
}
