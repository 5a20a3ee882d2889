package pgstore

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded, rendered schema change.
type migration struct {
	version int
	name    string // file name without the .sql extension
	sql     string
	// noTx marks a migration that runs outside a transaction, statement
	// by statement (its file starts with goose's "-- +goose NO
	// TRANSACTION" line): one that builds an index CONCURRENTLY, say.
	noTx bool
}

// noTxAnnotation is the first line of a migration that runs outside a
// transaction, as goose writes it.
const noTxAnnotation = "-- +goose NO TRANSACTION"

// migrationData is what the migration templates see: quoted names only.
type migrationData struct {
	Schema                     string
	Events, Streams, Snapshots table
	SweepMarks                 table
}

// renderMigrations parses the embedded migrations, checks they are
// numbered 1, 2, 3, ... and renders them with s's quoted names.
func renderMigrations(s *Store) ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	data := migrationData{Schema: s.schemaQ, Events: s.events, Streams: s.streams, Snapshots: s.snapshots, SweepMarks: s.marks}
	out := make([]migration, 0, len(names))
	for i, file := range names {
		base := strings.TrimSuffix(path.Base(file), ".sql")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v != i+1 {
			return nil, fmt.Errorf("pgstore: embedded migration %s: want a name starting %03d_", file, i+1)
		}
		src, err := migrationFiles.ReadFile(file)
		if err != nil {
			return nil, err
		}
		tmpl, err := template.New(base).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("pgstore: embedded migration %s: %w", file, err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("pgstore: render migration %s: %w", file, err)
		}
		out = append(out, migration{version: v, name: base, sql: buf.String(), noTx: strings.HasPrefix(string(src), noTxAnnotation+"\n")})
	}
	return out, nil
}

// migrationLockKey is the pg_advisory_xact_lock key that serializes the
// migrations of one schema: a hash of the schema name, so migrators of
// other schemas never wait for each other.
func migrationLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("evsnap/pgstore/migrate:" + schema))
	return int64(h.Sum64())
}

// Migrate creates the schema if needed and applies the embedded migrations
// this store has not applied yet, with github.com/pressly/goose/v3: each
// in its own transaction that also records it in the migrations table
// under the store's table names. Concurrent migrators (replicas starting
// together) are safe: goose holds a session-level advisory lock on a key
// derived from the schema name while it migrates, so one applies and the
// others wait and then find nothing to do. Migrate is idempotent; running
// it again is a no-op. Nothing else in this package creates or alters a
// table.
//
// Before goose runs, Migrate brings the migrations table to goose's
// layout under the same lock (see [Store.prepareMigrationsTable]), so a
// schema migrated by an earlier release, whose runner recorded migrations
// in another layout, upgrades in place.
//
// The role needs CREATE on the database (only when the schema does not
// exist yet) and on the schema.
func (s *Store) Migrate(ctx context.Context) (err error) {
	return s.migrate(ctx, int64(len(s.migrations)))
}

// migrate is Migrate up to migration upTo (tests put a schema at an
// earlier release's layout with it).
func (s *Store) migrate(ctx context.Context, upTo int64) (err error) {
	ctx, span := s.span(ctx, "pgstore.Migrate", "", uuid.Nil)
	defer func() { endSpan(span, err) }()

	if err := s.prepareMigrationsTable(ctx); err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := s.migrationProvider(db)
	if err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: %w", s.schemaQ, err)
	}
	results, err := p.UpTo(ctx, upTo)
	var partial *goose.PartialError
	if errors.As(err, &partial) {
		results = partial.Applied
	}
	for _, r := range results {
		s.logger.InfoContext(ctx, "pgstore: applied migration", LogKeySchema, s.cfg.schema, LogKeyTables, s.tablesKey,
			LogKeyMigration, s.migrationName(r.Source.Version))
	}
	if err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: %w", s.schemaQ, err)
	}
	return nil
}

