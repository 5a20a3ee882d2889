package pgstore

import (
	"bytes"
	"context"
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

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded, rendered schema change.
type migration struct {
	version int
	name    string // file name without the .sql extension
	sql     string
}

// migrationData is what the migration templates see: quoted names only.
type migrationData struct {
	Schema                     string
	Events, Streams, Snapshots table
}

// renderMigrations parses the embedded migrations, checks they are
// numbered 1, 2, 3, ... and renders them with s's quoted names.
func renderMigrations(s *Store) ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	data := migrationData{Schema: s.schemaQ, Events: s.events, Streams: s.streams, Snapshots: s.snapshots}
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
		out = append(out, migration{version: v, name: base, sql: buf.String()})
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
// this store has not applied yet, all in one transaction, recording each in
// the migrations table under the store's table names. It holds a
// transaction-scoped advisory lock on the schema throughout, so concurrent
// migrators (replicas starting together) are safe: one applies, the others
// wait and then find nothing to do. Migrate is idempotent; running it again
// is a no-op. Nothing else in this package creates or alters a table.
//
// The role needs CREATE on the database (only when the schema does not
// exist yet) and on the schema.
func (s *Store) Migrate(ctx context.Context) (err error) {
	ctx, span := s.span(ctx, "pgstore.Migrate", "", uuid.Nil)
	defer func() { endSpan(span, err) }()

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: begin: %w", s.schemaQ, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey); err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: take the migration lock: %w", s.schemaQ, err)
	}
	var schemaExists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)", s.cfg.schema).Scan(&schemaExists); err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: %w", s.schemaQ, err)
	}
	if !schemaExists {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+s.schemaQ); err != nil {
			return fmt.Errorf("pgstore: migrate: create schema %s: %w", s.schemaQ, err)
		}
	}
	pkey, err := s.migrTable.Derived("pkey")
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.migrTable.String()+` (
    tables     text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT `+pkey+` PRIMARY KEY (tables, version)
)`); err != nil {
		return fmt.Errorf("pgstore: migrate: create migrations table %s: %w", s.migrTable, err)
	}
	applied, err := s.appliedMigrations(ctx, tx)
	if err != nil {
		return err
	}
	var done []string
	for _, m := range s.migrations {
		if applied[m.version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("pgstore: apply migration %s to schema %s: %w", m.name, s.schemaQ, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.migrTable.String()+" (tables, version, name) VALUES ($1, $2, $3)",
			s.tablesKey, m.version, m.name); err != nil {
			return fmt.Errorf("pgstore: record migration %s in %s: %w", m.name, s.migrTable, err)
		}
		done = append(done, m.name)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: commit: %w", s.schemaQ, err)
	}
	for _, name := range done {
		s.logger.InfoContext(ctx, "pgstore: applied migration", LogKeySchema, s.cfg.schema, LogKeyTables, s.tablesKey, LogKeyMigration, name)
	}
	return nil
}

func (s *Store) appliedMigrations(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[int]bool, error) {
	rows, err := q.Query(ctx, "SELECT version FROM "+s.migrTable.String()+" WHERE tables = $1", s.tablesKey)
	if err != nil {
		return nil, s.wrap("read applied migrations from "+s.migrTable.String(), err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, s.wrap("read applied migrations from "+s.migrTable.String(), err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	return applied, nil
}

// PendingMigrations returns the names of the embedded migrations that
// [Store.Migrate] would apply, in order; none means the store is ready. It
// changes nothing, so a readiness check or a dry run can call it.
func (s *Store) PendingMigrations(ctx context.Context) ([]string, error) {
	applied, err := s.appliedMigrations(ctx, s.pool)
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
