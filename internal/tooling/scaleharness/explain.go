package scaleharness

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

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
}

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
	if q, ok := c.calls[d.SQL]; ok {
		q.calls++
		return ctx
	}
	c.order = append(c.order, d.SQL)
	c.calls[d.SQL] = &captured{sql: d.SQL, args: append([]any(nil), d.Args...), calls: 1}
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (c *capture) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Plan is what EXPLAIN (ANALYZE, BUFFERS) says about one statement.
type Plan struct {
	SQL   string
	Calls int
	// ExecMS is the statement's execution time in milliseconds.
	ExecMS float64
	// RowsRead is the rows its scan nodes read: returned plus removed by
	// filters and rechecks, times loops.
	RowsRead int64
	// TempBlocks is the temporary-file blocks it read and wrote (spills).
	TempBlocks int64
	// SharedBlocks is the shared buffer blocks it hit or read.
	SharedBlocks int64
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
	Plans            []planNode `json:"Plans"`
}

// explain runs EXPLAIN (ANALYZE, BUFFERS) of q in a transaction it rolls
// back, so a DELETE explained changes nothing.
func explain(ctx context.Context, pool *pgxpool.Pool, q *captured) (Plan, error) {
	p := Plan{SQL: q.sql, Calls: q.calls}
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
