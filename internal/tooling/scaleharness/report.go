package scaleharness

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/evsnap/evsnap/internal/tooling/benchharness"
)

// result returns the result of op at size, or nil.
func (r *Report) result(op string, size int64) *Result {
	for i := range r.Results {
		if r.Results[i].Op == op && r.Results[i].Size == size {
			return &r.Results[i]
		}
	}
	return nil
}

// Growth is the exponent k in time ∝ size^k between the smallest and the
// largest size measured for op: 1 is linear in the number of aggregates,
// 0 is flat. NaN when fewer than two sizes were measured.
func (r *Report) Growth(op string) float64 {
	var first, last *Result
	for _, s := range r.Sizes {
		if res := r.result(op, s); res != nil && !res.Skipped {
			if first == nil {
				first = res
			}
			last = res
		}
	}
	if first == nil || last == first || first.WallMS <= 0 || last.WallMS <= 0 {
		return math.NaN()
	}
	return math.Log(last.WallMS/first.WallMS) / math.Log(float64(last.Size)/float64(first.Size))
}

func count(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func ms(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// Markdown renders the report as a page section; chart is the SVG file's
// name next to the page ("" for none).
func (r *Report) Markdown(chart string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Store scale: the sweep, stats, verify, prune, a load and a save at up to %s aggregates\n\n", count(r.Sizes[len(r.Sizes)-1]))
	fmt.Fprintf(&b, "Measured by `make scale` on %s. PostgreSQL %s (shared_buffers %s, work_mem %s, max_parallel_workers_per_gather %s), on this machine's loopback.\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Settings["server_version"], r.Settings["shared_buffers"], r.Settings["work_mem"], r.Settings["max_parallel_workers_per_gather"])
	b.WriteString("The dataset is built with bulk SQL: Account aggregates with 1–9 events (1 in 1,000 with 150–300), 95% with a snapshot 0–3 behind, and 1 in 2,000 at least 100 behind. ")
	b.WriteString("Wall times are medians; each statement's figures come from `EXPLAIN (ANALYZE, BUFFERS)` of its first call.\n\n")

	sizes := benchharness.NewTable(append([]string{"aggregates"}, "events", "built in")...)
	for _, s := range r.Sizes {
		sizes.Add(count(s), fmt.Sprintf("%.1fM", float64(r.Events[s])/1e6), r.BuiltIn[s].Round(1e9).String())
	}
	b.WriteString(sizes.String() + "\n")

	head := []string{"operation"}
	for _, s := range r.Sizes {
		head = append(head, count(s)+" (ms)")
	}
	head = append(head, "growth k (time ∝ n^k)")
	t := benchharness.NewTable(head...)
	for _, op := range Ops {
		row := []string{op.Name}
		for _, s := range r.Sizes {
			if res := r.result(op.Name, s); res != nil && res.Skipped {
				row = append(row, "> "+ms(res.WallMS)+" (projected; not run)")
			} else if res != nil {
				row = append(row, ms(res.WallMS))
			} else {
				row = append(row, "–")
			}
		}
		g := r.Growth(op.Name)
		if math.IsNaN(g) {
			row = append(row, "–")
		} else {
			row = append(row, fmt.Sprintf("%.2f", g))
		}
		t.Add(row...)
	}
	b.WriteString(t.String() + "\n")
	for _, op := range Ops {
		fmt.Fprintf(&b, "- **%s**: %s.\n", op.Name, op.What)
	}
	b.WriteString("\n")
	if chart != "" {
		fmt.Fprintf(&b, "![Wall time against the number of aggregates, log-log](%s)\n\n", chart)
	}

	b.WriteString("What each statement reads, at each size:\n\n")
	st := benchharness.NewTable("operation", "aggregates", "statements (calls)", "execution (ms)", "rows read", "temp blocks", "sequential scans")
	for _, op := range Ops {
		for _, s := range r.Sizes {
			res := r.result(op.Name, s)
			if res == nil || len(res.Plans) == 0 {
				continue
			}
			var calls int
			var exec float64
			var rows, temp int64
			seq := map[string]bool{}
			for _, p := range res.Plans {
				calls += p.Calls
				exec += p.ExecMS
				rows += p.RowsRead
				temp += p.TempBlocks
				for _, t := range p.SeqScans {
					seq[t] = true
				}
			}
			var names []string
			for t := range seq {
				names = append(names, t)
			}
			sort.Strings(names)
			seqs := strings.Join(names, ", ")
			if seqs == "" {
				seqs = "none"
			}
			st.Add(op.Name, count(s), fmt.Sprintf("%d (%d)", len(res.Plans), calls), ms(exec), fmt.Sprint(rows), fmt.Sprint(temp), seqs)
		}
	}
	b.WriteString(st.String() + "\n")
	b.WriteString("Execution and rows read are of each distinct statement's first call (a listing that pages runs its statement once per page; `calls` counts them).\n\n")

	largest := r.Sizes[len(r.Sizes)-1]
	if res := r.result("sweep", largest); res != nil && len(res.Plans) > 0 {
		fmt.Fprintf(&b, "The sweep's listing at %s aggregates:\n\n```\n%s\n```\n\n", count(largest), res.Plans[0].Text)
	}
	return b.String()
}

// ChartSVG renders wall time against aggregates, one line per operation.
func (r *Report) ChartSVG() ([]byte, error) {
	c := benchharness.Chart{
		Title:   "Cost against the number of aggregates (PostgreSQL)",
		XLabel:  "aggregates",
		YLabel:  "wall time (ms)",
		XFormat: func(v float64) string { return count(int64(v)) },
	}
	for _, op := range Ops {
		s := benchharness.Series{Name: op.Name}
		for _, size := range r.Sizes {
			if res := r.result(op.Name, size); res != nil && !res.Skipped && res.WallMS > 0 {
				s.Points = append(s.Points, benchharness.Point{X: float64(size), Y: res.WallMS})
			}
		}
		if len(s.Points) > 0 {
			c.Series = append(c.Series, s)
		}
	}
	return c.SVG()
}
