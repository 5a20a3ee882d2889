package pgstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// snapshotState returns a JSON state of about 1 KB for version v.
func snapshotState(v int64) []byte {
	return fmt.Appendf(nil, `{"version": %d, "balance": %d.25, "owner": "Ada Lovelace", "history": %q}`,
		v, v*7, strings.Repeat(fmt.Sprintf("deposit-%08d;", v), 60))
}

// churnPool is a pool for the churn runs: many connections, and
// synchronous_commit off so the runs take seconds (it changes when a
// commit is flushed to disk, not how the table grows).
func churnPool(t testing.TB) *pgxpool.Pool {
	return testPoolConfig(t, func(c *pgxpool.Config) {
		c.MaxConns = 8
		c.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	})
}

type churnResult struct {
	upserts             int
	bytesBefore, after  int64 // pg_total_relation_size of the snapshots table
	heapBefore, heapEnd int64 // pg_relation_size
	upd, hotUpd         int64 // pg_stat_user_tables
}

func (r churnResult) hotRatio() float64 {
	if r.upd == 0 {
		return 0
	}
	return float64(r.hotUpd) / float64(r.upd)
}

func (r churnResult) String() string {
	return fmt.Sprintf("%d upserts: table %.2f MB -> %.2f MB (heap %.2f -> %.2f MB), %d of %d updates HOT (%.1f%%)",
		r.upserts, mb(r.bytesBefore), mb(r.after), mb(r.heapBefore), mb(r.heapEnd), r.hotUpd, r.upd, 100*r.hotRatio())
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// churn writes `rows` snapshots, then rewrites them `upserts` times in all
// (each row at a rising version) from 8 goroutines through SaveSnapshot,
// and reports the table's size before and after and its HOT update ratio.
func churn(tb testing.TB, st *pgstore.Store, snapshotsTable string, rows, upserts int) churnResult {
	tb.Helper()
	ctx := context.Background()
	pool := st.Pool()
	typ := "Churn"
	ids := make([]uuid.UUID, rows)
	for i := range ids {
		ids[i] = uuid.New()
	}
	save := func(i int) error {
		v := int64(i/rows) + 1
		_, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: ids[i%rows], AggregateType: typ,
			Version: v, SchemaVersion: 1, EventID: uuid.New(), State: snapshotState(v), CreatedAt: time.Now().UTC()})
		return err
	}
	run := func(from, to int) {
		var next atomic.Int64
		next.Store(int64(from))
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
					if err := save(i); err != nil {
						tb.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	sizes := func() (total, heap int64) {
		tb.Helper()
		if err := pool.QueryRow(ctx, "SELECT pg_total_relation_size($1::regclass), pg_relation_size($1::regclass)",
			qualified(st, snapshotsTable)).Scan(&total, &heap); err != nil {
			tb.Fatal(err)
		}
		return total, heap
	}
	run(0, rows) // the initial inserts
	var r churnResult
	r.upserts = upserts
	r.bytesBefore, r.heapBefore = sizes()
	run(rows, rows+upserts)
	r.after, r.heapEnd = sizes()

	// Backends publish their statistics when they exit at the latest: close
	// the pool's connections, then wait for the counters to arrive.
	pool.Reset()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := pool.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2`,
			st.Schema(), snapshotsTable).Scan(&r.upd, &r.hotUpd); err != nil {
			tb.Fatal(err)
		}
		if r.upd >= int64(upserts) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
		pool.Reset()
	}
	return r
}

// defaultTablesStore returns a second store in st's schema whose snapshots
// table has PostgreSQL's default storage settings, for comparison.
func defaultTablesStore(tb testing.TB, st *pgstore.Store) *pgstore.Store {
	tb.Helper()
	ctl, err := pgstore.New(st.Pool(), pgstore.WithSchema(st.Schema()), pgstore.WithLogger(testLogger(tb)),
		pgstore.WithEventsTable("ctl_events"), pgstore.WithStreamsTable("ctl_streams"), pgstore.WithSnapshotsTable("ctl_snapshots"))
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := ctl.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, "ALTER TABLE "+qualified(st, "ctl_snapshots")+` RESET (fillfactor,
		autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor,
		toast.autovacuum_vacuum_scale_factor, toast.autovacuum_vacuum_threshold)`); err != nil {
		tb.Fatal(err)
	}
	return ctl
}

// TestSnapshotChurn rewrites 2,000 snapshots of about 1 KB ten times each
// and logs the table's growth and HOT update ratio, next to a table with
// PostgreSQL's defaults. It asserts the storage settings; the figures
// depend on what else the server runs (a long transaction anywhere in the
// database stops page pruning), so they are logged, not asserted.
// BenchmarkSnapshotChurn runs the full 200,000 rewrites.
func TestSnapshotChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("40,000 upserts; skipped with -short")
	}
	st := newStoreOn(t, churnPool(t))
	var opts []string
	if err := st.Pool().QueryRow(context.Background(), "SELECT reloptions FROM pg_class WHERE oid = $1::regclass",
		qualified(st, "snapshots")).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(opts, ","), "fillfactor=50") {
		t.Fatalf("snapshots table options %v lack fillfactor=50", opts)
	}
	tuned := churn(t, st, "snapshots", 2000, 20000)
	t.Logf("tuned (fillfactor 50, early autovacuum): %v", tuned)
	ctl := churn(t, defaultTablesStore(t, st), "ctl_snapshots", 2000, 20000)
	t.Logf("PostgreSQL defaults:                   %v", ctl)
}
