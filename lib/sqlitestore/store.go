package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// InstrumentationName is the OpenTelemetry instrumentation scope of the
// store's spans.
const InstrumentationName = "github.com/evsnap/evsnap/lib/sqlitestore"

// MemoryPath is the path that opens a private in-memory database.
const MemoryPath = ":memory:"

// DriverName is the database/sql driver the store uses (modernc.org/sqlite,
// pure Go).
const DriverName = "sqlite"

// Log keys used by this package.
const (
	LogKeyPath      = "path"
	LogKeyMigration = "migration"
	LogKeyVersion   = "version"
	LogKeyError     = "error"
)

// Store is an [eventsource.Store] on one SQLite database: events,
// snapshots and aggregate listings. It is safe for concurrent use by many goroutines; several
// Stores (in one process or many) may share a database file.
//
// Create it with [Open] or [New], call [Store.Migrate] once, and [Store.Close]
// it when done.
type Store struct {
	cfg    *config
	path   string // file path or MemoryPath; "" for New
	memory bool
	ownsDB bool
	// singleConn: every call shares one connection (":memory:", or a
	// *sql.DB given to New with SetMaxOpenConns(1)). The store then never
	// holds it while the caller iterates, and never discards it.
	singleConn bool

	// writer has exactly one connection when the store opened the database
	// itself: in-process writers queue for it and never meet SQLITE_BUSY.
	// reader is a pool of read-only connections (the same *sql.DB as
	// writer for an in-memory database and for New).
	writer, reader *sql.DB

	q      queries
	aq     adminQueries
	window int // events fetched per ReadEvents query

	stmtMu sync.Mutex
	wstmts map[string]*sql.Stmt
	rstmts map[string]*sql.Stmt

	tracer trace.Tracer
	logger *slog.Logger

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ eventsource.Store = (*Store)(nil)

// defaultWindow is how many events ReadEvents fetches per query; between
// windows the store holds no connection, so a caller that runs other store
// calls while iterating never waits on itself (an in-memory store has a
// single connection). BenchmarkReadWindow measures the choice.
const defaultWindow = 512

// Open opens the SQLite database at path, creating the file if it does not
// exist (its directory must exist), or a private in-memory database when
// path is ":memory:" ([MemoryPath]). It does not create tables: call
// [Store.Migrate].
//
// A file database is put in WAL mode, with foreign keys on, the busy timeout
// of [WithBusyTimeout] and the durability of [WithSynchronous]. The store
// writes through one connection (BEGIN IMMEDIATE transactions) and reads
// through a pool of read-only connections; WAL lets reads proceed while a
// write is in progress.
//
// An in-memory database lives in exactly one connection, which every call
// shares; it disappears when the Store is closed.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := newStore(cfg)
	s.path, s.ownsDB = path, true
	if path == MemoryPath {
		s.memory, s.singleConn = true, true
		err = s.openMemory(ctx)
	} else {
		err = s.openFile(ctx, path)
	}
	if err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

// New returns a store on db, which the caller opened with the "sqlite"
// driver ([DriverName]) and keeps managing: Close does not close it. The
// store uses db for reads and writes. For a file database, open it with at
// least a busy timeout and WAL, and preferably BEGIN IMMEDIATE transactions:
//
//	file.db?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate
//
// For ":memory:" call db.SetMaxOpenConns(1) before New, or every connection
// sees its own empty database; New then treats db as a single shared
// connection, as [Open] does for ":memory:". The options of [Open] that configure connections
// ([WithBusyTimeout], [WithSynchronous], [WithReadConns]) are refused.
func New(db *sql.DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, invalidOption("New(nil *sql.DB)")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if len(cfg.openOnly) > 0 {
		return nil, invalidOption("%s configures connections the store opens itself; New uses the caller's *sql.DB as it is (set pragmas in its DSN)", strings.Join(cfg.openOnly, ", "))
	}
	s := newStore(cfg)
	s.writer, s.reader = db, db
	s.singleConn = db.Stats().MaxOpenConnections == 1
	return s, nil
}

func newStore(cfg *config) *Store {
	return &Store{
		cfg:    cfg,
		q:      buildQueries(cfg),
		aq:     buildAdminQueries(cfg),
		window: defaultWindow,
		wstmts: map[string]*sql.Stmt{},
		rstmts: map[string]*sql.Stmt{},
		tracer: cfg.tracerProvider.Tracer(InstrumentationName),
		logger: cfg.logger,
	}
}

func (s *Store) openMemory(ctx context.Context) error {
	db, err := sql.Open(DriverName, MemoryPath+"?_pragma=foreign_keys(1)")
	if err != nil {
		return fmt.Errorf("sqlitestore: open %s: %w", MemoryPath, err)
	}
	// Every connection to ":memory:" is a separate, empty database: keep
	// exactly one, forever.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	s.writer, s.reader = db, db
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlitestore: open %s: %w", MemoryPath, err)
	}
	return nil
}

