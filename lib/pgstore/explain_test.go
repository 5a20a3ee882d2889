package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the test inspects.
type planNode struct {
	NodeType          string     `json:"Node Type"`
	RelationName      string     `json:"Relation Name"`
	IndexName         string     `json:"Index Name"`
	ScanDirection     string     `json:"Scan Direction"`
	ActualRows        float64    `json:"Actual Rows"`
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
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(ctx, "RESET plan_cache_mode") }()
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
		"loadEvents":   {pgstore.LoadEventsQuery(st), "'" + typ + "', " + lit(id) + ", 1"},
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
