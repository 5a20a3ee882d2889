package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
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
// embedded migrations the database has not recorded yet, with
// github.com/pressly/goose/v3: each in its own transaction that also
// records it in the migrations table under the store's table names. It is
// idempotent (a second call is a no-op) and safe to run from several
// processes at once: each migration first checks, inside its write
// transaction (BEGIN IMMEDIATE with the DSN [Open] uses), that no other
// migrator recorded it meanwhile, and when one did, Migrate asks goose
// again what is pending. Nothing else ever creates a table.
//
// Before goose runs, Migrate brings the migrations table to goose's layout
// (see [Store.prepareMigrationsTable]), so a database migrated by an
// earlier release, whose runner recorded migrations in another layout,
// upgrades in place.
func (s *Store) Migrate(ctx context.Context) (err error) {
	return s.migrate(ctx, int64(len(migrations)))
}

// migrate is Migrate up to migration upTo (tests put a database at an
// earlier release's schema with it).
func (s *Store) migrate(ctx context.Context, upTo int64) (err error) {
	ctx, span := s.tracer.Start(ctx, "sqlitestore.Migrate")
	defer func() { endSpan(span, err) }()
	if err := s.checkOpen(); err != nil {
		return err
	}
	var applied []*goose.MigrationResult
	defer func() {
		for _, r := range applied {
			m := migrations[r.Source.Version-1]
			s.logger.InfoContext(ctx, "sqlitestore: applied migration", LogKeyPath, s.name(), LogKeyMigration, fmt.Sprintf("%04d_%s", m.version, m.name))
		}
		if err != nil {
			err = fmt.Errorf("sqlitestore: migrate %s: %w", s.name(), s.mapErr(err))
		}
	}()
	if err := s.prepareMigrationsTable(ctx); err != nil {
		return err
	}
	p, err := s.migrationProvider()
	if err != nil {
		return err
	}
	// Each round applies at least one migration or ends, so there are at
	// most as many rounds as migrations.
	for range len(migrations) + 1 {
		results, err := p.UpTo(ctx, upTo)
		var partial *goose.PartialError
		if errors.As(err, &partial) {
			results = partial.Applied
		}
		applied = append(applied, results...)
		if !errors.Is(err, errAppliedMeanwhile) {
			return err
		}
	}
	return errAppliedMeanwhile
}

// errAppliedMeanwhile is what a migration returns when it finds, inside its
// write transaction, that another migrator applied it since goose listed
// what was pending.
var errAppliedMeanwhile = errors.New("another migrator applied the migration meanwhile")

// migrationProvider returns a goose provider of the store's migrations on
// the write pool: Go migrations that run the rendered SQL files, and the
// migrations table through [versionQueries].
func (s *Store) migrationProvider() (*goose.Provider, error) {
	q := s.versionQueries()
	versions, err := database.NewStoreFromQuerier(q.table, q)
	if err != nil {
		return nil, err
	}
	gms, err := s.gooseMigrations(q)
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectCustom, s.writer, nil,
		goose.WithStore(versions),
		goose.WithGoMigrations(gms...),
		goose.WithDisableGlobalRegistry(true),
		// A migration missing below the newest applied one (a database put
		// back by hand, say) is applied, as the runner before goose did.
		goose.WithAllowOutofOrder(true),
		goose.WithLogger(goose.NopLogger()), // Migrate logs what it applied
	)
}

// gooseMigrations returns the embedded migrations, rendered with the
// store's table names, as goose Go migrations. Each runs in the write
// transaction goose opens, and first checks there that no other migrator
// recorded it since goose listed what was pending: if one did, it returns
// errAppliedMeanwhile and changes nothing.
func (s *Store) gooseMigrations(q versionQueries) ([]*goose.Migration, error) {
	data := templateData{Events: s.cfg.events, Snapshots: s.cfg.snapshots, Streams: s.cfg.streams}
	gms := make([]*goose.Migration, len(migrations))
	for i, m := range migrations {
		var b strings.Builder
		if err := m.tmpl.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("render migration %04d_%s: %w", m.version, m.name, err)
		}
		text := b.String()
		gms[i] = goose.NewGoMigration(int64(m.version), &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			var done bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+q.table+` WHERE scope = `+q.key+` AND version_id = ?1 AND is_applied)`,
				m.version).Scan(&done); err != nil {
				return err
			}
			if done {
				return errAppliedMeanwhile
			}
			if _, err := tx.ExecContext(ctx, text); err != nil {
				return fmt.Errorf("apply migration %04d_%s: %w", m.version, m.name, err)
			}
			return nil
		}}, nil)
	}
	return gms, nil
}

