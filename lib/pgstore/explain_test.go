package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the test inspects.
type planNode struct {
	NodeType          string     `json:"Node Type"`
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
