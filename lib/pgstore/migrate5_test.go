package pgstore_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
)

// scanAll pages st's aggregates of typ (change order, or id order) until a
// page ends, waiting until every id of want has been examined: a page in
// change order stops short of the changes of transactions still open
// (other tests' too).
func scanAll(t *testing.T, st *pgstore.Store, typ string, opts eventsource.ScanOptions, want ...uuid.UUID) []uuid.UUID {
	t.Helper()
	ctx := context.Background()
	var got []uuid.UUID
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		page, err := st.ScanAggregates(ctx, typ, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page.Behind {
			got = append(got, a.AggregateID)
		}
		opts.After, opts.AfterID = page.Next, page.NextID
		if !page.End {
			continue
		}
		missing := slices.ContainsFunc(want, func(id uuid.UUID) bool { return !slices.Contains(got, id) })
		if !missing {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("scan of %s (%+v) did not reach %v within 30s: %v", typ, opts, want, got)
		}
	}
}

// TestMigrationFiveChangeOrder: a schema at migration 4 (the previous
// release's layout) holding streams moves to migration 5 while appends go
// on (over an invalid index a failed run left behind). The streams
// stored before keep no change position: a scan in change
// order does not examine them, a scan in id order (the sweep's first,
// full pass) does; their next append, by this release or the previous
// one (whose append statements are this release's: the trigger sets the
// position), moves them into the change order. The index is valid and
// partial, the marks table exists.
func TestMigrationFiveChangeOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, pool := newStoreAt(t, 4)
	schema := st.Schema()
	const typ = "M5"
	old, behind := uuid.New(), uuid.New()
	if _, err := st.Append(ctx, typ, old, eventsource.NoStream, newEvents(3, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, typ, behind, eventsource.NoStream, newEvents(120, 0)); err != nil {
		t.Fatal(err)
	}

	// What a failed build of an earlier run would leave behind: an invalid
	// index of the name (of another definition here, to tell them apart).
	if _, err := pool.Exec(ctx, "ALTER TABLE "+qualified(st, "streams")+" ADD COLUMN change_xid xid8"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "CREATE INDEX streams_change_idx ON "+qualified(st, "streams")+" (aggregate_id)"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass($1)", schema+".streams_change_idx"); err != nil {
		t.Fatal(err)
	}

	// Appends go on while it migrates.
	busy := uuid.New()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := st.Append(ctx, "M5Busy", busy, eventsource.AnyVersion, newEvents(1, 0)); err != nil {
				t.Errorf("append while migrating: %v", err)
				return
			}
		}
	})
	err := st.Migrate(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Migrate from 4: %v", err)
	}

	var valid bool
	var def string
	if err := pool.QueryRow(ctx, `SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i
WHERE i.indexrelid = to_regclass($1)`, schema+".streams_change_idx").Scan(&valid, &def); err != nil || !valid ||
		!strings.Contains(def, "(aggregate_type, change_xid, aggregate_id) WHERE (change_xid IS NOT NULL)") {
		t.Fatalf("streams_change_idx valid = %v, %v (%s); want the partial change index, valid", valid, err, def)
	}
	if _, err := st.GetSweepMark(ctx, eventsource.SweepMarkKey{Name: "n", AggregateType: typ, SchemaVersion: 1}); err != nil {
		t.Fatalf("GetSweepMark after the migration: %v", err)
	}

	all := eventsource.ScanOptions{SchemaVersion: 1, Examine: 100}
	if got := scanAll(t, st, "M5Busy", all, busy); !slices.Equal(got, []uuid.UUID{busy}) {
		t.Fatalf("the change order of the stream appended to while migrating = %v", got)
	}
	if got := scanAll(t, st, typ, all); len(got) != 0 {
		t.Fatalf("streams last changed before the migration are in change order: %v", got)
	}
	full := eventsource.ScanOptions{SchemaVersion: 1, MinBehind: 100, Examine: 1, ByID: true}
	if got := scanAll(t, st, typ, full, behind); !slices.Equal(got, []uuid.UUID{behind}) {
		t.Fatalf("a scan in id order found %v, want the aggregate 120 behind", got)
	}

	// The previous release's append (the same statement) moves a stream.
	if _, err := st.Append(ctx, typ, old, 3, newEvents(1, 0)); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, st, typ, all, old); !slices.Equal(got, []uuid.UUID{old}) {
		t.Fatalf("after an append, the change order = %v, want the stream appended to", got)
	}
}