func (s *Store) openFile(ctx context.Context, path string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	ms := s.cfg.busyTimeout.Milliseconds()
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", ms)
	writer, err := sql.Open(DriverName, path+"?"+common+
		"&_pragma=journal_mode(WAL)&_pragma=synchronous("+string(s.cfg.sync)+")&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("sqlitestore: open %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	s.writer = writer
	// The write connection opens first: it converts the file to WAL.
	var mode string
	if err := writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlitestore: open %s: %w", path, s.mapErr(err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlitestore: open %s: journal mode is %q, not WAL (WAL needs a local file system with shared memory; network file systems do not qualify)", path, mode)
	}

	reader, err := sql.Open(DriverName, path+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		return fmt.Errorf("sqlitestore: open %s: %w", path, err)
	}
	n := s.cfg.readConns
	if n == 0 {
		n = max(4, runtime.GOMAXPROCS(0))
	}
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	reader.SetConnMaxLifetime(0)
	s.reader = reader
	if err := reader.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlitestore: open %s for reading: %w", path, s.mapErr(err))
	}
	return nil
}

// checkPath gives a clear error for the path mistakes SQLite reports only as
// "unable to open database file".
func checkPath(path string) error {
	switch {
	case path == "":
		return fmt.Errorf("%w: sqlitestore: empty database path (use a file path or %q)", eventsource.ErrInvalidArgument, MemoryPath)
	case strings.HasPrefix(path, "file:"):
		return fmt.Errorf("%w: sqlitestore: database path %q is a URI; pass a plain file path (or use New with your own *sql.DB)", eventsource.ErrInvalidArgument, path)
	case strings.ContainsRune(path, '?'):
		return fmt.Errorf("%w: sqlitestore: database path %q contains '?', which the driver reads as the start of its parameters", eventsource.ErrInvalidArgument, path)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("sqlitestore: open %s: is a directory, not a database file", path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("sqlitestore: open %s: directory %s does not exist", path, dir)
	case err != nil:
		return fmt.Errorf("sqlitestore: open %s: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("sqlitestore: open %s: %s is not a directory", path, dir)
	}
	return nil
}

// name is how errors name the database.
func (s *Store) name() string {
	if s.path == "" {
		return "(caller's *sql.DB)"
	}
	return s.path
}

// Close closes the database connections the store opened (not a *sql.DB
// given to [New]) and every prepared statement. It waits for running
// queries to finish. Closing an in-memory store discards its database.
// Close is idempotent; later calls return the first call's result, and
// other methods return an error matching [ErrClosed].
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stmtMu.Lock()
		var errs []error
		for _, m := range []map[string]*sql.Stmt{s.wstmts, s.rstmts} {
			for k, st := range m {
				errs = append(errs, st.Close())
				delete(m, k)
			}
		}
		s.stmtMu.Unlock()
		if s.ownsDB {
			errs = append(errs, s.closeDBs())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	if s.reader != nil && s.reader != s.writer {
		errs = append(errs, s.reader.Close())
	}
	if s.writer != nil {
		errs = append(errs, s.writer.Close())
	}
	return errors.Join(errs...)
}

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// stmt returns the statement for query prepared on db (s.writer or
// s.reader), preparing it on first use. It must not be called inside a
// transaction: preparing needs a connection of db.
func (s *Store) stmt(ctx context.Context, write bool, query string) (*sql.Stmt, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	cache, db := s.rstmts, s.reader
	if write {
		cache, db = s.wstmts, s.writer
	}
	s.stmtMu.Lock()
	st, ok := cache[query]
	s.stmtMu.Unlock()
	if ok {
		return st, nil
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, s.mapErr(err)
	}
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.closed.Load() {
		st.Close()
		return nil, ErrClosed
	}
	if prev, ok := cache[query]; ok {
		st.Close()
		return prev, nil
	}
	cache[query] = st
	return st, nil
}

// immediateTx runs fn in a BEGIN IMMEDIATE transaction on a connection of
// the write pool, whatever the pool's DSN says: the write lock is taken
// first, so the transaction never has to upgrade a read snapshot (which
// fails at once with SQLITE_BUSY_SNAPSHOT in WAL mode).
func (s *Store) immediateTx(ctx context.Context, fn func(*sql.Conn) error) (err error) {
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		if _, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr != nil &&
			!strings.Contains(rbErr.Error(), "no transaction is active") {
			s.logger.ErrorContext(ctx, "sqlitestore: rollback failed", LogKeyPath, s.name(), LogKeyError, rbErr)
			if !s.singleConn {
				// Never hand a connection that may still be inside a
				// transaction back to the pool.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}
	}()
	if err := fn(conn); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return err
	}
	committed = true
	return nil
}

var dbSystem = attribute.String("db.system.name", "sqlite")

// startSpan starts the span of one store operation. Attributes that cost an
// allocation are set only when the span records.
func (s *Store) startSpan(ctx context.Context, op, typ string, id uuid.UUID) (context.Context, trace.Span) {
	ctx, span := s.tracer.Start(ctx, "sqlitestore."+op, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(dbSystem, attribute.String("db.operation.name", op))
		if typ != "" {
			span.SetAttributes(telemetrykeys.AttrAggregateType.String(typ))
		}
		if id != uuid.Nil {
			span.SetAttributes(telemetrykeys.AttrAggregateID.String(id.String()))
		}
	}
	return ctx, span
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
