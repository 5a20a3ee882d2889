package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the test inspects.
type planNode struct {
	NodeType          string     `json:"Node Type"`
	RelationName      string     `json:"Relation Name"`
	IndexName         string     `json:"Index Name"`
	ScanDirection     string     `json:"Scan Direction"`
	ActualRows        float64    `json:"Actual Rows"`
	ActualLoops       float64    `json:"Actual Loops"`
	SortMethod        string     `json:"Sort Method"`
	TempReadBlocks    int64      `json:"Temp Read Blocks"`
	TempWrittenBlocks int64      `json:"Temp Written Blocks"`
	Plans             []planNode `json:"Plans"`
}

func (n planNode) walk(f func(planNode)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}

func (n planNode) String() string {
	var parts []string
	n.walk(func(n planNode) {
		s := n.NodeType
		if n.IndexName != "" {
			s += " using " + n.IndexName
		}
		if n.SortMethod != "" {
			s += " (" + n.SortMethod + ")"
		}
		if n.TempWrittenBlocks > 0 {
			s += fmt.Sprintf(" [temp written %d blocks]", n.TempWrittenBlocks)
		}
		parts = append(parts, s)
	})
	return strings.Join(parts, " -> ")
}

func explain(t *testing.T, st *pgstore.Store, query string, args ...any) planNode {
	t.Helper()
	var raw []byte
	if err := st.Pool().QueryRow(context.Background(), "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+query, args...).Scan(&raw); err != nil {
		t.Fatalf("EXPLAIN: %v", err)
	}
	return decodePlan(t, raw)
}

// genericPlans returns a connection of st's pool on which every prepared
// statement runs its generic plan, until the test ends.
func genericPlans(t *testing.T, st *pgstore.Store) *pgxpool.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(ctx, "RESET plan_cache_mode")
		conn.Release()
	})
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// decodePlan reads the plan out of EXPLAIN (FORMAT JSON)'s output.
func decodePlan(t *testing.T, raw []byte) planNode {
	t.Helper()
	var out []struct{ Plan planNode }
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		t.Fatalf("EXPLAIN output %s: %v", raw, err)
	}
	return out[0].Plan
}

// TestReadEventsWalksIndexInOrder stores a 100,000-event stream whose
// events are interleaved on disk with those of 9 other aggregates of the
// same type (900,000 more events), then EXPLAINs the query ReadEvents runs:
// at the start, middle and end of the stream it must be a forward scan of
// the (aggregate_type, aggregate_id, version) index, with no Sort node and
// no temp files. The same query without the page bound makes PostgreSQL
// bitmap-scan the stream and sort it, spilling at the default work_mem; the
// test logs that plan for comparison.
func TestReadEventsWalksIndexInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 1,000,000 events; skipped with -short")
	}
	st := newStore(t)
	ctx := context.Background()
	const streamLen, others = 100_000, 9
	id := uuid.New()
	start := time.Now()
	// Every step appends one event to the stream and one to each of the
	// other aggregates, so the stream's rows are spread over every page of
	// the table. Event ids ascend, to load fast.
	if _, err := st.Pool().Exec(ctx, `INSERT INTO `+qualified(st, "events")+`
	(event_id, aggregate_type, aggregate_id, version, event_type, payload, metadata, occurred_at)
SELECT (lpad(to_hex(v), 8, '0') || '-' || lpad(to_hex(a), 4, '0') || '-4000-8000-000000000000')::uuid,
	'Account',
	CASE WHEN a = 0 THEN $1::uuid ELSE ('00000000-0000-4000-8000-' || lpad(to_hex(a), 12, '0'))::uuid END,
	v, 'Deposited', jsonb_build_object('amount', v, 'note', repeat('x', 100)), '{}', now()
FROM generate_series(1, $2::bigint) v, generate_series(0, $3::int) a
ORDER BY v, a`, id, streamLen, others); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, "ANALYZE "+qualified(st, "events")); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d events in %v", streamLen*(others+1), time.Since(start).Round(time.Millisecond))

	query := pgstore.ReadEventsQuery(st)
	for _, after := range []int64{0, streamLen / 2, streamLen - 500} {
		plan := explain(t, st, query, "Account", id, after)
		t.Logf("after v%d: %v", after, plan)
		var indexScan bool
		plan.walk(func(n planNode) {
			switch n.NodeType {
			case "Sort", "Incremental Sort", "Gather Merge", "Bitmap Heap Scan":
				t.Errorf("after v%d: plan has a %s node: %v", after, n.NodeType, plan)
			case "Index Scan":
				indexScan = n.IndexName == "events_stream_version_key" && n.ScanDirection == "Forward"
			}
			if n.TempReadBlocks > 0 || n.TempWrittenBlocks > 0 {
				t.Errorf("after v%d: %s spilled to disk (%d blocks written): %v", after, n.NodeType, n.TempWrittenBlocks, plan)
			}
		})
		if !indexScan {
			t.Errorf("after v%d: no forward Index Scan using events_stream_version_key: %v", after, plan)
		}
	}
	unbounded := query[:strings.LastIndex(query, "LIMIT")]
	t.Logf("for comparison, without the page bound: %v", explain(t, st, unbounded, "Account", id, int64(0)))

	start = time.Now()
	n := int64(0)
	for rec, err := range st.ReadEvents(ctx, "Account", id, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; rec.Version != n {
			t.Fatalf("event %d has version %d", n, rec.Version)
		}
	}
	if n != streamLen {
		t.Fatalf("read %d events, want %d", n, streamLen)
	}
	t.Logf("ReadEvents streamed %d events in %v", n, time.Since(start).Round(time.Millisecond))
}

