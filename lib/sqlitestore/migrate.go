package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one embedded, numbered schema change.
type migration struct {
	version int
	name    string
	tmpl    *template.Template
}

// migrations are the embedded migrations in version order, parsed once.
// Their file names are NNNN_name.sql; versions start at 1 and have no gaps.
var migrations = mustLoadMigrations(migrationFS)

func mustLoadMigrations(fsys fs.FS) []migration {
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, f := range files {
		base := path.Base(f)
		num, name, ok := strings.Cut(strings.TrimSuffix(base, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			panic(fmt.Sprintf("sqlitestore: migration file %s is not named NNNN_name.sql", base))
		}
		text, err := fs.ReadFile(fsys, f)
		if err != nil {
			panic(err)
		}
		t := template.Must(template.New(base).Option("missingkey=error").Parse(string(text)))
		out = append(out, migration{version: v, name: name, tmpl: t})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			panic(fmt.Sprintf("sqlitestore: migrations must be numbered 1, 2, ... without gaps; found %d at position %d", m.version, i+1))
		}
	}
	return out
}

// templateData is all a migration template may reference: validated
// identifiers, never caller input.
type templateData struct {
	Events, Snapshots, Streams string
}

// scope is the key under which the store's migrations are recorded, so
// stores with different tables can share a database and a migrations table.
func (s *Store) scope() string {
	return "events=" + s.cfg.events + ",snapshots=" + s.cfg.snapshots + ",streams=" + s.cfg.streams
}

// SchemaVersion is the number of the newest migration this build of the
// package knows: what [Store.Migrate] brings a database to.
func SchemaVersion() int { return len(migrations) }

// Migrate creates or upgrades the store's tables by applying, in order, the
// embedded migrations the database has not recorded yet, all in one BEGIN
// IMMEDIATE transaction: either every pending migration is applied and
// recorded in the migrations table, or none is. It is idempotent (a second
// call is a no-op) and safe to run from several processes at once (they
// serialize on SQLite's write lock; the later ones find nothing to do).
// Nothing else ever creates a table.
func (s *Store) Migrate(ctx context.Context) (err error) {
	ctx, span := s.tracer.Start(ctx, "sqlitestore.Migrate")
	defer func() { endSpan(span, err) }()
	if err := s.checkOpen(); err != nil {
		return err
	}
	data := templateData{Events: s.cfg.events, Snapshots: s.cfg.snapshots, Streams: s.cfg.streams}
	mt := `"` + s.cfg.migrations + `"`
	scope := s.scope()
	var applied []migration
	err = s.immediateTx(ctx, func(conn *sql.Conn) error {
		if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+mt+` (
    scope      TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (scope, version)
) STRICT`); err != nil {
			return fmt.Errorf("create migrations table %s: %w", s.cfg.migrations, err)
		}
		done := map[int]bool{}
		rows, err := conn.QueryContext(ctx, `SELECT version FROM `+mt+` WHERE scope = ?1`, scope)
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return err
			}
			done[v] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for v := range done {
			if v > len(migrations) {
				s.logger.WarnContext(ctx, "sqlitestore: the database has a migration newer than this build knows; leaving it as it is",
					LogKeyPath, s.name(), LogKeyVersion, v, "known", len(migrations))
			}
		}
		for _, m := range migrations {
			if done[m.version] {
				continue
			}
			var b strings.Builder
			if err := m.tmpl.Execute(&b, data); err != nil {
				return fmt.Errorf("render migration %04d_%s: %w", m.version, m.name, err)
			}
			if _, err := conn.ExecContext(ctx, b.String()); err != nil {
				return fmt.Errorf("apply migration %04d_%s: %w", m.version, m.name, err)
			}
			if _, err := conn.ExecContext(ctx, `INSERT INTO `+mt+` (scope, version, name, applied_at) VALUES (?1, ?2, ?3, ?4)`,
				scope, m.version, m.name, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("record migration %04d_%s: %w", m.version, m.name, err)
			}
			applied = append(applied, m)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: migrate %s: %w", s.name(), s.mapErr(err))
	}
	for _, m := range applied {
		s.logger.InfoContext(ctx, "sqlitestore: applied migration", LogKeyPath, s.name(), LogKeyMigration, fmt.Sprintf("%04d_%s", m.version, m.name))
	}
	return nil
}
