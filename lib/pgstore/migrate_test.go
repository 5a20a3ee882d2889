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
		_, err = st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: "T", Version: 1, SchemaVersion: 1, State: []byte(`{}`), CreatedAt: time.Now()})
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
