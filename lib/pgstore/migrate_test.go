package pgstore_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/storetest"
	"github.com/google/uuid"
)

func countMigrations(t *testing.T, st *pgstore.Store) int {
	t.Helper()
	var n int
	if err := st.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+qualified(st, pgstore.DefaultMigrationsTable)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateTwiceIsNoOp(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	id := uuid.New()
	if _, err := st.Append(ctx, "M", id, eventsource.NoStream, newEvents(2, 0)); err != nil {
		t.Fatal(err)
	}
	before := countMigrations(t, st)
	if before == 0 {
		t.Fatal("no migration recorded")
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if after := countMigrations(t, st); after != before {
		t.Fatalf("second Migrate recorded %d migrations, the first %d", after, before)
	}
	if v, err := st.StreamVersion(ctx, "M", id); err != nil || v != 2 {
		t.Fatalf("data after a second Migrate: version %d, %v", v, err)
	}
	if err := st.CheckMigrated(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := st.PendingMigrations(ctx); err != nil || len(p) != 0 {
		t.Fatalf("PendingMigrations = %v, %v", p, err)
	}
}

// TestMigrateConcurrently runs three migrators, each on its own store, at
// once on a schema that does not exist yet.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	schema := newSchemaName()
	dropSchemaAtCleanup(t, pool, schema)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	stores := make([]*pgstore.Store, 3)
	for i := range stores {
		st, err := pgstore.New(pool, pgstore.WithSchema(schema), pgstore.WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = st
	}
	start := make(chan struct{})
	for i, st := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = st.Migrate(context.Background())
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}
	if n, want := countMigrations(t, stores[0]), len(pgstore.MigrationNames()); n != want {
		t.Fatalf("%d migrations recorded, want %d", n, want)
	}
	if _, err := stores[1].Append(context.Background(), "M", uuid.New(), eventsource.NoStream, newEvents(1, 0)); err != nil {
		t.Fatal(err)
	}
}

// TestNotMigrated: every operation of a store whose tables were never
// created says to run Migrate, whether the schema is missing or empty.
func TestNotMigrated(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	ctx := context.Background()
	emptySchema := newSchemaName()
	dropSchemaAtCleanup(t, pool, emptySchema)
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+emptySchema); err != nil {
		t.Fatal(err)
	}
	for _, schema := range []string{newSchemaName(), emptySchema} {
		st, err := pgstore.New(pool, pgstore.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		id := uuid.New()
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, pgstore.ErrNotMigrated) || !strings.Contains(err.Error(), "run Store.Migrate") {
				t.Errorf("%s on schema %s without migrations: error %v, want ErrNotMigrated saying to run Migrate", op, schema, err)
			}
		}
		_, err = st.Append(ctx, "T", id, eventsource.NoStream, newEvents(1, 0))
		check("Append", err)
		_, err = st.StreamVersion(ctx, "T", id)
		check("StreamVersion", err)
		for _, err := range st.ReadEvents(ctx, "T", id, 0) {
			check("ReadEvents", err)
		}
		_, err = st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: "T", Version: 1, SchemaVersion: 1, EventID: uuid.New(), State: []byte(`{}`), CreatedAt: time.Now()})
		check("SaveSnapshot", err)
		_, err = st.GetSnapshot(ctx, "T", id)
		check("GetSnapshot", err)
		_, err = st.DeleteSnapshotsByType(ctx, "T", 0)
		check("DeleteSnapshotsByType", err)
		for _, err := range st.ListAggregates(ctx, "T", eventsource.ListOptions{}) {
			check("ListAggregates", err)
		}
		check("CheckMigrated", st.CheckMigrated(ctx))
		_, err = st.StreamVersion(ctx, "T", id)
		t.Logf("schema %s: %v", schema, err)
		if p, err := st.PendingMigrations(ctx); err != nil || !slices.Equal(p, pgstore.MigrationNames()) {
			t.Errorf("PendingMigrations = %v, %v", p, err)
		}
	}
}

