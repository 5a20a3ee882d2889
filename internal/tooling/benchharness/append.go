package benchharness

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/appendgrowth"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
)

// AppendRow is one line of the append table: what an event cost as one
// stream grew on Backend, written by Writer ("store": the store's Append;
// "raw": the same inserts through the raw driver) with event ids of
// version IDs ("v4" or "v7").
type AppendRow struct {
	Backend, Writer, IDs string
	// PerEvent is, for each of the step's sizes, the median over the runs
	// of the mean cost of an event over the 1,000 events up to it.
	PerEvent map[int]time.Duration
	// Ratio is the median over the runs of each run's cost per event at
	// the largest size over that at the smallest.
	Ratio float64
	// Typical is, for each size, the median over the runs of the cost per
	// event of the median save of the 1,000 events up to it, and
	// TypicalRatio the median of each run's ratio of those: the cost of
	// an append at that size, without periodic work one save pays for
	// many (SQLite's WAL checkpoint).
	Typical      map[int]time.Duration
	TypicalRatio float64
	// Slowest is, for each size, the median over the runs of the slowest
	// save of the 1,000 events up to it.
	Slowest map[int]time.Duration
	// Stream is the median time of writing the whole stream.
	Stream time.Duration
	// VsRaw (store rows) is the median over the runs of the stream's time
	// over the raw writer's, with the same ids, written right after it.
	VsRaw float64
}

// appendSizes are the stream sizes the append step reports.
func (c *Config) appendSizes() []int {
	if c.Quick {
		return []int{1_000, 10_000}
	}
	return []int{1_000, 10_000, 100_000}
}

// repositoryIDVersion returns the version of the UUIDs a repository gives
// the events it saves (4: random, 7: time-ordered): saved to a memstore
// and read back.
func (h *Harness) repositoryIDVersion(ctx context.Context) (int, error) {
	store := memstore.New()
	repo, err := h.plainRepo(store)
	if err != nil {
		return 0, err
	}
	defer repo.Close(ctx)
	a := repo.New(uuid.New())
	if err := a.Open("probe", 1); err != nil {
		return 0, err
	}
	if err := repo.Save(ctx, a); err != nil {
		return 0, err
	}
	for rec, err := range store.ReadEvents(ctx, exampledomain.AccountType, a.ID(), 0) {
		if err != nil {
			return 0, err
		}
		return int(rec.ID.Version()), nil
	}
	return 0, fmt.Errorf("%w: the probe's event was not stored", errSanity)
}

// appendWriter opens a fresh store of kind b and returns a writer on it
// (its Append, or with raw the raw driver's inserts into its tables) and
// the function that closes it and removes its data.
func (h *Harness) appendWriter(ctx context.Context, b string, raw bool) (appendgrowth.Writer, func() error, error) {
	s, err := h.openSite(ctx, b, "append")
	if err != nil {
		return nil, nil, err
	}
	removeFile := func() {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			_ = os.Remove(s.path + suffix)
		}
	}
	cleanup := func() error {
		err := s.close(ctx)
		if s.path != "" {
			removeFile()
		}
		return err
	}
	switch {
	case !raw:
		return appendgrowth.StoreWriter(s.store), cleanup, nil
	case b == Postgres:
		return appendgrowth.PostgresRaw(s.pg.Pool(), appendgrowth.PostgresEventsTable(s.schema)), cleanup, nil
	case b == SQLite:
		// The store's connections close first: the raw writer is then the
		// database's only writer, as the store's writer is.
		if err := s.close(ctx); err != nil {
			removeFile()
			return nil, nil, err
		}
		w, done, err := appendgrowth.SQLiteRaw(ctx, s.path)
		if err != nil {
			removeFile()
			return nil, nil, err
		}
		return w, func() error { defer removeFile(); return done() }, nil
	}
	_ = cleanup()
	return nil, nil, fmt.Errorf("no raw writer for %s", b)
}

