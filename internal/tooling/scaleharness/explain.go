package scaleharness

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// capture is a pgx query tracer that records the SQL (and the arguments of
// its first call) of every query while on.
type capture struct {
	mu    sync.Mutex
	on    bool
	order []string
	calls map[string]*captured
}

type captured struct {
	sql   string
	args  []any
	calls int
	// slowest is the longest a call took, from the client's side.
	slowest time.Duration
}

// startKey keys the start time of a query in its context.
type startKey struct{}

func (c *capture) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on, c.order, c.calls = true, nil, map[string]*captured{}
}

// stop stops recording and returns the distinct statements in the order
// of their first call.
func (c *capture) stop() []*captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = false
	out := make([]*captured, 0, len(c.order))
	for _, q := range c.order {
		out = append(out, c.calls[q])
	}
	return out
}

// TraceQueryStart implements pgx.QueryTracer.
func (c *capture) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on || strings.HasPrefix(d.SQL, "EXPLAIN") {
		return ctx
	}
	q, ok := c.calls[d.SQL]
	if ok {
		q.calls++
	} else {
		q = &captured{sql: d.SQL, args: append([]any(nil), d.Args...), calls: 1}
		c.order = append(c.order, d.SQL)
		c.calls[d.SQL] = q
	}
	return context.WithValue(ctx, startKey{}, startOf{q, time.Now()})
}

type startOf struct {
	q  *captured
	at time.Time
}

// TraceQueryEnd implements pgx.QueryTracer: it keeps the slowest call of
// each statement. pgx ends a query when its rows are closed, so a call's
// time includes reading its rows.
func (c *capture) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	st, ok := ctx.Value(startKey{}).(startOf)
	if !ok {
		return
	}
	d := time.Since(st.at)
	c.mu.Lock()
	defer c.mu.Unlock()
	st.q.slowest = max(st.q.slowest, d)
}

// Plan is what EXPLAIN (ANALYZE, BUFFERS) says about one statement.
type Plan struct {
	SQL   string
	Calls int
	// SlowestMS is the longest one call took while captured, in
	// milliseconds, from the client's side.
	SlowestMS float64
	// ExecMS is the statement's execution time in milliseconds.
	ExecMS float64
	// RowsRead is the rows its scan nodes read: returned plus removed by
	// filters and rechecks, times loops.
	RowsRead int64
	// TempBlocks is the temporary-file blocks it read and wrote (spills).
	TempBlocks int64
	// SharedBlocks is the shared buffer blocks it hit or read.
	SharedBlocks int64
	// LongestMS is the wall time of its longest call in the measured
	// operation's first run, in milliseconds (from the client: the
	// statement, the round trip and, for a listing, the caller's time
	// between rows).
	LongestMS float64
	// SeqScans names the tables it scanned sequentially.
	SeqScans []string
	// Text is the plan in EXPLAIN's text format.
	Text string
}

type planNode struct {
	NodeType         string     `json:"Node Type"`
	Relation         string     `json:"Relation Name"`
	ActualRows       float64    `json:"Actual Rows"`
	ActualLoops      float64    `json:"Actual Loops"`
	RemovedByFilter  float64    `json:"Rows Removed by Filter"`
	RemovedByRecheck float64    `json:"Rows Removed by Index Recheck"`
	TempRead         int64      `json:"Temp Read Blocks"`
	TempWritten      int64      `json:"Temp Written Blocks"`
	SharedHit        int64      `json:"Shared Hit Blocks"`
	SharedRead       int64      `json:"Shared Read Blocks"`
	IOReadTime       float64    `json:"I/O Read Time"`
	Plans            []planNode `json:"Plans"`
}

// explain runs EXPLAIN (ANALYZE, BUFFERS) of q in a transaction it rolls
// back, so a DELETE explained changes nothing.
func explain(ctx context.Context, pool *pgxpool.Pool, q *captured) (Plan, error) {
	p := Plan{SQL: q.sql, Calls: q.calls, SlowestMS: float64(q.slowest.Microseconds()) / 1000}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return p, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var raw []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+q.sql, q.args...).Scan(&raw); err != nil {
		return p, fmt.Errorf("explain %q: %w", firstLine(q.sql), err)
	}
	var doc []struct {
		Plan planNode `json:"Plan"`
		Exec float64  `json:"Execution Time"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc) != 1 {
		return p, fmt.Errorf("explain %q: unexpected JSON (%v)", firstLine(q.sql), err)
	}
	top := doc[0].Plan
	p.ExecMS = doc[0].Exec
	p.TempBlocks = top.TempRead + top.TempWritten
	p.SharedBlocks = top.SharedHit + top.SharedRead
	var walk func(n planNode)
	walk = func(n planNode) {
		if strings.Contains(n.NodeType, "Scan") {
			p.RowsRead += int64((n.ActualRows + n.RemovedByFilter + n.RemovedByRecheck) * max(n.ActualLoops, 1))
			if n.NodeType == "Seq Scan" || n.NodeType == "Parallel Seq Scan" {
				p.SeqScans = append(p.SeqScans, n.Relation)
			}
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(top)
	if err := tx.Rollback(ctx); err != nil {
		return p, err
	}
	// The text form, for the page (a second run: the numbers differ a little).
	tx2, err := pool.Begin(ctx)
	if err != nil {
		return p, err
	}
	defer func() { _ = tx2.Rollback(ctx) }()
	rows, err := tx2.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+q.sql, q.args...)
	if err != nil {
		return p, err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return p, err
	}
	p.Text = strings.Join(lines, "\n")
	return p, nil
}

// ioFigures are one EXPLAIN's buffer and I/O figures.
type ioFigures struct {
	hit, read      int64
	readMS, execMS float64
}

// explainIO runs EXPLAIN (ANALYZE, BUFFERS) of sql with track_io_timing on.
func explainIO(ctx context.Context, pool *pgxpool.Pool, sql string, args []any) (ioFigures, error) {
	var f ioFigures
	tx, err := pool.Begin(ctx)
	if err != nil {
		return f, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL track_io_timing = on"); err != nil {
		return f, fmt.Errorf("track_io_timing (the harness needs a superuser): %w", err)
	}
	var raw []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		return f, fmt.Errorf("explain %q: %w", firstLine(sql), err)
	}
	var doc []struct {
		Plan planNode `json:"Plan"`
		Exec float64  `json:"Execution Time"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc) != 1 {
		return f, fmt.Errorf("explain %q: unexpected JSON (%v)", firstLine(sql), err)
	}
	top := doc[0].Plan
	return ioFigures{hit: top.SharedHit, read: top.SharedRead, readMS: top.IOReadTime, execMS: doc[0].Exec}, nil
}

// indexLevels reads each B-tree index's level from its metapage
// (pageinspect's bt_metap, installed in the harness's schema, dropped with
// it): one page read an index.
func indexLevels(ctx context.Context, pool *pgxpool.Pool, schema string) (map[string]int, error) {
	if _, err := pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA "+schema); err != nil {
		return nil, fmt.Errorf("pageinspect: %w", err)
	}
	rows, err := pool.Query(ctx, `SELECT c.relname, (`+schema+`.bt_metap(c.oid::regclass::text)).level
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam
		WHERE n.nspname = $1 AND c.relkind = 'i' AND am.amname = 'btree' ORDER BY 1`, schema)
	if err != nil {
		return nil, err
	}
	levels := map[string]int{}
	for rows.Next() {
		var name string
		var level int64
		if err := rows.Scan(&name, &level); err != nil {
			rows.Close()
			return nil, err
		}
		levels[name] = int(level)
	}
	return levels, rows.Err()
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}