// TestMigrationTwoUpgradesAStoreInUse: a schema at migration 1 (its
// snapshots table with the tutorial's index, and data) moves to migration 2
// with nothing lost: the index is gone, every snapshot and event is still
// there, and the store works. The schema is put back at migration 1 by
// recreating the index and forgetting that migration 2 ran.
func TestMigrationTwoUpgradesAStoreInUse(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	typ, id := "Upgraded", uuid.New()
	if _, err := st.Append(ctx, typ, id, eventsource.NoStream, newEvents(3, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 3, SchemaVersion: 1, EventID: uuid.New(), State: []byte(`{"n": 3}`), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	snapshots := qualified(st, "snapshots")
	indexExists := func() bool {
		t.Helper()
		var ok bool
		if err := st.Pool().QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", qualified(st, "snapshots_type_schema_idx")).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if indexExists() {
		t.Fatal("a new store still has the snapshots type index after migration 2")
	}
	if _, err := st.Pool().Exec(ctx, "CREATE INDEX snapshots_type_schema_idx ON "+snapshots+" (aggregate_type, schema_version)"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, "DELETE FROM "+qualified(st, pgstore.DefaultMigrationsTable)+" WHERE version = 2"); err != nil {
		t.Fatal(err)
	}
	if p, err := st.PendingMigrations(ctx); err != nil || !slices.Equal(p, pgstore.MigrationNames()[1:2]) {
		t.Fatalf("PendingMigrations at migration 1 = %v, %v", p, err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from 1: %v", err)
	}
	if indexExists() {
		t.Fatal("migration 2 left the snapshots type index")
	}
	if p, err := st.PendingMigrations(ctx); err != nil || len(p) != 0 {
		t.Fatalf("PendingMigrations after = %v, %v", p, err)
	}
	snap, err := st.GetSnapshot(ctx, typ, id)
	if err != nil || snap == nil || snap.Version != 3 {
		t.Fatalf("snapshot after the upgrade: %+v, %v", snap, err)
	}
	_, events, err := st.LoadSnapshotAndEvents(ctx, typ, id, 1)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rec, err := range events {
		if err != nil {
			t.Fatal(err)
		}
		if rec.Version != 3 {
			t.Fatalf("load from the snapshot at v3 read v%d", rec.Version)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("load from the snapshot at v3 read %d events, want 1 (v3)", n)
	}
	if deleted, err := st.DeleteSnapshotsByType(ctx, typ, 0); err != nil || deleted != 1 {
		t.Fatalf("DeleteSnapshotsByType after the upgrade = %d, %v", deleted, err)
	}
}

// TestMigrationThreeTiesSnapshotsToHistory: a schema at migration 2
// holding snapshots moves to migration 3. A snapshot whose event is in its
// stream takes that event's id; the others (ahead of their stream after a
// restore, of a stream that does not exist, of a stream of another type)
// cannot be tied to any history and are gone. The schema is put back at
// migration 2 by dropping the column and forgetting that migration 3 ran.
func TestMigrationThreeTiesSnapshotsToHistory(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	const typ = "Tied"
	tied, ahead, noStream, otherType := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	events := newEvents(3, 0)
	for _, a := range []struct {
		typ    string
		id     uuid.UUID
		events []eventsource.NewEvent
	}{{typ, tied, events}, {typ, ahead, newEvents(1, 0)}, {"Other", otherType, newEvents(2, 0)}} {
		if _, err := st.Append(ctx, a.typ, a.id, eventsource.NoStream, a.events); err != nil {
			t.Fatal(err)
		}
	}
	snapshots := qualified(st, "snapshots")
	if _, err := st.Pool().Exec(ctx, "ALTER TABLE "+snapshots+" DROP COLUMN event_id"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, "DELETE FROM "+qualified(st, pgstore.DefaultMigrationsTable)+" WHERE version = 3"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		id      uuid.UUID
		version int64
	}{{tied, 3}, {ahead, 50}, {noStream, 5}, {otherType, 2}} {
		if _, err := st.Pool().Exec(ctx, "INSERT INTO "+snapshots+` (aggregate_id, aggregate_type, version, schema_version, state, created_at)
VALUES ($1, $2, $3, 1, '{"n": 1}', now())`, s.id, typ, s.version); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := st.PendingMigrations(ctx); err != nil || !slices.Equal(p, pgstore.MigrationNames()[2:3]) {
		t.Fatalf("PendingMigrations at migration 2 = %v, %v", p, err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from 2: %v", err)
	}
	got, err := st.GetSnapshot(ctx, typ, tied)
	if err != nil || got == nil || got.Version != 3 || got.EventID != events[2].ID {
		t.Fatalf("snapshot matching its stream after the upgrade: %+v, %v; want v3 tied to event %s", got, err, events[2].ID)
	}
	for name, id := range map[string]uuid.UUID{"ahead of its stream": ahead, "without a stream": noStream, "of another type's stream": otherType} {
		if got, err := st.GetSnapshot(ctx, typ, id); err != nil || got != nil {
			t.Errorf("snapshot %s after the upgrade: %+v, %v; want it gone", name, got, err)
		}
	}
	var nullable string
	if err := st.Pool().QueryRow(ctx, `SELECT is_nullable FROM information_schema.columns
WHERE table_schema = $1 AND table_name = 'snapshots' AND column_name = 'event_id'`, st.Schema()).Scan(&nullable); err != nil || nullable != "NO" {
		t.Fatalf("event_id is_nullable = %q, %v; want NO", nullable, err)
	}
	// The store goes on working: a new snapshot of the aggregate whose
	// snapshot was dropped is stored.
	evs := storetest.ReadAll(t, st, typ, ahead, 0)
	if stored, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: ahead, AggregateType: typ, Version: 1, SchemaVersion: 1,
		EventID: evs[0].ID, State: []byte(`{"n": 1}`), CreatedAt: time.Now()}); err != nil || !stored {
		t.Fatalf("SaveSnapshot after the upgrade = %v, %v", stored, err)
	}
}