// migrationProvider returns a goose provider of the store's migrations on
// db: Go migrations that run the rendered SQL files, the migrations table
// through [versionQueries], and goose's PostgreSQL session locker on the
// schema's lock key, polled every second for up to 15 minutes.
func (s *Store) migrationProvider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(s.lockKey), lock.WithLockTimeout(1, 900))
	if err != nil {
		return nil, err
	}
	q, err := s.versionQueries()
	if err != nil {
		return nil, err
	}
	versions, err := database.NewStoreFromQuerier(s.migrTable.String(), q)
	if err != nil {
		return nil, err
	}
	gms := make([]*goose.Migration, len(s.migrations))
	for i, m := range s.migrations {
		run := &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			return nil
		}}
		if m.noTx {
			run = &goose.GoFunc{RunDB: func(ctx context.Context, db *sql.DB) error {
				for i, stmt := range splitStatements(m.sql) {
					if _, err := db.ExecContext(ctx, stmt); err != nil {
						return fmt.Errorf("apply migration %s, statement %d: %w", m.name, i+1, err)
					}
				}
				return nil
			}}
		}
		gms[i] = goose.NewGoMigration(int64(m.version), run, nil)
	}
	return goose.NewProvider(goose.DialectCustom, db, nil,
		goose.WithStore(versions),
		goose.WithSessionLocker(locker),
		goose.WithGoMigrations(gms...),
		goose.WithDisableGlobalRegistry(true),
		// A migration missing below the newest applied one (a schema put
		// back by hand, say) is applied, as the runner before goose did.
		goose.WithAllowOutofOrder(true),
		goose.WithLogger(goose.NopLogger()), // Migrate logs what it applied
	)
}

// splitStatements splits a migration that runs outside a transaction into
// its statements, each sent on its own (PostgreSQL runs the statements of
// one query string in one implicit transaction, where CREATE INDEX
// CONCURRENTLY cannot run). A statement ends with a semicolon at the end
// of a line; lines starting with "--" are comments. (The embedded
// migrations hold no semicolon at a line's end inside a string.)
func splitStatements(text string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(text) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		out = append(out, rest)
	}
	return out
}

// migrationName returns the name of the embedded migration numbered v.
func (s *Store) migrationName(v int64) string {
	for _, m := range s.migrations {
		if int64(m.version) == v {
			return m.name
		}
	}
	return strconv.FormatInt(v, 10)
}

// versionQueries returns the goose dialect of the store's migrations
// table.
func (s *Store) versionQueries() (versionQueries, error) {
	pkey, err := s.migrTable.Derived("pkey")
	if err != nil {
		return versionQueries{}, err
	}
	// The key is made of validated names ([a-z0-9_] and commas): it needs
	// no escaping inside quotes.
	return versionQueries{table: s.migrTable.String(), pkey: pkey, key: "'" + s.tablesKey + "'"}, nil
}

// versionQueries is the goose dialect (database/dialect.Querier) of the
// migrations table: goose's columns (id, version_id, is_applied, tstamp)
// plus tables, the store's table names, so that stores with different
// tables share one migrations table, each reading and writing only its own
// rows. table is the quoted, schema-qualified name, pkey the quoted name
// of its primary key and key the tables column's value as an SQL literal;
// goose's table name argument is unused.
type versionQueries struct{ table, pkey, key string }

// CreateTable creates the migrations table in goose's layout.
func (q versionQueries) CreateTable(string) string {
	return `CREATE TABLE IF NOT EXISTS ` + q.table + ` (
    id         bigint      GENERATED BY DEFAULT AS IDENTITY,
    tables     text        NOT NULL,
    version_id bigint      NOT NULL,
    is_applied boolean     NOT NULL,
    tstamp     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ` + q.pkey + ` PRIMARY KEY (id)
)`
}

// InsertVersion records a version ($1) as applied or not ($2).
func (q versionQueries) InsertVersion(string) string {
	return `INSERT INTO ` + q.table + ` (tables, version_id, is_applied) VALUES (` + q.key + `, $1, $2)`
}