// TestSnapshotLookupsUseThePrimaryKeyBeforeAnalyze: a snapshots table
// that has rows but no statistics yet (a new deployment before autovacuum
// first analyzes it, a table emptied and refilled) gave the planner no
// reason to prefer the primary key over the tutorial's (aggregate_type,
// schema_version) index, and pgx's prepared statements keep the generic
// plan, which walks every snapshot of the type: in the benchmark
// harness's worker run PostgreSQL's CPU per snapshot doubled as the table
// filled. With 3,000 snapshots (the harness's backlog) every lookup the
// worker and loads run must be a primary-key lookup in that state, as a
// generic plan. (At a few hundred, GetSnapshots rightly scans the table.)
func TestSnapshotLookupsUseThePrimaryKeyBeforeAnalyze(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	typ := "Planned"
	// No autovacuum, so no ANALYZE, on this table while the test runs.
	table := pgx.Identifier{st.Schema(), "snapshots"}.Sanitize()
	if _, err := st.Pool().Exec(ctx, "ALTER TABLE "+table+" SET (autovacuum_enabled = false)"); err != nil {
		t.Fatal(err)
	}
	snaps := make([]eventsource.Snapshot, 3000)
	for i := range snaps {
		snaps[i] = eventsource.Snapshot{AggregateID: uuid.New(), AggregateType: typ, Version: 10, SchemaVersion: 1, EventID: uuid.New(), State: []byte(`{"n": 1}`), CreatedAt: time.Now()}
	}
	if _, err := st.SaveSnapshots(ctx, snaps); err != nil {
		t.Fatal(err)
	}
	conn := genericPlans(t, st)
	sql := st.Statements()
	id := snaps[250].AggregateID
	// EXPLAIN EXECUTE takes its parameters as SQL, not bound.
	lit := func(id uuid.UUID) string { return "'" + id.String() + "'::uuid" }
	// A save's newest-schema lookup and trim are walks of the aggregate's
	// primary-key entries; a listing's lateral lookup of each aggregate's
	// snapshot likewise.
	for name, c := range map[string]struct{ query, args string }{
		"GetSnapshot":  {sql.GetSnapshot, lit(id) + ", '" + typ + "', 1"},
		"GetSnapshots": {sql.GetSnapshots, "'" + typ + "', ARRAY[" + lit(id) + ", " + lit(snaps[3].AggregateID) + "], 1"},
		"load":         {pgstore.LoadQuery(st), "'" + typ + "', " + lit(id) + ", 1"},
		"SaveSnapshot": {sql.SaveSnapshot, lit(id) + ", '" + typ + "', 11, 2, '{}', now(), " + lit(uuid.New())},
		"SaveSnapshots": {sql.SaveSnapshots, "ARRAY[" + lit(snaps[7].AggregateID) + ", " + lit(snaps[8].AggregateID) + "], ARRAY['" + typ + "', '" + typ +
			"'], ARRAY[11, 11], ARRAY[3, 3], ARRAY['{}', '{}']::jsonb[], ARRAY[now(), now()], ARRAY[" + lit(uuid.New()) + ", " + lit(uuid.New()) + "]"},
		"listByID": {pgstore.ListByIDQuery(st), "'" + typ + "', 0, 0, '00000000-0000-0000-0000-000000000000'::uuid, 100"},
	} {
		stmt := "plan_" + strings.ToLower(name)
		if _, err := conn.Conn().Prepare(ctx, stmt, c.query); err != nil {
			t.Fatal(err)
		}
		var raw []byte
		if err := conn.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE "+stmt+"("+c.args+")").Scan(&raw); err != nil {
			t.Fatalf("%s: EXPLAIN: %v", name, err)
		}
		var out []struct{ Plan planNode }
		if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
			t.Fatalf("%s: EXPLAIN output %s: %v", name, raw, err)
		}
		out[0].Plan.walk(func(n planNode) {
			if n.RelationName == "snapshots" && n.NodeType != "ModifyTable" && n.IndexName != "snapshots_pkey" {
				t.Errorf("%s reads the snapshots with %s, want the primary key: %s", name, n, out[0].Plan)
			}
		})
	}
}