// runAppend is the append step for one SQL backend: a stream written in
// saves of 100 through the store's Append and through the raw driver,
// with random and time-ordered event ids, each cell once per run, the
// cells of a run back to back.
func (h *Harness) runAppend(ctx context.Context, b string) error {
	if b == Memstore {
		return nil // no database under it: nothing to compare with
	}
	if h.report.RepositoryIDs == 0 {
		v, err := h.repositoryIDVersion(ctx)
		if err != nil {
			return err
		}
		h.report.RepositoryIDs = v
	}
	sizes := h.cfg.appendSizes()
	type cell struct {
		per, typical, slowest map[int][]time.Duration
		ratios, typicalRatios []float64
		streams               []time.Duration
		vsRaw                 []float64
	}
	cells := map[string]*cell{}
	key := func(writer, ids string) string { return writer + "/" + ids }
	for run := range h.cfg.Runs {
		for _, ids := range appendgrowth.IDs {
			var store time.Duration
			for _, writer := range []string{"store", "raw"} {
				w, done, err := h.appendWriter(ctx, b, writer == "raw")
				if err != nil {
					return err
				}
				res, err := appendgrowth.Stream(ctx, w, ids.New, sizes)
				if cerr := done(); err == nil {
					err = cerr
				}
				if err != nil {
					return fmt.Errorf("%s writer, %s ids: %w", writer, ids.Name, err)
				}
				c := cells[key(writer, ids.Name)]
				if c == nil {
					c = &cell{per: map[int][]time.Duration{}, typical: map[int][]time.Duration{}, slowest: map[int][]time.Duration{}}
					cells[key(writer, ids.Name)] = c
				}
				for n, d := range res.PerEvent {
					c.per[n] = append(c.per[n], d)
					c.typical[n] = append(c.typical[n], res.Typical[n])
					c.slowest[n] = append(c.slowest[n], res.Slowest[n])
				}
				c.ratios = append(c.ratios, res.Ratio(sizes))
				c.typicalRatios = append(c.typicalRatios, res.TypicalRatio(sizes))
				c.streams = append(c.streams, res.Total)
				if writer == "store" {
					store = res.Total
				} else {
					cells[key("store", ids.Name)].vsRaw = append(cells[key("store", ids.Name)].vsRaw, ratio(store, res.Total))
				}
				h.progress("append / %s: run %d/%d, %s, %s ids: %s events in %s (µs/event %s)", b, run+1, h.cfg.Runs, writer, ids.Name,
					thousands(int64(sizes[len(sizes)-1])), res.Total.Round(time.Millisecond), perEventList(res.PerEvent, sizes))
			}
		}
	}
	for _, ids := range appendgrowth.IDs {
		for _, writer := range []string{"store", "raw"} {
			c := cells[key(writer, ids.Name)]
			row := AppendRow{Backend: b, Writer: writer, IDs: ids.Name, PerEvent: map[int]time.Duration{},
				Typical: map[int]time.Duration{}, Slowest: map[int]time.Duration{},
				Ratio: medianFloat(c.ratios), TypicalRatio: medianFloat(c.typicalRatios), Stream: Median(c.streams), VsRaw: medianFloat(c.vsRaw)}
			for n, ds := range c.per {
				row.PerEvent[n] = Median(ds)
				row.Typical[n] = Median(c.typical[n])
				row.Slowest[n] = Median(c.slowest[n])
			}
			h.report.addAppend(row)
		}
	}
	return nil
}

func perEventList(per map[int]time.Duration, sizes []int) string {
	parts := make([]string, len(sizes))
	for i, n := range sizes {
		parts[i] = us(per[n])
	}
	return strings.Join(parts, " / ")
}

// medianFloat is the median of xs (0 for none).
func medianFloat(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *Report) addAppend(row AppendRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Append = append(r.Append, row)
}

// appendRow returns the row of backend b, writer w and ids.
func (r *Report) appendRow(b, w, ids string) (AppendRow, bool) {
	for _, a := range r.Append {
		if a.Backend == b && a.Writer == w && a.IDs == ids {
			return a, true
		}
	}
	return AppendRow{}, false
}

// Issue 20's append targets.
const (
	targetAppendFlat  = 1.3 // cost per event at 100,000 / at 1,000
	targetAppendVsRaw = 1.5 // the store's stream / the raw driver's
)