// DeleteVersion forgets a version.
func (q versionQueries) DeleteVersion(string) string {
	return `DELETE FROM ` + q.table + ` WHERE tables = ` + q.key + ` AND version_id = $1`
}

// GetMigrationByVersion reads the latest record of a version.
func (q versionQueries) GetMigrationByVersion(string) string {
	return `SELECT tstamp, is_applied FROM ` + q.table + ` WHERE tables = ` + q.key + ` AND version_id = $1 ORDER BY tstamp DESC LIMIT 1`
}

// ListMigrations lists the records, newest first.
func (q versionQueries) ListMigrations(string) string {
	return `SELECT version_id, is_applied FROM ` + q.table + ` WHERE tables = ` + q.key + ` ORDER BY id DESC`
}

// GetLatestVersion reads the highest recorded version.
func (q versionQueries) GetLatestVersion(string) string {
	return `SELECT max(version_id) FROM ` + q.table + ` WHERE tables = ` + q.key
}

// TableExists says whether the migrations table exists.
func (q versionQueries) TableExists(string) string {
	return `SELECT to_regclass('` + q.table + `') IS NOT NULL`
}

// lockedTx begins a transaction that holds pg_advisory_xact_lock on the
// schema's lock key. It never waits for the lock inside a statement: it
// tries (pg_try_advisory_xact_lock), and while another migrator holds the
// lock it rolls back and tries again after a pause, up to 15 minutes (as
// goose's session locker does). A transaction blocked on the lock would
// hold a snapshot, and CREATE INDEX CONCURRENTLY (migration 4), run by
// the migrator that holds the lock, waits for every older snapshot in the
// database: the two would wait for each other for ever.
func (s *Store) lockedTx(ctx context.Context) (pgx.Tx, error) {
	pause := 20 * time.Millisecond
	for deadline := time.Now().Add(15 * time.Minute); ; {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("pgstore: migrate schema %s: begin: %w", s.schemaQ, err)
		}
		var locked bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", s.lockKey).Scan(&locked); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("pgstore: migrate schema %s: take the migration lock: %w", s.schemaQ, err)
		}
		if locked {
			return tx, nil
		}
		_ = tx.Rollback(context.WithoutCancel(ctx))
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pgstore: migrate schema %s: another migrator has held the migration lock for 15 minutes", s.schemaQ)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pgstore: migrate schema %s: waiting for the migration lock: %w", s.schemaQ, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// prepareMigrationsTable readies the schema and the migrations table for
// goose, in one transaction holding pg_advisory_xact_lock on the schema's
// lock key (the key goose's session lock takes, so it waits for, and holds
// off, migrators of this release and of earlier ones alike):
//
//   - it creates the schema if it does not exist;
//   - it creates the migrations table, or converts the layout that
//     releases before goose wrote, (tables, version, name, applied_at)
//     keyed by (tables, version), to goose's in place, keeping every
//     record and the table's grants;
//   - it records version 0 for the store's tables, as goose does when it
//     creates its table (goose refuses to run without it).
//
// It changes nothing when all of that is done already.
func (s *Store) prepareMigrationsTable(ctx context.Context) error {
	q, err := s.versionQueries()
	if err != nil {
		return err
	}
	tx, err := s.lockedTx(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var schemaExists, tableExists, legacy bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1),
       to_regclass($2) IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass($2) AND attname = 'name' AND NOT attisdropped)`,
		s.cfg.schema, s.migrTable.String()).Scan(&schemaExists, &tableExists, &legacy); err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: %w", s.schemaQ, err)
	}
	if !schemaExists {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+s.schemaQ); err != nil {
			return fmt.Errorf("pgstore: migrate: create schema %s: %w", s.schemaQ, err)
		}
	}
	switch {
	case !tableExists:
		if _, err := tx.Exec(ctx, q.CreateTable("")); err != nil {
			return fmt.Errorf("pgstore: migrate: create migrations table %s: %w", s.migrTable, err)
		}
	case legacy:
		t, pkey := q.table, q.pkey
		if _, err := tx.Exec(ctx, `ALTER TABLE `+t+` DROP CONSTRAINT `+pkey+`;