// TestScanAggregatesPlans: a sweep's page, in change order and in id
// order, as PostgreSQL plans it generically (pgx prepares statements, and
// after five runs the server may keep a generic plan): an index range
// scan of the streams (the change index, or the primary key) and a
// primary-key lookup of the snapshot of each aggregate whose head is at
// least MinBehind (of the others none can be that far behind), never a
// sequential scan, a hash join or a temp file, on 50,000 aggregates with a
// snapshot each, half of them with a short stream.
func TestScanAggregatesPlans(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	streams, snapshots := qualified(st, "streams"), qualified(st, "snapshots")
	for _, q := range []string{
		`INSERT INTO ` + streams + ` (aggregate_type, aggregate_id, version)
SELECT 'Scan', md5('scan' || i)::uuid, CASE WHEN i % 2 = 0 THEN 150 ELSE 5 END FROM generate_series(1, 50000) AS i`,
		`INSERT INTO ` + snapshots + ` (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
SELECT md5('scan' || i)::uuid, 'Scan', CASE WHEN i % 100 = 0 THEN 1 ELSE 150 END, 1, '{}', now(), gen_random_uuid() FROM generate_series(1, 50000) AS i`,
		`ANALYZE ` + streams,
		`ANALYZE ` + snapshots,
	} {
		if _, err := st.Pool().Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn := genericPlans(t, st)
	for _, c := range []struct {
		name  string
		byID  bool
		args  string
		index string
	}{
		{"change order", false, `('Scan', 1, 100, 0, '00000000-0000-0000-0000-000000000000')`, "streams_change_idx"},
		{"id order", true, `('Scan', 1, 100, '00000000-0000-0000-0000-000000000000')`, "streams_pkey"},
	} {
		name := "scan_" + strings.ReplaceAll(c.name, " ", "_")
		if _, err := conn.Exec(ctx, "PREPARE "+name+" AS "+pgstore.ScanQuery(st, c.byID, 5000)); err != nil {
			t.Fatalf("%s: prepare: %v", c.name, err)
		}
		var raw []byte
		if err := conn.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE "+name+c.args).Scan(&raw); err != nil {
			t.Fatalf("%s: explain: %v", c.name, err)
		}
		if _, err := conn.Exec(ctx, "DEALLOCATE "+name); err != nil {
			t.Fatal(err)
		}
		plan := decodePlan(t, raw)
		var indexes []string
		var examined, lookups float64
		plan.walk(func(n planNode) {
			if n.IndexName == "snapshots_pkey" {
				lookups = n.ActualLoops
			}
			switch {
			case n.NodeType == "Seq Scan" || strings.Contains(n.NodeType, "Hash"):
				t.Errorf("%s: the generic plan has a %s (on %s): %s", c.name, n.NodeType, n.RelationName, plan)
			case n.TempReadBlocks+n.TempWrittenBlocks > 0:
				t.Errorf("%s: the generic plan spills: %s", c.name, plan)
			}
			if n.IndexName != "" {
				indexes = append(indexes, n.IndexName)
			}
			if n.IndexName == c.index {
				examined = n.ActualRows
			}
		})
		if !slices.Contains(indexes, c.index) || !slices.Contains(indexes, "snapshots_pkey") || examined != 5000 {
			t.Errorf("%s: the generic plan walks %v (%v rows of %s), want %s for a page of 5,000 and snapshots_pkey: %s", c.name, indexes, examined, c.index, c.index, plan)
		}
		if lookups < 2000 || lookups > 3000 {
			t.Errorf("%s: %v snapshot lookups for a page of 5,000 of which about half have a head of at least 100; want those only", c.name, lookups)
		}
		t.Logf("%s: %s", c.name, plan)
	}
}
