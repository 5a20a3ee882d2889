package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationName is the OpenTelemetry instrumentation scope of the
// store's spans.
const InstrumentationName = "github.com/evsnap/evsnap/lib/pgstore"

// Log keys used by this package.
const (
	LogKeySchema    = "schema"
	LogKeyMigration = "migration"
	LogKeyTables    = "tables"
)

// ErrNotMigrated matches the error of an operation on a store whose tables
// do not exist (yet): run [Store.Migrate] first.
var ErrNotMigrated = errors.New("pgstore: migrations not applied")

// Store is a PostgreSQL event store, snapshot store and aggregate lister on
// a pgx connection pool. It is safe for concurrent use by many goroutines
// and processes. Create it with [New] (on your pool) or [Open] (from a
// DSN), then call [Store.Migrate] once per deployment.
type Store struct {
	pool     *pgxpool.Pool
	ownPool  bool
	closeOne sync.Once

	cfg    config
	tracer trace.Tracer
	logger *slog.Logger

	// schemaQ and the table fields are sanitized, schema-qualified names.
	schemaQ   string
	events    table
	streams   table
	snapshots table
	migrTable table
	// marks is the table of the sweep's marks, named after the streams
	// table's (streams_sweep_marks).
	marks table

	// tablesKey names this store's tables in the migrations table.
	tablesKey  string
	lockKey    int64
	migrations []migration
	q          queries
	aq         adminQueries
	// scanStmts holds the ScanAggregates statements rendered so far, by
	// scanKey.
	scanStmts sync.Map
}

var _ eventsource.SweepStore = (*Store)(nil)

// table is a validated table name; String gives it schema-qualified and
// quoted, ready to splice into SQL.
type table struct {
	schema, name string
}

func (t table) String() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// Derived returns the quoted name of an index or constraint of t: the
// table's name, an underscore and suffix. Options cap table names so the
// result never exceeds PostgreSQL's 63 bytes (where it would be truncated,
// and could clash).
func (t table) Derived(suffix string) (string, error) {
	name := t.name + "_" + suffix
	if !identRE.MatchString(name) || len(name) > 63 {
		return "", fmt.Errorf("pgstore: derived name %q is not a valid identifier", name)
	}
	return pgx.Identifier{name}.Sanitize(), nil
}

// New returns a store on pool. It does no I/O: the tables must exist, which
// [Store.Migrate] ensures. The caller keeps ownership of pool; [Store.Close]
// does not close it.
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, invalid("New(nil pool)")
	}
	cfg, err := buildConfig(opts)
	if err != nil {
		return nil, err
	}
	return newStore(pool, cfg)
}

func newStore(pool *pgxpool.Pool, cfg config) (*Store, error) {
	s := &Store{
		pool:      pool,
		cfg:       cfg,
		tracer:    cfg.tracerProvider.Tracer(InstrumentationName),
		logger:    cfg.logger,
		schemaQ:   pgx.Identifier{cfg.schema}.Sanitize(),
		events:    table{cfg.schema, cfg.events},
		streams:   table{cfg.schema, cfg.streams},
		snapshots: table{cfg.schema, cfg.snapshots},
		migrTable: table{cfg.schema, cfg.migrations},
		marks:     table{cfg.schema, cfg.streams + "_sweep_marks"},
		tablesKey: cfg.events + "," + cfg.streams + "," + cfg.snapshots,
		lockKey:   migrationLockKey(cfg.schema),
	}
	var err error
	if s.migrations, err = renderMigrations(s); err != nil {
		return nil, err
	}
	s.q = buildQueries(s)
	s.aq = buildAdminQueries(s)
	return s, nil
}

// Open connects to the PostgreSQL server at dsn (a URL or keyword/value
// connection string, as pgxpool.ParseConfig takes), checks it answers, and
// returns a store on a pool it owns: [Store.Close] closes it. Errors name
// the DSN with its password masked. Like [New], Open creates no tables.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, fmt.Errorf("%w: pgstore: empty PostgreSQL DSN", eventsource.ErrInvalidArgument)
	}
	cfg, err := buildConfig(opts) // before connecting
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: malformed PostgreSQL DSN: %s", eventsource.ErrInvalidArgument, parseErrorText(err, dsn))
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, &openError{dsn: RedactDSN(dsn), secrets: dsnSecrets(dsn), err: err}
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, &openError{dsn: RedactDSN(dsn), secrets: dsnSecrets(dsn), err: err}
	}
	s, err := newStore(pool, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// Close closes the pool if [Open] created it; a store made with [New] leaves
// its pool to the caller. Close is idempotent and waits for the pool's
// connections to close.
func (s *Store) Close() {
	if s.ownPool {
		s.closeOne.Do(s.pool.Close)
	}
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the PostgreSQL schema that holds the store's tables.
func (s *Store) Schema() string { return s.cfg.schema }

// span starts the span of one operation on aggregate typ/id. Its
// attributes are set only when the span records: building them (the id's
// string, the slice) cost every load and append an allocation or two for
// nothing while tracing is off.
func (s *Store) span(ctx context.Context, name, typ string, id uuid.UUID, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx, span := s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if !span.IsRecording() {
		return ctx, span
	}
	attrs := make([]attribute.KeyValue, 0, 4+len(extra))
	attrs = append(attrs, attribute.String("db.system.name", "postgresql"), attribute.String("db.namespace", s.cfg.schema))
	if typ != "" {
		attrs = append(attrs, telemetrykeys.AttrAggregateType.String(typ))
	}
	if id != uuid.Nil {
		attrs = append(attrs, telemetrykeys.AttrAggregateID.String(id.String()))
	}
	span.SetAttributes(append(attrs, extra...)...)
	return ctx, span
}

// endSpan records err (if any) on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// wrap turns a driver error of operation op into this package's error:
// missing tables become ErrNotMigrated, data the server refused becomes
// ErrInvalidArgument; everything else keeps its cause.
func (s *Store) wrap(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case isUndefined(pgErr):
			return &notMigratedError{op: op, schema: s.cfg.schema, err: pgErr}
		case pgerrcode.IsDataException(pgErr.Code):
			return fmt.Errorf("pgstore: %s: %w: the server refused the data: %w", op, eventsource.ErrInvalidArgument, err)
		}
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

// isUndefined reports whether the server said a table, schema or column
// the store uses does not exist: its migrations were not (all) applied.
func isUndefined(e *pgconn.PgError) bool {
	switch e.Code {
	case pgerrcode.UndefinedTable, pgerrcode.InvalidSchemaName, pgerrcode.UndefinedColumn:
		return true
	}
	return false
}

// notMigratedError is an operation that failed because the store's tables
// do not exist (or predate this release). It matches ErrNotMigrated.
type notMigratedError struct {
	op, schema string
	err        *pgconn.PgError
}

func (e *notMigratedError) Error() string {
	return fmt.Sprintf("pgstore: %s: the store's tables are missing or outdated in schema %q (%s): run Store.Migrate (the snapshotter's migrate command) first",
		e.op, e.schema, e.err.Message)
}

// Is makes errors.Is(err, ErrNotMigrated) true.
func (e *notMigratedError) Is(target error) bool { return target == ErrNotMigrated }

// Unwrap returns the server's error.
func (e *notMigratedError) Unwrap() error { return e.err }

// pgID passes an aggregate id to pgx as its 16 bytes: pgx encodes a
// [16]byte into the uuid type directly, whereas a uuid.UUID argument first
// fails a binary encode plan (building and discarding an error, about 5% of
// a snapshot read's CPU) before pgx falls back to its text form.
func pgID(id uuid.UUID) [16]byte { return id }
