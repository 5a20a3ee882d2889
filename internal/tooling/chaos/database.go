package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/pgurl"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Application names the suite gives its PostgreSQL connections, so it can
// find (and terminate) exactly the workers' connections.
const (
	appWorkerPrefix = "evsnap-chaos-worker-"
	appLoad         = "evsnap-chaos-load"
	appControl      = "evsnap-chaos-control"
	appAdmin        = "evsnap-chaos-admin"
	appHistory      = "evsnap-chaos-history"
)

// database is the run's own PostgreSQL database.
type database struct {
	base *url.URL // the server's URL, any database
	name string
	ctl  *pgxpool.Pool // the suite's connections to the chaos database
}

// dbURL returns the URL of the chaos database for a connection named app.
func (d *database) dbURL(app string) string {
	u := *d.base
	u.Path = "/" + d.name
	return pgurl.WithAppName(u.String(), app)
}

func (d *database) ident() string { return pgx.Identifier{d.name}.Sanitize() }

// createDatabase creates evsnap_chaos_<random> on the server of baseURL.
func createDatabase(ctx context.Context, baseURL string) (*database, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return nil, fmt.Errorf("PostgreSQL URL %q: want a URL such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable", pgstore.RedactDSN(baseURL))
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	d := &database{base: u, name: "evsnap_chaos_" + hex.EncodeToString(b[:])}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, pgurl.WithAppName(baseURL, appAdmin))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", pgstore.RedactDSN(baseURL), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+d.ident()); err != nil {
		return nil, fmt.Errorf("create database %s: %w", d.name, err)
	}
	return d, nil
}

// drop closes the control connection and drops the database, terminating
// whatever is still connected to it (and only to it).
func (d *database) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if d.ctl != nil {
		d.ctl.Close()
		d.ctl = nil
	}
	conn, err := pgx.Connect(ctx, pgurl.WithAppName(d.base.String(), appAdmin))
	if err != nil {
		return fmt.Errorf("drop database %s: connect: %w", d.name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.ident()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

func (d *database) connect(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(d.dbURL(appControl))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", d.name, err)
	}
	cfg.MaxConns = 4
	// Check every connection before use: after a PostgreSQL restart the
	// pooled ones are dead, and the suite's queries must not fail on them.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	pool, err := pgxpool.NewWithConfig(cctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", d.name, err)
	}
	if err := pool.Ping(cctx); err != nil {
		pool.Close()
		return fmt.Errorf("connect to %s: %w", d.name, err)
	}
	d.ctl = pool
	return nil
}

// auditDDL records every snapshot row version written: a row per insert,
// update and delete, numbered by a sequence drawn inside the trigger, that
// is while the writer holds the row's lock, so per aggregate the numbers
// are the write order. An aborted write leaves no audit row.
const auditDDL = `
CREATE TABLE chaos_snapshot_audit (
    seq                bigserial   PRIMARY KEY,
    op                 char(1)     NOT NULL,
    aggregate_type     text        NOT NULL,
    aggregate_id       uuid        NOT NULL,
    version            bigint      NOT NULL,
    schema_version     integer     NOT NULL,
    old_version        bigint,
    old_schema_version integer,
    state_md5          text,
    txid               bigint      NOT NULL DEFAULT txid_current(),
    writer             text        NOT NULL DEFAULT current_setting('application_name'),
    written_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION chaos_snapshot_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO chaos_snapshot_audit (op, aggregate_type, aggregate_id, version, schema_version, old_version, old_schema_version)
        VALUES ('D', OLD.aggregate_type, OLD.aggregate_id, OLD.version, OLD.schema_version, OLD.version, OLD.schema_version);
        RETURN OLD;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO chaos_snapshot_audit (op, aggregate_type, aggregate_id, version, schema_version, old_version, old_schema_version, state_md5)
        VALUES ('U', NEW.aggregate_type, NEW.aggregate_id, NEW.version, NEW.schema_version, OLD.version, OLD.schema_version, md5(NEW.state::text));
    ELSE
        INSERT INTO chaos_snapshot_audit (op, aggregate_type, aggregate_id, version, schema_version, state_md5)
        VALUES ('I', NEW.aggregate_type, NEW.aggregate_id, NEW.version, NEW.schema_version, md5(NEW.state::text));
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER chaos_snapshot_audit
    AFTER INSERT OR UPDATE OR DELETE ON snapshots
    FOR EACH ROW EXECUTE FUNCTION chaos_snapshot_audit();
`