ALTER TABLE `+t+` RENAME COLUMN version TO version_id;
ALTER TABLE `+t+` ALTER COLUMN version_id TYPE bigint;
ALTER TABLE `+t+` RENAME COLUMN applied_at TO tstamp;
ALTER TABLE `+t+` DROP COLUMN name;
ALTER TABLE `+t+` ADD COLUMN is_applied boolean NOT NULL DEFAULT true;
ALTER TABLE `+t+` ADD COLUMN id bigint GENERATED BY DEFAULT AS IDENTITY;
ALTER TABLE `+t+` ADD CONSTRAINT `+pkey+` PRIMARY KEY (id);
INSERT INTO `+t+` (tables, version_id, is_applied, tstamp) SELECT tables, 0, true, min(tstamp) FROM `+t+` GROUP BY tables`); err != nil {
			return fmt.Errorf("pgstore: migrate: convert migrations table %s to goose's layout: %w", s.migrTable, err)
		}
		s.logger.InfoContext(ctx, "pgstore: converted the migrations table to goose's layout", LogKeySchema, s.cfg.schema, LogKeyTables, s.tablesKey)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+q.table+` (tables, version_id, is_applied)
SELECT `+q.key+`, 0, true WHERE NOT EXISTS (SELECT 1 FROM `+q.table+` WHERE tables = `+q.key+`)`); err != nil {
		return fmt.Errorf("pgstore: migrate: record version 0 in %s: %w", s.migrTable, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: commit: %w", s.schemaQ, err)
	}
	return nil
}

// appliedMigrations returns the versions recorded as applied for the
// store's tables, in either layout of the migrations table; it changes
// nothing.
func (s *Store) appliedMigrations(ctx context.Context) (map[int]bool, error) {
	t := s.migrTable.String()
	rows, err := s.pool.Query(ctx, "SELECT version_id FROM "+t+" WHERE tables = $1 AND is_applied", s.tablesKey)
	if err == nil {
		var versions []int64
		if versions, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err == nil {
			return versionSet(versions), nil
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedColumn {
		// The layout of the runner before goose, until Migrate converts it.
		rows, err = s.pool.Query(ctx, "SELECT version::bigint FROM "+t+" WHERE tables = $1", s.tablesKey)
		if err == nil {
			var versions []int64
			if versions, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err == nil {
				return versionSet(versions), nil
			}
		}
	}
	return nil, s.wrap("read applied migrations from "+t, err)
}

func versionSet(versions []int64) map[int]bool {
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	return applied
}

// PendingMigrations returns the names of the embedded migrations that
// [Store.Migrate] would apply, in order; none means the store is ready. It
// changes nothing, so a readiness check or a dry run can call it.
func (s *Store) PendingMigrations(ctx context.Context) ([]string, error) {
	applied, err := s.appliedMigrations(ctx)
	if errors.Is(err, ErrNotMigrated) {
		applied, err = nil, nil // no migrations table: nothing applied
	}
	if err != nil {
		return nil, err
	}
	var pending []string
	for _, m := range s.migrations {
		if !applied[m.version] {
			pending = append(pending, m.name)
		}
	}
	return pending, nil
}

// CheckMigrated returns nil when every embedded migration is applied, and
// otherwise an error matching [ErrNotMigrated] that names the pending ones.
func (s *Store) CheckMigrated(ctx context.Context) error {
	pending, err := s.PendingMigrations(ctx)
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		return fmt.Errorf("%w: schema %s lacks migrations %s: run Store.Migrate (the snapshotter's migrate command)",
			ErrNotMigrated, s.schemaQ, strings.Join(pending, ", "))
	}
	return nil
}
