package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// The statements of the release before migration 4 that name the
// snapshots table's key, as that release runs them (with the table's
// name in place of %s): one row per aggregate, keyed by (aggregate_id,
// aggregate_type).
const (
	previousSaveSnapshot = `INSERT INTO %s AS s (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE
SET version = excluded.version, schema_version = excluded.schema_version, state = excluded.state, created_at = excluded.created_at,
	event_id = excluded.event_id
WHERE excluded.version >= s.version AND excluded.schema_version >= s.schema_version`
	previousGetSnapshot = `SELECT version, schema_version, state, created_at, event_id FROM %s WHERE aggregate_id = $1 AND aggregate_type = $2`
	previousLoadEvents  = `SELECT event_id, version FROM %s
WHERE aggregate_type = $1 AND aggregate_id = $2 AND version >= coalesce(
	(SELECT CASE WHEN schema_version = $3 THEN version END FROM %s WHERE aggregate_id = $2 AND aggregate_type = $1), 1)
ORDER BY version LIMIT 1000`
)

// TestMigrationFourKeepsEverySnapshot: a schema at migration 3 (the
// previous release's layout) holding events and snapshots of several
// schema versions, written by that release's upsert, moves to migration 4
// while appends, loads and the previous release's snapshot writes go on
// (no statement of them fails until the key swaps; reads never do). Every
// snapshot is then read by a load of its own schema version, as the row of
// that schema version, and by no other; the primary key is (aggregate_id,
// aggregate_type, schema_version); the store keeps a row per schema
// version. A leftover index of a failed earlier run is replaced, and
// running migration 4 again changes nothing.
//
// It also checks what decision 28 says of a binary of the previous release
// still running against the migrated schema: its upsert no longer finds
// its conflict target (an error its repositories log and count; a save
// never fails), its snapshot read still works, and its load's snapshot
// lookup fails (a fallback to a full replay) only for an aggregate that
// has rows of two schema versions.
func TestMigrationFourKeepsEverySnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, pool := newStoreAt(t, 3)
	snapshots, events := qualified(st, "snapshots"), qualified(st, "events")
	oldSave := fmt.Sprintf(previousSaveSnapshot, snapshots)
	type stored struct {
		id      uuid.UUID
		version int64
		schema  int
		eventID uuid.UUID
	}
	var snaps []stored
	for i, sv := range []int{1, 1, 2, 3} {
		id := uuid.New()
		evs := newEvents(6, 0)
		if _, err := st.Append(ctx, "M4", id, eventsource.NoStream, evs); err != nil {
			t.Fatal(err)
		}
		v := int64(3 + i%2)
		snaps = append(snaps, stored{id, v, sv, evs[v-1].ID})
		if _, err := pool.Exec(ctx, oldSave, id, "M4", v, int32(sv), []byte(fmt.Sprintf(`{"v": %d}`, v)), time.Now(), evs[v-1].ID); err != nil {
			t.Fatalf("the previous release's upsert at migration 3: %v", err)
		}
	}
	if p, err := st.PendingMigrations(ctx); err != nil || !slices.Equal(p, pgstore.MigrationNames()[3:]) {
		t.Fatalf("PendingMigrations at migration 3 = %v, %v; want migration 4", p, err)
	}
	// What a failed build of an earlier run would leave behind.
	if _, err := pool.Exec(ctx, "CREATE INDEX snapshots_pkey_0004 ON "+snapshots+" (aggregate_id)"); err != nil {
		t.Fatal(err)
	}

	// The store in use while it migrates: appends and loads (this
	// release's statements that run at migration 3 too) and the previous
	// release's snapshot writes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var rounds, oldWrites atomic.Int64
	busy := uuid.New()
	if _, err := st.Append(ctx, "M4", busy, eventsource.NoStream, newEvents(1, 0)); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		for head := int64(1); ; head++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := st.Append(ctx, "M4", busy, eventsource.ExpectedVersion(head), newEvents(1, int(head))); err != nil {
				t.Errorf("append during the migration: %v", err)
				return
			}
			if _, err := st.StreamVersion(ctx, "M4", busy); err != nil {
				t.Errorf("read during the migration: %v", err)
				return
			}
			// Until the key swaps, then refused as after the migration.
			_, err := pool.Exec(ctx, oldSave, busy, "M4", head+1, int32(1), []byte(`{}`), time.Now(), uuid.New())
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
				oldWrites.Add(1)
			case !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InvalidColumnReference:
				t.Errorf("the previous release's upsert during the migration: %v", err)
				return
			}
			rounds.Add(1)
		}
	})
	err := st.Migrate(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Migrate from 3: %v", err)
	}
	t.Logf("%d appends, reads and old upserts ran during the migration (%d upserts before the key swapped)", rounds.Load(), oldWrites.Load())

	for _, sn := range snaps {
		snap, evs, err := st.LoadSnapshotAndEvents(ctx, "M4", sn.id, sn.schema)
		if err != nil {
			t.Fatal(err)
		}
		if snap == nil || snap.Version != sn.version || snap.SchemaVersion != sn.schema || snap.EventID != sn.eventID {
			t.Fatalf("load of schema %d after the upgrade: snapshot %+v, want v%d tied to %s", sn.schema, snap, sn.version, sn.eventID)
		}
		for rec, err := range evs {
			if err != nil || rec.Version != sn.version {
				t.Fatalf("load of schema %d after the upgrade reads events from v%d (%v), want v%d", sn.schema, rec.Version, err, sn.version)
			}
			break
		}
		if other, err := st.GetSnapshot(ctx, "M4", sn.id, sn.schema+1); err != nil || other != nil {
			t.Fatalf("GetSnapshot of schema %d after the upgrade: %+v, %v; want none", sn.schema+1, other, err)
		}
	}
	var key []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(a.attname::text ORDER BY k.ord)
FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord), pg_attribute a
WHERE c.conrelid = $1::regclass AND c.contype = 'p' AND a.attrelid = c.conrelid AND a.attnum = k.attnum`, snapshots).Scan(&key); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(key, []string{"aggregate_id", "aggregate_type", "schema_version"}) {
		t.Fatalf("primary key after the upgrade: %v", key)
	}
	var indexes []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(indexrelid::regclass::text ORDER BY 1) FROM pg_index WHERE indrelid = $1::regclass`, snapshots).Scan(&indexes); err != nil {
		t.Fatal(err)
	}
	if len(indexes) != 1 || !strings.HasSuffix(indexes[0], "snapshots_pkey") {
		t.Fatalf("indexes of the snapshots table after the upgrade: %v, want only its primary key", indexes)
	}

	// A row per schema version from now on.
	up := eventsource.Snapshot{AggregateID: snaps[0].id, AggregateType: "M4", Version: 6, SchemaVersion: 2, EventID: uuid.New(), State: []byte(`{}`), CreatedAt: time.Now()}
	if ok, err := st.SaveSnapshot(ctx, up); err != nil || !ok {
		t.Fatalf("SaveSnapshot of schema 2 after the upgrade = %v, %v", ok, err)
	}
	if got, err := st.GetSnapshot(ctx, "M4", snaps[0].id, 1); err != nil || got == nil || got.Version != snaps[0].version {
		t.Fatalf("the schema 1 row after a schema 2 save: %+v, %v", got, err)
	}

	// A binary of the previous release.
	_, err = pool.Exec(ctx, oldSave, snaps[1].id, "M4", int64(6), int32(1), []byte(`{}`), time.Now(), uuid.New())
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InvalidColumnReference {
		t.Fatalf("the previous release's upsert after the upgrade: %v, want %s (no unique constraint matching its ON CONFLICT)", err, pgerrcode.InvalidColumnReference)
	}
	var version int64
	if err := pool.QueryRow(ctx, fmt.Sprintf(previousGetSnapshot, snapshots), snaps[1].id, "M4").Scan(&version, new(int32), new([]byte), new(time.Time), new(uuid.UUID)); err != nil || version != snaps[1].version {
		t.Fatalf("the previous release's snapshot read after the upgrade: v%d, %v", version, err)
	}
	oldLoad := fmt.Sprintf(previousLoadEvents, events, snapshots)
	if _, err := pool.Exec(ctx, oldLoad, "M4", snaps[1].id, int32(1)); err != nil {
		t.Fatalf("the previous release's load of an aggregate with one row: %v", err)
	}
	_, err = pool.Exec(ctx, oldLoad, "M4", snaps[0].id, int32(1))
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.CardinalityViolation {
		t.Fatalf("the previous release's load of an aggregate with two rows: %v, want %s", err, pgerrcode.CardinalityViolation)
	}

	// Migration 4 again, as after a crash between its last statement and
	// goose's record of it: nothing changes.
	if _, err := pool.Exec(ctx, "DELETE FROM "+qualified(st, pgstore.DefaultMigrationsTable)+" WHERE version_id = 4"); err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("migration 4 run again: %v", err)
	}
	for _, sn := range snaps[1:] {
		if got, err := st.GetSnapshot(ctx, "M4", sn.id, sn.schema); err != nil || got == nil || got.Version != sn.version {
			t.Fatalf("snapshot of schema %d after migration 4 ran again: %+v, %v", sn.schema, got, err)
		}
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+snapshots+" WHERE aggregate_id <> $1", busy).Scan(&rows); err != nil || rows != len(snaps)+1 {
		t.Fatalf("%d snapshot rows after migration 4 ran again (%v), want %d", rows, err, len(snaps)+1)
	}
}

// A migration that runs outside a transaction is sent a statement at a
// time: statements end with a semicolon at a line's end, comments go.
func TestSplitStatements(t *testing.T) {
	got := pgstore.SplitStatements("-- +goose NO TRANSACTION\n-- a comment; with a semicolon;\nDROP INDEX x;\n\nCREATE INDEX y\n    ON t (a); \nALTER TABLE t\n    ADD c int;\nSELECT 1")
	want := []string{"DROP INDEX x;", "CREATE INDEX y\n    ON t (a);", "ALTER TABLE t\n    ADD c int;", "SELECT 1"}
	if !slices.Equal(got, want) {
		t.Fatalf("SplitStatements = %q, want %q", got, want)
	}
}
