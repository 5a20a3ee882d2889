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
	"github.com/jackc/pgx/v5"
)

// countMigrations counts the migrations recorded as applied (goose's
// version 0, which every store's tables have, left out).
func countMigrations(t *testing.T, st *pgstore.Store) int {
	t.Helper()
	var n int
	if err := st.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+qualified(st, pgstore.DefaultMigrationsTable)+" WHERE version_id > 0 AND is_applied").Scan(&n); err != nil {
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
		_, err = st.GetSnapshot(ctx, "T", id, 1)
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
	if _, err := st.Pool().Exec(ctx, "DELETE FROM "+qualified(st, pgstore.DefaultMigrationsTable)+" WHERE version_id = 2"); err != nil {
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
	snap, err := st.GetSnapshot(ctx, typ, id, 1)
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
	if _, err := st.Pool().Exec(ctx, "DELETE FROM "+qualified(st, pgstore.DefaultMigrationsTable)+" WHERE version_id = 3"); err != nil {
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
	got, err := st.GetSnapshot(ctx, typ, tied, 1)
	if err != nil || got == nil || got.Version != 3 || got.EventID != events[2].ID {
		t.Fatalf("snapshot matching its stream after the upgrade: %+v, %v; want v3 tied to event %s", got, err, events[2].ID)
	}
	for name, id := range map[string]uuid.UUID{"ahead of its stream": ahead, "without a stream": noStream, "of another type's stream": otherType} {
		if got, err := st.GetSnapshot(ctx, typ, id, 1); err != nil || got != nil {
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

// TestMigrateUpgradesTheRunnerBeforeGoose: a schema migrated by the
// releases before goose, whose runner recorded migrations as (tables,
// version, name, applied_at) rows, upgrades cleanly. Two stores share the
// schema and its migrations table: a, at migration 2 (its snapshots have no
// event_id), and b, at migration 4; both hold data, and a role may read the
// migrations table. Two migrators run at once. The table is converted to
// goose's layout in place (every record kept, the grant too), a gets
// migrations 3 on, b those after 4 (the runner's last), and no data is
// lost.
func TestMigrateUpgradesTheRunnerBeforeGoose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newStore(t)
	b, err := pgstore.New(a.Pool(), pgstore.WithSchema(a.Schema()), pgstore.WithLogger(testLogger(t)),
		pgstore.WithEventsTable("b_events"), pgstore.WithStreamsTable("b_streams"), pgstore.WithSnapshotsTable("b_snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	const typ = "Upgraded"
	id := uuid.New()
	aEvents, bEvents := newEvents(3, 0), newEvents(2, 0)
	if _, err := a.Append(ctx, typ, id, eventsource.NoStream, aEvents); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(ctx, typ, id, eventsource.NoStream, bEvents); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 2, SchemaVersion: 1,
		EventID: bEvents[1].ID, State: []byte(`{"n": 2}`), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	// Put the schema back as the runner before goose left it.
	m := qualified(a, pgstore.DefaultMigrationsTable)
	role := a.Schema() + "_reader"
	for _, stmt := range []string{
		"ALTER TABLE " + qualified(a, "snapshots") + " DROP COLUMN event_id",
		"DROP TABLE " + m,
		"CREATE TABLE " + m + ` (
    tables     text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT evsnap_migrations_pkey PRIMARY KEY (tables, version)
)`,
		"INSERT INTO " + m + ` (tables, version, name) VALUES
    ('events,streams,snapshots', 1, '001_create_tables'), ('events,streams,snapshots', 2, '002_drop_snapshots_type_index'),
    ('b_events,b_streams,b_snapshots', 1, '001_create_tables'), ('b_events,b_streams,b_snapshots', 2, '002_drop_snapshots_type_index'),
    ('b_events,b_streams,b_snapshots', 3, '003_snapshot_event_id'), ('b_events,b_streams,b_snapshots', 4, '004_snapshot_per_schema_version')`,
		"CREATE ROLE " + role + " NOLOGIN",
		"GRANT SELECT ON " + m + " TO " + role,
	} {
		if _, err := a.Pool().Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, stmt := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
			if _, err := a.Pool().Exec(ctx, stmt); err != nil {
				t.Errorf("%s: %v", stmt, err)
			}
		}
	})
	if p, err := a.PendingMigrations(ctx); err != nil || !slices.Equal(p, pgstore.MigrationNames()[2:]) {
		t.Fatalf("a's PendingMigrations before the upgrade = %v, %v; want migrations 3 on", p, err)
	}
	if p, err := b.PendingMigrations(ctx); err != nil || !slices.Equal(p, pgstore.MigrationNames()[4:]) {
		t.Fatalf("b's PendingMigrations before the upgrade = %v, %v; want those after 4 (the runner before goose knew 4)", p, err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, st := range []*pgstore.Store{a, b} {
		wg.Go(func() { errs[i] = st.Migrate(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate of store %c over the runner's records: %v", 'a'+i, err)
		}
	}

	records := func() []string {
		t.Helper()
		rows, err := a.Pool().Query(ctx, "SELECT tables || ':' || version_id FROM "+m+" WHERE is_applied ORDER BY tables, version_id")
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := []string{
		"b_events,b_streams,b_snapshots:0", "b_events,b_streams,b_snapshots:1", "b_events,b_streams,b_snapshots:2", "b_events,b_streams,b_snapshots:3",
		"b_events,b_streams,b_snapshots:4", "b_events,b_streams,b_snapshots:5",
		"events,streams,snapshots:0", "events,streams,snapshots:1", "events,streams,snapshots:2", "events,streams,snapshots:3",
		"events,streams,snapshots:4", "events,streams,snapshots:5",
	}
	if got := records(); !slices.Equal(got, want) {
		t.Fatalf("migrations recorded after the upgrade:\n got %v\nwant %v", got, want)
	}
	var canRead bool
	if err := a.Pool().QueryRow(ctx, "SELECT has_table_privilege($1, $2, 'SELECT')", role, m).Scan(&canRead); err != nil || !canRead {
		t.Fatalf("%s may read %s after the upgrade: %v, %v; the grant was lost", role, m, canRead, err)
	}
	for _, st := range []*pgstore.Store{a, b} {
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("Migrate after the upgrade: %v", err)
		}
		if err := st.CheckMigrated(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := records(); !slices.Equal(got, want) {
		t.Fatalf("a second Migrate changed the records:\n got %v\nwant %v", got, want)
	}

	// The data is all there, and migration 3 ran on a's snapshots table.
	for _, c := range []struct {
		st     *pgstore.Store
		events []eventsource.NewEvent
	}{{a, aEvents}, {b, bEvents}} {
		got := storetest.ReadAll(t, c.st, typ, id, 0)
		if len(got) != len(c.events) || got[len(got)-1].ID != c.events[len(c.events)-1].ID {
			t.Fatalf("events after the upgrade: %+v, want %d ending with %s", got, len(c.events), c.events[len(c.events)-1].ID)
		}
	}
	if snap, err := b.GetSnapshot(ctx, typ, id, 1); err != nil || snap == nil || snap.Version != 2 || snap.EventID != bEvents[1].ID {
		t.Fatalf("b's snapshot after the upgrade: %+v, %v", snap, err)
	}
	if stored, err := a.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 3, SchemaVersion: 1,
		EventID: aEvents[2].ID, State: []byte(`{"n": 3}`), CreatedAt: time.Now()}); err != nil || !stored {
		t.Fatalf("a's SaveSnapshot after the upgrade (its snapshots table has event_id again) = %v, %v", stored, err)
	}
}