// versionQueries returns the goose dialect of the store's migrations
// table.
func (s *Store) versionQueries() versionQueries {
	// Table names are validated identifiers: the key needs no escaping.
	return versionQueries{table: `"` + s.cfg.migrations + `"`, key: "'" + s.scope() + "'"}
}

// versionQueries is the goose dialect (database/dialect.Querier) of the
// migrations table: goose's columns (id, version_id, is_applied, tstamp)
// plus scope, the store's table names, so that stores with different
// tables share one migrations table, each reading and writing only its own
// rows. table is the quoted name and key the scope as an SQL literal.
type versionQueries struct{ table, key string }

// CreateTable creates a table of goose's layout named name (quoted).
func (q versionQueries) CreateTable(name string) string {
	return `CREATE TABLE IF NOT EXISTS ` + name + ` (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    scope      TEXT    NOT NULL,
    version_id INTEGER NOT NULL,
    is_applied INTEGER NOT NULL,
    tstamp     TIMESTAMP DEFAULT (datetime('now'))
)`
}

// InsertVersion records a version (?1) as applied or not (?2).
func (q versionQueries) InsertVersion(string) string {
	return `INSERT INTO ` + q.table + ` (scope, version_id, is_applied) VALUES (` + q.key + `, ?1, ?2)`
}

// DeleteVersion forgets a version.
func (q versionQueries) DeleteVersion(string) string {
	return `DELETE FROM ` + q.table + ` WHERE scope = ` + q.key + ` AND version_id = ?1`
}

// GetMigrationByVersion reads the latest record of a version.
func (q versionQueries) GetMigrationByVersion(string) string {
	return `SELECT tstamp, is_applied FROM ` + q.table + ` WHERE scope = ` + q.key + ` AND version_id = ?1 ORDER BY tstamp DESC LIMIT 1`
}

// ListMigrations lists the records, newest first.
func (q versionQueries) ListMigrations(string) string {
	return `SELECT version_id, is_applied FROM ` + q.table + ` WHERE scope = ` + q.key + ` ORDER BY id DESC`
}

// GetLatestVersion reads the highest recorded version.
func (q versionQueries) GetLatestVersion(string) string {
	return `SELECT max(version_id) FROM ` + q.table + ` WHERE scope = ` + q.key
}

// TableExists says whether the migrations table exists.
func (q versionQueries) TableExists(string) string {
	return `SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '` + strings.Trim(q.table, `"`) + `')`
}

// prepareMigrationsTable readies the migrations table for goose, in one
// BEGIN IMMEDIATE transaction (so migrators in other processes wait for it,
// and it for them):
//
//   - it creates the table, or rebuilds the layout that releases before
//     goose wrote, (scope, version, name, applied_at) keyed by (scope,
//     version), as goose's, keeping every record;
//   - it records version 0 for the store's tables, as goose does when it
//     creates its table (goose refuses to run without it).
//
// It changes nothing when all of that is done already.
func (s *Store) prepareMigrationsTable(ctx context.Context) error {
	q := s.versionQueries()
	return s.immediateTx(ctx, func(conn *sql.Conn) error {
		var legacy bool
		if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = 'name')`,
			s.cfg.migrations).Scan(&legacy); err != nil {
			return err
		}
		if legacy {
			tmp := `"` + s.cfg.migrations + `_goose"`
			if _, err := conn.ExecContext(ctx, q.CreateTable(tmp)+`;
INSERT INTO `+tmp+` (scope, version_id, is_applied, tstamp)
    SELECT scope, 0, 1, datetime(min(applied_at) / 1000000, 'unixepoch') FROM `+q.table+` GROUP BY scope;
INSERT INTO `+tmp+` (scope, version_id, is_applied, tstamp)
    SELECT scope, version, 1, datetime(applied_at / 1000000, 'unixepoch') FROM `+q.table+` ORDER BY scope, version;
DROP TABLE `+q.table+`;
ALTER TABLE `+tmp+` RENAME TO `+q.table); err != nil {
				return fmt.Errorf("convert migrations table %s to goose's layout: %w", s.cfg.migrations, err)
			}
			s.logger.InfoContext(ctx, "sqlitestore: converted the migrations table to goose's layout", LogKeyPath, s.name())
		}
		if _, err := conn.ExecContext(ctx, q.CreateTable(q.table)+`;
INSERT INTO `+q.table+` (scope, version_id, is_applied)
    SELECT `+q.key+`, 0, 1 WHERE NOT EXISTS (SELECT 1 FROM `+q.table+` WHERE scope = `+q.key+`)`); err != nil {
			return fmt.Errorf("create migrations table %s: %w", s.cfg.migrations, err)
		}
		return nil
	})
}
