package pgstore

import (
	"fmt"
	"log/slog"
	"regexp"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// Defaults for the options.
const (
	DefaultSchema          = "public"
	DefaultEventsTable     = "events"
	DefaultStreamsTable    = "streams"
	DefaultSnapshotsTable  = "snapshots"
	DefaultMigrationsTable = "evsnap_migrations"
	// DefaultReadPageSize is how many events one query of ReadEvents
	// fetches; see [WithReadPageSize].
	DefaultReadPageSize = 1000
)

// maxTableNameLen keeps every name derived from a table name (its indexes
// and constraints, the longest being "<table>_stream_version_key") within
// PostgreSQL's 63-byte identifier limit, so PostgreSQL never truncates two
// derived names into one.
const maxTableNameLen = 63 - len("_stream_version_key")

// identRE is the identifier shape the options accept: lower-case, unquoted
// PostgreSQL names, so the name a user writes in psql is the stored one.
var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Option configures a [Store]. Options validate their arguments; an invalid
// one makes [New] or [Open] fail with an error matching
// [eventsource.ErrInvalidOption] that names the bad value.
type Option func(*config) error

type config struct {
	schema         string
	events         string
	streams        string
	snapshots      string
	migrations     string
	readPageSize   int
	kept           int
	tracerProvider trace.TracerProvider
	logger         *slog.Logger
}

func defaultConfig() config {
	return config{
		schema:       DefaultSchema,
		events:       DefaultEventsTable,
		streams:      DefaultStreamsTable,
		snapshots:    DefaultSnapshotsTable,
		migrations:   DefaultMigrationsTable,
		readPageSize: DefaultReadPageSize,
		kept:         storekit.DefaultKeptSchemaVersions,
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: pgstore: "+format, append([]any{eventsource.ErrInvalidOption}, args...)...)
}

func checkIdent(what, name string, maxLen int) error {
	if !identRE.MatchString(name) {
		return invalid("%s %q is not a valid name: use 1 to 63 lower-case letters, digits and underscores, not starting with a digit", what, name)
	}
	if len(name) > maxLen {
		return invalid("%s %q is %d characters long; at most %d are allowed so the index names derived from it fit in PostgreSQL's 63", what, name, len(name), maxLen)
	}
	return nil
}

// WithSchema sets the PostgreSQL schema that holds the tables (default
// "public"). [Store.Migrate] creates it when it does not exist.
func WithSchema(name string) Option {
	return func(c *config) error {
		if err := checkIdent("schema name", name, 63); err != nil {
			return err
		}
		if len(name) >= 3 && name[:3] == "pg_" {
			return invalid("schema name %q is reserved: PostgreSQL keeps names starting with pg_ for system schemas", name)
		}
		c.schema = name
		return nil
	}
}

func tableOption(what string, dst func(*config) *string) func(string) Option {
	return func(name string) Option {
		return func(c *config) error {
			if err := checkIdent(what, name, maxTableNameLen); err != nil {
				return err
			}
			*dst(c) = name
			return nil
		}
	}
}

// WithEventsTable sets the name of the events table (default "events").
// Index and constraint names are derived from it.
func WithEventsTable(name string) Option {
	return tableOption("events table name", func(c *config) *string { return &c.events })(name)
}

// WithStreamsTable sets the name of the streams table, which holds each
// aggregate's head version (default "streams").
func WithStreamsTable(name string) Option {
	return tableOption("streams table name", func(c *config) *string { return &c.streams })(name)
}

// WithSnapshotsTable sets the name of the snapshots table (default
// "snapshots").
func WithSnapshotsTable(name string) Option {
	return tableOption("snapshots table name", func(c *config) *string { return &c.snapshots })(name)
}

// WithMigrationsTable sets the name of the table that records applied
// migrations (default "evsnap_migrations"). Stores with different table
// names may share it: each records its migrations under its own tables.
func WithMigrationsTable(name string) Option {
	return tableOption("migrations table name", func(c *config) *string { return &c.migrations })(name)
}

// WithReadPageSize sets how many events one query of [Store.ReadEvents]
// fetches (default [DefaultReadPageSize], between 10 and 100,000). Reads go
// page by page in version order through the (aggregate_type, aggregate_id,
// version) index; the bound makes PostgreSQL walk that index instead of
// sorting a long stream, and caps what one query holds.
func WithReadPageSize(n int) Option {
	return func(c *config) error {
		if n < 10 || n > 100_000 {
			return invalid("read page size must be between 10 and 100000, got %d", n)
		}
		c.readPageSize = n
		return nil
	}
}

// WithKeptSchemaVersions sets how many schema versions' snapshots the
// store keeps per aggregate (default storekit.DefaultKeptSchemaVersions,
// 2: the current and the previous), from 1 to
// eventsource.MaxSchemaVersion; see [eventsource.SnapshotStore]. Every
// process writing to one snapshots table should use the same value (the
// rows a save keeps depend on it).
func WithKeptSchemaVersions(n int) Option {
	return func(c *config) error {
		if err := storekit.ValidateKeptSchemaVersions(n); err != nil {
			return fmt.Errorf("pgstore: %w", err)
		}
		c.kept = n
		return nil
	}
}

// WithTracerProvider sets the OpenTelemetry tracer provider of the
// per-operation spans (default: the global one, a no-op unless the program
// installs an SDK).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) error {
		if tp == nil {
			return invalid("WithTracerProvider(nil)")
		}
		c.tracerProvider = tp
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()). The store logs the
// migrations it applies; it never logs a connection string.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return invalid("WithLogger(nil)")
		}
		c.logger = l
		return nil
	}
}

// buildConfig applies opts to the defaults and checks the result.
func buildConfig(opts []Option) (config, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o == nil {
			return c, invalid("nil Option")
		}
		if err := o(&c); err != nil {
			return c, err
		}
	}
	return c, c.finish()
}

func (c *config) finish() error {
	names := map[string]string{}
	for _, n := range []struct{ what, name string }{
		{"events table", c.events}, {"streams table", c.streams},
		{"snapshots table", c.snapshots}, {"migrations table", c.migrations},
	} {
		if prev, dup := names[n.name]; dup {
			return invalid("the %s and the %s are both named %q; give each its own name", prev, n.what, n.name)
		}
		names[n.name] = n.what
	}
	if c.tracerProvider == nil {
		c.tracerProvider = otel.GetTracerProvider()
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return nil
}