func (d *database) installAudit(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := d.ctl.Exec(cctx, auditDDL); err != nil {
		return fmt.Errorf("install the snapshot audit trigger: %w", err)
	}
	return nil
}

// terminateWorkers terminates every backend of the chaos database whose
// application name marks it as a worker's, and returns how many.
func (d *database) terminateWorkers(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var n int
	err := d.ctl.QueryRow(cctx, `
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE datname = $1 AND application_name LIKE $2 AND pid <> pg_backend_pid()`,
		d.name, appWorkerPrefix+"%").Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pg_terminate_backend: %w", err)
	}
	return n, nil
}

// storedStreams reads every event version and every streams row (but
// the history clients' registers: no load records them).
func (d *database) storedStreams(ctx context.Context) (map[StreamKey]StoredStream, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out := map[StreamKey]StoredStream{}
	rows, err := d.ctl.Query(cctx, `SELECT aggregate_type, aggregate_id::text, version FROM events WHERE aggregate_type <> $1`, historyType)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	var k StreamKey
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&k.Type, &k.ID, &v}, func() error {
		s := out[k]
		s.Versions = append(s.Versions, v)
		out[k] = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	rows, err = d.ctl.Query(cctx, `SELECT aggregate_type, aggregate_id::text, version FROM streams WHERE aggregate_type <> $1`, historyType)
	if err != nil {
		return nil, fmt.Errorf("read streams: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&k.Type, &k.ID, &v}, func() error {
		s := out[k]
		s.Head = v
		out[k] = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read streams: %w", err)
	}
	return out, nil
}

// auditRows reads the audit table.
func (d *database) auditRows(ctx context.Context) ([]AuditRow, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rows, err := d.ctl.Query(cctx, `
SELECT seq, op, aggregate_type, aggregate_id::text, version, schema_version,
       coalesce(old_version, -1), coalesce(old_schema_version, -1), coalesce(state_md5, ''), txid, writer, written_at
FROM chaos_snapshot_audit ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read the audit table: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditRow, error) {
		var r AuditRow
		var oldSchema int32
		var schema int32
		err := row.Scan(&r.Seq, &r.Op, &r.Type, &r.ID, &r.Version, &schema, &r.OldVersion, &oldSchema, &r.StateMD5, &r.TxID, &r.Writer, &r.At)
		r.SchemaVersion, r.OldSchemaVersion = int(schema), int(oldSchema)
		r.Op = strings.TrimSpace(r.Op)
		return r, err
	})
}

// snapshotRow is a row of the snapshots table.
type snapshotRow struct {
	Version       int64
	SchemaVersion int
	StateMD5      string
}

// snapshots reads the snapshots table, a row per aggregate and schema
// version.
func (d *database) snapshots(ctx context.Context) (map[RowKey]snapshotRow, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rows, err := d.ctl.Query(cctx, `SELECT aggregate_type, aggregate_id::text, version, schema_version, md5(state::text) FROM snapshots`)
	if err != nil {
		return nil, fmt.Errorf("read snapshots: %w", err)
	}
	out := map[RowKey]snapshotRow{}
	var k StreamKey
	var s snapshotRow
	var schema int32
	_, err = pgx.ForEachRow(rows, []any{&k.Type, &k.ID, &s.Version, &schema, &s.StateMD5}, func() error {
		s.SchemaVersion = int(schema)
		out[RowKey{k.Type, k.ID, s.SchemaVersion}] = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read snapshots: %w", err)
	}
	return out, nil
}

// lag is one aggregate's distance from its snapshot.
type lag struct {
	Key             StreamKey
	Head, Snapshot  int64
	SnapshotSchema  int
	Behind          int64
	NeedsThreshold  int
	WithinThreshold bool
}

// lags reads every aggregate's head and the version of its snapshot of
// schema version schemas[type] (1 for a type not in schemas): the row
// the workers of that schema version keep.
func (d *database) lags(ctx context.Context, thresholds map[string]int, schemas map[string]int) ([]lag, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var types []string
	var versions []int32
	for t, v := range schemas {
		types, versions = append(types, t), append(versions, int32(v))
	}
	rows, err := d.ctl.Query(cctx, `
SELECT st.aggregate_type, st.aggregate_id::text, st.version, coalesce(sn.version, 0), coalesce(sn.schema_version, 0)
FROM streams st LEFT JOIN snapshots sn ON sn.aggregate_id = st.aggregate_id AND sn.aggregate_type = st.aggregate_type
	AND sn.schema_version = coalesce((SELECT w.v FROM unnest($1::text[], $2::int[]) AS w(t, v) WHERE w.t = st.aggregate_type), 1)
WHERE st.aggregate_type <> $3`, types, versions, historyType)
	if err != nil {
		return nil, fmt.Errorf("read lags: %w", err)
	}
	var out []lag
	var l lag
	var schema int32
	_, err = pgx.ForEachRow(rows, []any{&l.Key.Type, &l.Key.ID, &l.Head, &l.Snapshot, &schema}, func() error {
		l.SnapshotSchema = int(schema)
		snap := l.Snapshot
		if want, ok := schemas[l.Key.Type]; ok && l.SnapshotSchema != want {
			snap = 0
		}
		l.Behind = max(l.Head-snap, 0)
		l.NeedsThreshold = thresholds[l.Key.Type]
		l.WithinThreshold = l.NeedsThreshold > 0 && l.Behind < int64(l.NeedsThreshold)
		out = append(out, l)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read lags: %w", err)
	}
	return out, nil
}

// accountsWithSnapshot returns the ids of the Accounts that have a
// snapshot of schema version schema.
func (d *database) accountsWithSnapshot(ctx context.Context, schema int) (map[string]bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rows, err := d.ctl.Query(cctx, `SELECT aggregate_id::text FROM snapshots WHERE aggregate_type = $1 AND schema_version = $2`,
		exampledomain.AccountType, int32(schema))
	if err != nil {
		return nil, fmt.Errorf("read the Accounts with a schema %d snapshot: %w", schema, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the Accounts with a schema %d snapshot: %w", schema, err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// milestoneMisses counts orders whose latest milestone event is above
// the version of their snapshot of schema version schema.
func (d *database) milestoneMisses(ctx context.Context, typ string, schema int, milestones []string) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var n int
	err := d.ctl.QueryRow(cctx, `
SELECT count(*) FROM (
    SELECT aggregate_id, max(version) AS v FROM events
    WHERE aggregate_type = $1 AND event_type = ANY($2)
    GROUP BY aggregate_id
) m LEFT JOIN snapshots sn ON sn.aggregate_id = m.aggregate_id AND sn.aggregate_type = $1 AND sn.schema_version = $3
WHERE coalesce(sn.version, 0) < m.v`, typ, milestones, int32(schema)).Scan(&n)
	return n, err
}

// sabotage damages the stores on purpose, to show that the checks catch
// it: it moves one Account snapshot back one version (a regression, and
// most likely a mismatch with the replay) and deletes the newest event of
// another Account (a lost event and a streams row that disagrees).
func (d *database) sabotage(ctx context.Context) ([]string, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var done []string
	var id string
	var v int64
	err := d.ctl.QueryRow(cctx, `
UPDATE snapshots SET version = version - 1
WHERE (aggregate_id, aggregate_type, schema_version) = (
    SELECT aggregate_id, aggregate_type, schema_version FROM snapshots
    WHERE aggregate_type = 'Account' AND schema_version = 1 AND version > 1 ORDER BY aggregate_id LIMIT 1)
RETURNING aggregate_id::text, version`).Scan(&id, &v)
	if err != nil {
		return done, fmt.Errorf("sabotage a snapshot: %w", err)
	}
	done = append(done, fmt.Sprintf("moved the snapshot of Account %s back to v%d", id, v))
	err = d.ctl.QueryRow(cctx, `
DELETE FROM events WHERE position = (
    SELECT position FROM events WHERE aggregate_type = 'Account' AND aggregate_id <> $1::uuid
    ORDER BY aggregate_id DESC, version DESC LIMIT 1)
RETURNING aggregate_id::text, version`, id).Scan(&id, &v)
	if err != nil {
		return done, fmt.Errorf("sabotage an event: %w", err)
	}
	done = append(done, fmt.Sprintf("deleted event v%d of Account %s", v, id))
	return done, nil
}