func (r *Report) writeAppend(b *strings.Builder) {
	if len(r.Append) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	sizes := r.AppendSizes
	p("## 8. Append cost as the stream grows\n\n")
	p("One stream of %s events written in saves of %d into a fresh database (a new SQLite file, a new PostgreSQL schema), each save timed: ", thousands(int64(sizes[len(sizes)-1])), appendgrowth.Save)
	p("*store* is the store's `Append` with the expected version, as a repository saves; *raw* the same inserts through the raw driver into the store's own tables ")
	p("(SQLite: database/sql on a connection opened like the store's writer, one `BEGIN IMMEDIATE` transaction and a prepared `INSERT` per event; ")
	p("PostgreSQL: pgx, one `INSERT ... SELECT FROM unnest` per save), without the stream row. ")
	p("*µs/event at n* is the mean over the %s events up to n; the ratio compares the largest size with the smallest. ", thousands(appendgrowth.Window))
	p("*median save* is the same ratio for the median save of those windows (per event): the cost of an append at that size. ")
	p("The mean also carries periodic work that one save pays for many: SQLite checkpoints its write-ahead log into the database file each time the log reaches 1,000 pages (about every hundred saves here), in the save that crosses it, and the first 1,000 events never reach one; *slowest save* shows it. ")
	p("Event ids are random (v4) or time-ordered (v7); a repository gives v%d ids today. ", r.RepositoryIDs)
	p("Each figure is the median of the runs, the four streams of a run written back to back; *store / raw* is the median of each run's ratio. ")
	p("Reproduce with `go test -run '^$' -bench AppendGrowth -benchtime 1x -count 6 ./lib/sqlitestore/ ./lib/pgstore/`.\n\n")
	header := []string{"backend", "writer", "event ids"}
	for _, n := range sizes {
		header = append(header, fmt.Sprintf("µs/event at %s:", thousands(int64(n))))
	}
	header = append(header, fmt.Sprintf("%s / %s:", thousands(int64(sizes[len(sizes)-1])), thousands(int64(sizes[0]))), "median save:",
		fmt.Sprintf("slowest save ms at %s / %s", thousands(int64(sizes[0])), thousands(int64(sizes[len(sizes)-1]))), "stream s:", "store / raw:")
	t := NewTable(header...)
	for _, a := range r.Append {
		cells := []string{a.Backend, a.Writer, a.IDs}
		for _, n := range sizes {
			cells = append(cells, us(a.PerEvent[n]))
		}
		vs := ""
		if a.Writer == "store" {
			vs = times(a.VsRaw)
		}
		cells = append(cells, times(a.Ratio), times(a.TypicalRatio),
			ms(a.Slowest[sizes[0]])+" / "+ms(a.Slowest[sizes[len(sizes)-1]]), sig(a.Stream.Seconds()), vs)
		t.Add(cells...)
	}
	b.WriteString(t.String())
	p("\n")
}

// appendTargets evaluates issue 20's append targets, judged on the ids a
// repository gives (the other kind's figure in the note).
func (r *Report) appendTargets() []Target {
	if len(r.Append) == 0 {
		return nil
	}
	sizes := r.AppendSizes
	first, last := thousands(int64(sizes[0])), thousands(int64(sizes[len(sizes)-1]))
	repo := fmt.Sprintf("v%d", r.RepositoryIDs)
	other := "v7"
	if repo == "v7" {
		other = "v4"
	}
	var ts []Target
	for _, bk := range []string{SQLite, Postgres} {
		s, ok := r.appendRow(bk, "store", repo)
		if !ok {
			continue
		}
		o, _ := r.appendRow(bk, "store", other)
		raw, _ := r.appendRow(bk, "raw", repo)
		t := Target{
			What: fmt.Sprintf("%s: appending the %sth event costs within 1.3× of the %sth (Store.Append, the repository's %s ids; the median save)", bk, last, first, repo),
			Measured: fmt.Sprintf("%s µs / %s µs per event (means over the last 1,000: %s / %s)", us(s.Typical[sizes[len(sizes)-1]]), us(s.Typical[sizes[0]]),
				us(s.PerEvent[sizes[len(sizes)-1]]), us(s.PerEvent[sizes[0]])),
			Ratio: s.TypicalRatio, Goal: "≤ 1.3×", Met: s.TypicalRatio <= targetAppendFlat,
			Note: fmt.Sprintf("the means: %s (slowest save %s ms at %s, %s ms at %s); %s ids: %s; the raw driver with %s ids: %s",
				times(s.Ratio), ms(s.Slowest[sizes[len(sizes)-1]]), last, ms(s.Slowest[sizes[0]]), first,
				other, times(o.TypicalRatio), repo, times(raw.TypicalRatio)),
		}
		if len(sizes) < 3 {
			t.NA, t.Note = true, "judged at 100,000 events (full form); "+t.Note
		}
		ts = append(ts, t, Target{
			What:     fmt.Sprintf("%s: a %s-event stream in saves of %d within 1.5× of the raw driver (%s ids)", bk, last, appendgrowth.Save, repo),
			Measured: fmt.Sprintf("%s s vs %s s", sig(s.Stream.Seconds()), sig(raw.Stream.Seconds())),
			Ratio:    s.VsRaw, Goal: "≤ 1.5×", Met: s.VsRaw <= targetAppendVsRaw,
			Note: fmt.Sprintf("%s ids: %s", other, times(o.VsRaw)),
		})
	}
	return ts
}
