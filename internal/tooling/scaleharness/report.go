package scaleharness

import (
	"fmt"
	"math"
	"slices"
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

	sizes := benchharness.NewTable(append([]string{"aggregates"}, "events", "on disk (tables and indexes)", "built in")...)
	for _, s := range r.Sizes {
		disk := "–"
		if b := r.Bytes[s]; b >= 1e9 {
			disk = fmt.Sprintf("%.1f GB", float64(b)/1e9)
		} else if b > 0 {
			disk = fmt.Sprintf("%.0f MB", float64(b)/1e6)
		}
		sizes.Add(count(s), fmt.Sprintf("%.1fM", float64(r.Events[s])/1e6), disk, r.BuiltIn[s].Round(1e9).String())
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
	st := benchharness.NewTable("operation", "aggregates", "statements (calls)", "execution (ms)", "slowest call (ms)", "rows read", "temp blocks", "sequential scans")
	for _, op := range Ops {
		for _, s := range r.Sizes {
			res := r.result(op.Name, s)
			if res == nil || len(res.Plans) == 0 {
				continue
			}
			var calls int
			var exec, slowest float64
			var rows, temp int64
			seq := map[string]bool{}
			for _, p := range res.Plans {
				calls += p.Calls
				exec += p.ExecMS
				slowest = max(slowest, p.SlowestMS)
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
			st.Add(op.Name, count(s), fmt.Sprintf("%d (%d)", len(res.Plans), calls), ms(exec), ms(slowest), fmt.Sprint(rows), fmt.Sprint(temp), seqs)
		}
	}
	b.WriteString(st.String() + "\n")
	b.WriteString("Execution and rows read are of each distinct statement's first call (a listing that pages runs its statement once per page; `calls` counts them); the slowest call is the longest any call of them took, rows read included, from the client's side.\n\n")

	var notes []string
	for _, res := range r.Results {
		if res.Note != "" {
			notes = append(notes, fmt.Sprintf("- **%s** at %s: %s.", res.Op, count(res.Size), res.Note))
		}
	}
	if len(notes) > 0 {
		b.WriteString("How near the estimates came:\n\n" + strings.Join(notes, "\n") + "\n\n")
	}

	b.WriteString(r.loadSection())

	if sq := r.SQLite; sq != nil {
		fmt.Fprintf(&b, "### SQLite: the sweep, stats and verify at %s aggregates\n\n", count(sq.Size))
		fmt.Fprintf(&b, "A file of %s aggregates (%.1fM events, %.1f GB) built with plain inserts in %s, with the spread above; the store's own connections (WAL). Wall times are medians.\n\n",
			count(sq.Size), float64(sq.Events)/1e6, float64(sq.FileBytes)/1e9, sq.BuiltIn.Round(1e9))
		t := benchharness.NewTable("operation", count(sq.Size)+" (ms)")
		for _, res := range sq.Results {
			t.Add(res.Op, ms(res.WallMS))
		}
		b.WriteString(t.String() + "\n")
	}

	largest := r.Sizes[len(r.Sizes)-1]
	for _, e := range []struct{ op, what string }{
		{"sweep-listing", "The listing every sweep pass ran before decision 37"},
		{"sweep", "A sweep pass that finds nothing changed: its page of the change order"},
		{"sweep-changes", "The page of a pass after 1,000 changes"},
		{"sweep-full", "The first page of a full pass"},
	} {
		res := r.result(e.op, largest)
		if res == nil || len(res.Plans) == 0 {
			continue
		}
		p := res.Plans[len(res.Plans)-1] // the sweep's scan comes after its mark's read
		fmt.Fprintf(&b, "%s, at %s aggregates:\n\n```\n%s\n```\n\n", e.what, count(largest), p.Text)
	}
	return b.String()
}

// loadSection says what a load reads at each size: how deep the indexes
// it walks are, and how many blocks it touches and from where.
func (r *Report) loadSection() string {
	var rows [][]string
	base := r.result("load-cached", r.Sizes[0])
	for _, s := range r.Sizes {
		load, cached := r.result("load", s), r.result("load-cached", s)
		if load == nil || load.Reads == nil || cached == nil {
			continue
		}
		levels := func(suffix string) string {
			for name, l := range r.IndexLevels[s] {
				if strings.HasSuffix(name, suffix) {
					return fmt.Sprint(l)
				}
			}
			return "?"
		}
		ratio := "–"
		if base != nil && base.WallMS > 0 {
			ratio = fmt.Sprintf("%.2f×", cached.WallMS/base.WallMS)
		}
		rd := load.Reads
		rows = append(rows, []string{count(s), fmt.Sprintf("%.1fM", float64(r.Events[s])/1e6),
			levels("stream_version_key") + " / " + levels("streams_pkey") + " / " + levels("snapshots_pkey"),
			ms(cached.WallMS) + spread(cached.RoundsMS), ratio, fmt.Sprintf("%.1f", rd.CachedHit), ms(rd.CachedExecMS),
			ms(load.WallMS) + spread(load.RoundsMS), fmt.Sprintf("%.1f / %.1f", rd.ColdHit, rd.ColdRead), ms(rd.ColdReadMS), ms(rd.ColdExecMS)})
	}
	if len(rows) == 0 {
		return ""
	}
	t := benchharness.NewTable("aggregates", "events", "index levels (events, streams, snapshots)", "cached load (ms; rounds' range)", "vs smallest", "blocks (cached)", "execution (cached, ms)",
		"random load (ms; rounds' range)", "blocks hit / read (random)", "reading (random, ms)", "execution (random, ms)")
	for _, row := range rows {
		t.Add(row...)
	}
	return "What a snapshot load reads, at each size (the load's one statement under `EXPLAIN (ANALYZE, BUFFERS)` with `track_io_timing`; means over 20 random aggregates, then the same statement again at once for the cached figures). " +
		"Index levels are each B-tree's levels under its root, from its metapage. Blocks read came from outside shared buffers: the OS page cache, or the disk once the data outgrows memory.\n\n" + t.String() + "\n"
}

// spread is " (lowest–highest)" of rounds' medians, or "" for fewer than
// two.
func spread(rounds []float64) string {
	if len(rounds) < 2 {
		return ""
	}
	return " (" + ms(slices.Min(rounds)) + "–" + ms(slices.Max(rounds)) + ")"
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
