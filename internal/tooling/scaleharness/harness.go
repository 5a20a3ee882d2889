// Package scaleharness is the program behind `make scale`: it builds a
// large PostgreSQL dataset with bulk SQL (not the repository), 100
// thousand to 10 million Account aggregates with about 5 events each and a
// realistic spread of how far each snapshot is behind, and measures at
// each size what the snapshotter's periodic and administrative work costs
// (the sweep's listing, stats estimated and --exact, verify --sample, a
// batched prune) beside a snapshot load and a one-event save: wall time,
// and for every statement it runs, EXPLAIN (ANALYZE, BUFFERS)'s execution
// time, rows read, temp blocks and sequential scans, and its longest call.
// It says how near the estimated stats came to the true figures. It
// writes a table and a log-log chart.
//
// It checks free disk space first, reports progress while it builds, and
// drops its schema at the end (unless Keep).
package scaleharness

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures a run.
type Config struct {
	// PostgresURL is the server to build on (a schema of its own).
	PostgresURL string
	// Sizes are the aggregate counts to measure at, ascending; the
	// dataset grows from one to the next.
	Sizes []int64
	// Keep leaves the schema in place at the end.
	Keep bool
	// MaxOpTime skips an operation at a size where the time projected
	// linearly from the previous size is above it (reported as such).
	MaxOpTime time.Duration
	// Progress receives one line per step.
	Progress io.Writer
	// SQLiteSize, when positive, also measures the sweep on a SQLite file
	// of that many aggregates, built under SQLiteDir (the system's
	// temporary directory when empty) and removed at the end.
	SQLiteSize int64
	SQLiteDir  string
}

// Op is one measured operation.
type Op struct {
	Name string
	// What describes it for the page.
	What string
}

// Ops are the measured operations, in the page's order.
var Ops = []Op{
	{"sweep", "a reconciliation pass (the worker's `Sweep`) that finds nothing changed since its last: it reads its mark and one page of the change order (decision 37)"},
	{"sweep-changes", "what a pass examines after 1,000 streams changed since its mark: the change order from the mark, a page of up to 5,000 (the changes are 1,000 random streams updated, as appends move them)"},
	{"sweep-full", "a full pass's examination (a sweep's first pass, or the first after a prune): every aggregate in id order, 5,000 a page, those at least 100 behind returned"},
	{"sweep-listing", "the listing every pass ran before decision 37 (and `stats --exact` still runs for its stalest): aggregates at least 100 behind, most behind first, the first 1,000"},
	{"stats", "`snapshotter stats`: the count (the planner's estimate) and two random samples of 5,000 aggregates (20 index probes at random ids, each listing 250 neighbours), estimated counts and quantiles of how far behind, and the 10 stalest of the sample"},
	{"stats-exact", "`snapshotter stats --exact`: every aggregate read, twice, and the 10 stalest of all"},
	{"verify-sample", "`snapshotter verify --sample 100`: picks 100 aggregates (the store's count, then an index probe at a random id per pick), replays each and compares"},
	{"prune", "`snapshotter prune --schema-below 1`: a whole prune that finds nothing to remove, in batches of 1,000 aggregates (one statement each)"},
	{"rebuild-500", "`snapshotter rebuild`, unlimited rate, stopped after 500 aggregates from a random id (a page of its keyset-paginated listing, and a load and a snapshot write per aggregate)"},
	{"load", "a snapshot load of a random aggregate with a snapshot (the median of 5 rounds' medians of 100): its pages are mostly not in shared buffers"},
	{"load-cached", "a snapshot load of one of 20 aggregates loaded over and over (5 rounds of 100): its pages are in shared buffers, so only the indexes' depth grows with the store"},
	{"save", "a one-event save of a random aggregate: load, deposit, save (5 rounds of 100)"},
	{"save-cached", "a one-event save of one of 20 aggregates saved over and over (5 rounds of 100)"},
}

// Result is one operation at one size.
type Result struct {
	Op   string
	Size int64
	// WallMS is the median wall time of the operation, in milliseconds.
	WallMS float64
	// Plans are the statements it ran (for load and save: none).
	Plans []Plan
	// Reads is what a load's statement reads (load only).
	Reads *Reads
	// RoundsMS are the medians of the rounds of a load or save op, whose
	// median WallMS is.
	RoundsMS []float64
	// Skipped: not run, because the time projected linearly from the
	// previous size (WallMS) is above Config.MaxOpTime.
	Skipped bool
	// Note says something about the result for the page (stats: how
	// near its estimates came).
	Note string
}

// last returns op's result at the largest size measured so far, or nil.
func (r *Report) last(op string) *Result {
	for i := len(r.Results) - 1; i >= 0; i-- {
		if r.Results[i].Op == op {
			return &r.Results[i]
		}
	}
	return nil
}

// Report is a run's outcome.
type Report struct {
	// IndexLevels are the levels of each B-tree index under its root
	// (0: the root is a leaf), at each size.
	IndexLevels map[int64]map[string]int
	Sizes       []int64
	Events      map[int64]int64 // events stored at each size
	Bytes       map[int64]int64 // the tables' size on disk, indexes included, at each size
	Results     []Result
	Settings    map[string]string
	BuiltIn     map[int64]time.Duration // time to grow to each size
	Started     time.Time
	// SQLite is the SQLite part (nil when not measured).
	SQLite *SQLiteReport
}

// Run builds and measures.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if len(cfg.Sizes) == 0 || !slices.IsSorted(cfg.Sizes) || cfg.Sizes[0] < 1000 {
		return nil, fmt.Errorf("sizes %v: want ascending sizes of at least 1000", cfg.Sizes)
	}
	if cfg.MaxOpTime <= 0 {
		cfg.MaxOpTime = 3 * time.Minute
	}
	progress := func(s string) { fmt.Fprintf(cfg.Progress, "%s  %s\n", time.Now().Format("15:04:05"), s) }
	tracer := &capture{}
	pcfg, err := pgxpool.ParseConfig(cfg.PostgresURL)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	pcfg.ConnConfig.Tracer = tracer
	pcfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	maxSize := cfg.Sizes[len(cfg.Sizes)-1]
	if err := checkDisk(ctx, pool, maxSize, progress); err != nil {
		return nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	schema := "evsnap_scale_" + hex.EncodeToString(b[:])
	store, err := pgstore.New(pool, pgstore.WithSchema(schema), pgstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("migrate %s: %w", schema, err)
	}
	progress("schema " + schema + " created")
	if !cfg.Keep {
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
			defer cancel()
			if _, err := pool.Exec(dctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
				progress("could not drop schema " + schema + ": " + err.Error())
				return
			}
			progress("schema " + schema + " dropped")
		}()
	} else {
		defer progress("kept schema " + schema)
	}

	rep := &Report{IndexLevels: map[int64]map[string]int{}, Bytes: map[int64]int64{}, Sizes: cfg.Sizes, Events: map[int64]int64{}, BuiltIn: map[int64]time.Duration{}, Settings: map[string]string{}, Started: time.Now()}
	for _, name := range []string{"server_version", "shared_buffers", "work_mem", "max_parallel_workers_per_gather"} {
		var v string
		if err := pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err == nil {
			rep.Settings[name] = v
		}
	}
	reg := exampledomain.NewRegistry()
	w, err := snapshotter.New(snapshotter.Config{Store: store, Stream: "x", Consumer: sweepName, SubjectPrefix: "x", BatchSize: 1, Concurrency: 1, WriteBatch: 1, ReadBatch: 1,
		AckWait: time.Second, MaxDeliveries: 1, MaxSnapshotBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler),
		SweepRate: 1e6, SweepBatch: 1000},
		snapshotter.For[exampledomain.Account](reg, eventsource.Policy{Threshold: dataThreshold}))
	if err != nil {
		return nil, err
	}
	repo, err := eventsource.NewRepository[exampledomain.Account](store, reg, eventsource.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, err
	}
	defer func() { _ = repo.Close(context.WithoutCancel(ctx)) }()

	var built, events int64
	for _, size := range cfg.Sizes {
		t0 := time.Now()
		n, err := growUnindexed(ctx, pool, schema, built, size, progress)
		events += n
		if err != nil {
			return rep, err
		}
		progress(fmt.Sprintf("VACUUM ANALYZE at %d aggregates", size))
		for _, t := range []string{"streams", "snapshots", "events"} {
			if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+schema+"."+t); err != nil {
				return rep, err
			}
		}
		// Write out what the build dirtied, so the server's flushing of it
		// does not compete with the measurements (commits wait on the disk).
		progress(fmt.Sprintf("CHECKPOINT at %d aggregates", size))
		if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
			progress("CHECKPOINT failed (it needs a superuser or pg_checkpoint): " + err.Error())
		}
		rep.BuiltIn[size] = time.Since(t0)
		rep.Events[size] = events
		var bytes int64
		if err := pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'`, schema).Scan(&bytes); err == nil {
			rep.Bytes[size] = bytes
		}
		if levels, err := indexLevels(ctx, pool, schema); err != nil {
			progress("index levels not measured: " + err.Error())
		} else {
			rep.IndexLevels[size] = levels
		}
		built = size
		for _, op := range Ops {
			// A skipped result holds its projection: project on from it.
			if prev := rep.last(op.Name); prev != nil {
				if proj := prev.WallMS * float64(size) / float64(prev.Size); proj > float64(cfg.MaxOpTime.Milliseconds()) {
					progress(fmt.Sprintf("skipping %s at %d aggregates: %.0f s projected linearly from %d (above --max-op-time %v)", op.Name, size, proj/1000, prev.Size, cfg.MaxOpTime))
					rep.Results = append(rep.Results, Result{Op: op.Name, Size: size, Skipped: true, WallMS: proj})
					continue
				}
			}
			progress(fmt.Sprintf("measuring %s at %d aggregates", op.Name, size))
			r, err := measure(ctx, op.Name, size, pool, schema, tracer, store, w, progress, repo)
			if err != nil {
				return rep, fmt.Errorf("%s at %d: %w", op.Name, size, err)
			}
			progress(fmt.Sprintf("  %s: %.2f ms", op.Name, r.WallMS))
			rep.Results = append(rep.Results, r)
		}
	}
	if cfg.SQLiteSize > 0 {
		sq, err := RunSQLite(ctx, cfg.SQLiteSize, cfg.SQLiteDir, progress)
		if err != nil {
			return rep, fmt.Errorf("SQLite: %w", err)
		}
		rep.SQLite = sq
	}
	return rep, nil
}

// measure runs one operation: once to warm the cache and capture its SQL,
// then timed (up to 5 runs or 20 s), and explains what it captured.
func measure(ctx context.Context, op string, size int64, pool *pgxpool.Pool, schema string, tracer *capture, store *pgstore.Store, w *snapshotter.Worker, progress func(string),
	repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account]) (Result, error) {
	r := Result{Op: op, Size: size}
	var run func() error
	note := func() string { return "" }
	switch op {
	case "sweep", "sweep-changes", "sweep-full", "sweep-listing":
		var err error
		run, err = sweepOp(ctx, op, store, w, func() (eventsource.ChangePosition, int, error) {
			return touchStreams(ctx, pool, store, size, 1000)
		}, progress)
		if err != nil {
			return r, err
		}
	case "stats", "stats-exact":
		var st snapshotter.Stats
		run = func() error {
			var err error
			st, err = w.Stats(ctx, scaleTypeName, snapshotter.StatsOptions{Stalest: 10, Exact: op == "stats-exact"})
			return err
		}
		note = func() string { return statsNote(ctx, pool, schema, st) }
	case "verify-sample":
		run = adminOp(ctx, op, w)
	case "prune":
		run = func() error {
			res, err := w.Prune(ctx, scaleTypeName, 1, snapshotter.PruneOptions{})
			if err == nil && (!res.Done || !res.Batched) {
				err = fmt.Errorf("prune = %+v, want done in batches", res)
			}
			return err
		}
	case "rebuild-500":
		run = func() error {
			var after uuid.UUID
			_, _ = rand.Read(after[:])
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			res, err := w.Rebuild(rctx, scaleTypeName, snapshotter.RebuildOptions{After: after, Rate: 1e9, Progress: func(p snapshotter.RebuildProgress) {
				if p.Rebuilt+p.Failed == 500 {
					cancel()
				}
			}})
			switch {
			case res.Failed > 0:
				return fmt.Errorf("rebuild: %d failed: %v", res.Failed, res.Errors[0])
			case errors.Is(err, context.Canceled) && ctx.Err() == nil, err == nil:
				return nil // stopped after 500, or the ids above after were fewer
			}
			return err
		}
	case "load", "save", "load-cached", "save-cached":
		r, err := measureRepo(ctx, op, size, repo)
		if err == nil && op == "load" {
			reads, rerr := loadReads(ctx, pool, tracer, size, repo)
			if rerr != nil {
				progress("what a load reads is not measured: " + rerr.Error())
			}
			r.Reads = reads
		}
		return r, err
	default:
		return r, fmt.Errorf("unknown op %q", op)
	}
	tracer.start()
	t0 := time.Now()
	err := run()
	first := float64(time.Since(t0).Microseconds()) / 1000
	captured := tracer.stop()
	if err != nil {
		return r, err
	}
	var times []float64
	if first > 2000 {
		times = append(times, first) // slow enough that caches do not matter: one run
	}
	for deadline := time.Now().Add(20 * time.Second); len(times) < 5 && (len(times) == 0 || time.Now().Before(deadline)); {
		t0 := time.Now()
		if err := run(); err != nil {
			return r, err
		}
		times = append(times, float64(time.Since(t0).Microseconds())/1000)
	}
	r.WallMS = median(times)
	r.Note = note()
	for _, q := range captured {
		p, err := explain(ctx, pool, q)
		if err != nil {
			return r, err
		}
		r.Plans = append(r.Plans, p)
	}
	return r, nil
}

// statsNote compares an estimated Stats with the true figures (counted
// with SQL, outside the measurement).
func statsNote(ctx context.Context, pool *pgxpool.Pool, schema string, st snapshotter.Stats) string {
	if st.Sampled == 0 {
		return ""
	}
	var aggs, snaps int64
	err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM %[1]s.streams WHERE aggregate_type = $1), (SELECT count(*) FROM %[1]s.snapshots WHERE aggregate_type = $1 AND schema_version = 1)`, schema),
		scaleTypeName).Scan(&aggs, &snaps)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("estimated %d aggregates (true %d, %+.2f%%), %d ± %d snapshots (true %d, %+.2f%%), p99 %d behind, from a sample of %d",
		st.Aggregates, aggs, 100*float64(int64(st.Aggregates)-aggs)/float64(aggs),
		st.Snapshots, st.SnapshotsMargin, snaps, 100*float64(int64(st.Snapshots)-snaps)/float64(max(snaps, 1)), st.EventsBehind.P99, st.Sampled)
}

// sweepName is the consumer of the harness's worker: the name of its
// sweep marks.
const sweepName = "x"

// sweepOp readies the sweep operation op on store (the harness's worker
// w sweeps it; changeSome moves 1,000 streams in change order) and
// returns what to time.
func sweepOp(ctx context.Context, op string, store eventsource.SweepStore, w *snapshotter.Worker,
	changeSome func() (eventsource.ChangePosition, int, error), progress func(string)) (func() error, error) {
	switch op {
	case "sweep":
		if err := markAtEnd(ctx, store); err != nil {
			return nil, err
		}
		// A first pass examines what changed while the mark was stored
		// (another session's open transaction can hold the horizon back).
		if _, err := w.Sweep(ctx); err != nil {
			return nil, err
		}
		return func() error {
			n, err := w.Sweep(ctx)
			if err == nil && n != 0 {
				err = fmt.Errorf("a pass after nothing changed snapshotted %d", n)
			}
			return err
		}, nil
	case "sweep-changes":
		from, n, err := changeSome()
		if err == nil {
			err = changesFinal(ctx, store, from, n, progress)
		}
		if err != nil {
			return nil, err
		}
		return func() error { _, err := scanPages(ctx, store, eventsource.ScanOptions{After: from}); return err }, nil
	case "sweep-full":
		return func() error { _, err := scanPages(ctx, store, eventsource.ScanOptions{ByID: true}); return err }, nil
	case "sweep-listing":
		return func() error {
			for _, err := range store.ListAggregates(ctx, scaleTypeName, eventsource.ListOptions{SchemaVersion: 1, MinBehind: dataThreshold, MostBehindFirst: true, Limit: 1000}) {
				if err != nil {
					return err
				}
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("unknown sweep op %q", op)
}

// markAtEnd stores the harness worker's sweep mark of Account at the end
// of the change order, as a pass that has examined every change leaves it
// (the dataset is built with bulk SQL, and grows between sizes).
func markAtEnd(ctx context.Context, store eventsource.SweepStore) error {
	key := eventsource.SweepMarkKey{Name: sweepName, AggregateType: scaleTypeName, SchemaVersion: 1}
	page, err := store.ScanAggregates(ctx, scaleTypeName, eventsource.ScanOptions{SchemaVersion: 1, MinBehind: dataThreshold, Examine: 1, ByID: true})
	if err != nil {
		return err
	}
	m, err := store.GetSweepMark(ctx, key)
	if err != nil {
		return err
	}
	_, err = store.PutSweepMark(ctx, key, eventsource.SweepMark{Generation: m.Generation, Threshold: dataThreshold, Changes: true, After: page.Horizon})
	return err
}

// touch moves n streams (ids from pick) to the end of the change order
// with apply and returns the change position before them and how many
// distinct streams it moved.
func touch(ctx context.Context, store eventsource.SweepStore, apply func([]uuid.UUID) error, pick func() uuid.UUID, n int) (eventsource.ChangePosition, int, error) {
	page, err := store.ScanAggregates(ctx, scaleTypeName, eventsource.ScanOptions{SchemaVersion: 1, Examine: 1, ByID: true})
	if err != nil {
		return eventsource.ChangePosition{}, 0, err
	}
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = pick()
	}
	return page.Horizon, distinct(ids), apply(ids)
}

// touchStreams moves n random streams of the size aggregates to the end
// of the change order (an UPDATE of their rows, which the trigger of
// migration 5 moves as it moves an append's) and returns the change
// position before them and how many distinct streams it moved.
func touchStreams(ctx context.Context, pool *pgxpool.Pool, store *pgstore.Store, size int64, n int) (eventsource.ChangePosition, int, error) {
	return touch(ctx, store, func(ids []uuid.UUID) error {
		raw := make([][16]byte, len(ids))
		for i, id := range ids {
			raw[i] = id
		}
		_, err := pool.Exec(ctx, "UPDATE "+pgx.Identifier{store.Schema(), "streams"}.Sanitize()+" SET version = version WHERE aggregate_type = $1 AND aggregate_id = ANY($2)", scaleTypeName, raw)
		return err
	}, func() uuid.UUID { return scaleID(mrand.Int64N(size)) }, n)
}

// scanPages pages Account's aggregates at least 100 behind, as a sweep
// pass examines them, from opts's start to the end, and returns how many
// it examined.
func scanPages(ctx context.Context, store eventsource.SweepStore, opts eventsource.ScanOptions) (int, error) {
	opts.SchemaVersion, opts.MinBehind, opts.Examine = 1, dataThreshold, sweepPageSize
	examined := 0
	for {
		page, err := store.ScanAggregates(ctx, scaleTypeName, opts)
		if err != nil {
			return examined, err
		}
		examined += page.Examined
		if page.End {
			return examined, nil
		}
		opts.After, opts.AfterID = page.Next, page.NextID
	}
}

// changesFinal waits until a scan in change order from `from` examines
// at least n aggregates: on PostgreSQL a page stops short of the changes
// of transactions still open, anywhere on the server (another session's
// bulk load holds it back).
func changesFinal(ctx context.Context, store eventsource.SweepStore, from eventsource.ChangePosition, n int, progress func(string)) error {
	for start := time.Now(); ; {
		got, err := scanPages(ctx, store, eventsource.ScanOptions{After: from})
		if err != nil || got >= n {
			return err
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("a scan of the change order examined %d of %d changed streams after 10 minutes: a transaction left open on the server holds it back", got, n)
		}
		if time.Since(start) > 5*time.Second {
			progress(fmt.Sprintf("waiting for the changes to be final (%d of %d examined): a transaction open on the server holds them back", got, n))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// distinct counts the distinct ids of ids.
func distinct(ids []uuid.UUID) int {
	seen := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	return len(seen)
}

// sweepPageSize is the page the snapshotter's sweep examines
// (lib/snapshotter's sweepPage).
const sweepPageSize = 5000

// measureRepo times loads or saves of aggregates that have a snapshot
// (aggregate i with i % 20 != 3 and i % 1000 != 7): random ones, or for
// the -cached ops the same 20 in turn, in rounds of 100.
func measureRepo(ctx context.Context, op string, size int64, repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account]) (Result, error) {
	r := Result{Op: op, Size: size}
	pick := func() uuid.UUID { return randomSnapshotted(size) }
	if strings.HasSuffix(op, "-cached") {
		var hot [20]uuid.UUID
		for i := range hot {
			hot[i] = randomSnapshotted(size)
		}
		n := 0
		pick = func() uuid.UUID { n++; return hot[n%len(hot)] }
	}
	// Five rounds a second apart, so a burst of other work on the machine
	// (autovacuum, a checkpoint) moves one round, not the figure: the
	// median of the rounds' medians.
	for round := range loadRounds {
		if round > 0 {
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		m, err := repoRound(ctx, op, pick, repo)
		if err != nil {
			return r, err
		}
		r.RoundsMS = append(r.RoundsMS, m)
	}
	r.WallMS = median(r.RoundsMS)
	return r, nil
}

// loadRounds is how many rounds of 100 the load and save ops time.
const loadRounds = 5

// repoRound times 100 loads or saves (after 20 that warm the pool and the
// caches) and returns their median.
func repoRound(ctx context.Context, op string, pick func() uuid.UUID, repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account]) (float64, error) {
	var times []float64
	for k := range 120 {
		id := pick()
		t0 := time.Now()
		a, err := repo.Load(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("load %s: %w", id, err)
		}
		if from, _ := a.LoadedFromSnapshot(); !from {
			return 0, fmt.Errorf("load %s did not use its snapshot", id)
		}
		if strings.HasPrefix(op, "save") {
			if err := a.Deposit(1); err != nil {
				return 0, err
			}
			if err := repo.Save(ctx, a); err != nil && !errors.Is(err, eventsource.ErrConcurrencyConflict) {
				return 0, fmt.Errorf("save %s: %w", id, err)
			}
		}
		if k >= 20 {
			times = append(times, float64(time.Since(t0).Microseconds())/1000)
		}
	}
	return median(times), nil
}

// randomSnapshotted picks a random aggregate that has a snapshot.
func randomSnapshotted(size int64) uuid.UUID {
	for {
		i := mrand.Int64N(size)
		if i%noSnapshotMod != 3 && i%longEvery != 7 {
			return scaleID(i)
		}
	}
}

// Reads is what a snapshot load's one statement reads, from EXPLAIN
// (ANALYZE, BUFFERS) with track_io_timing on: means over 20 random
// aggregates (cold), and of the same statement run again at once
// (cached).
type Reads struct {
	// ColdHit and ColdRead are the shared buffer blocks found in shared
	// buffers and read from outside them (the OS page cache or the disk).
	ColdHit, ColdRead float64
	// ColdReadMS is the time spent reading those blocks.
	ColdReadMS float64
	// ColdExecMS and CachedExecMS are the statement's execution times.
	ColdExecMS, CachedExecMS float64
	// CachedHit is the blocks the statement touches when all are cached.
	CachedHit float64
}

// withID returns a copy of the arguments of a load of aggregate from
// with the aggregate id to instead, or an error when no argument is from's
// id (the store passes ids in another form than [16]byte): the same
// aggregate explained twenty times would pass for twenty.
func withID(args []any, from, to uuid.UUID) ([]any, error) {
	out := make([]any, len(args))
	replaced := false
	for i, a := range args {
		if b, ok := a.([16]byte); ok && b == from {
			a, replaced = [16]byte(to), true
		}
		out[i] = a
	}
	if !replaced {
		return nil, fmt.Errorf("the load's arguments %v do not hold the aggregate id %s as [16]byte", args, from)
	}
	return out, nil
}

// loadReads captures the SQL of one snapshot load, then explains it for 20
// aggregates not loaded before, twice each.
func loadReads(ctx context.Context, pool *pgxpool.Pool, tracer *capture, size int64, repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account]) (*Reads, error) {
	first := randomSnapshotted(size)
	tracer.start()
	_, err := repo.Load(ctx, first)
	captured := tracer.stop()
	if err != nil {
		return nil, err
	}
	if len(captured) != 1 {
		return nil, fmt.Errorf("a snapshot load ran %d statements, want 1", len(captured))
	}
	q := captured[0]
	const n = 20
	var r Reads
	for range n {
		id := randomSnapshotted(size)
		args, err := withID(q.args, first, id)
		if err != nil {
			return nil, err
		}
		cold, err := explainIO(ctx, pool, q.sql, args)
		if err != nil {
			return nil, err
		}
		cached, err := explainIO(ctx, pool, q.sql, args)
		if err != nil {
			return nil, err
		}
		r.ColdHit += float64(cold.hit) / n
		r.ColdRead += float64(cold.read) / n
		r.ColdReadMS += cold.readMS / n
		r.ColdExecMS += cold.execMS / n
		r.CachedHit += float64(cached.hit+cached.read) / n
		r.CachedExecMS += cached.execMS / n
	}
	return &r, nil
}

// scaleID is aggregate i's id, as the dataset's SQL derives it.
func scaleID(i int64) uuid.UUID {
	return uuid.UUID(md5.Sum([]byte(fmt.Sprintf("evsnap-scale-%d", i))))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	return s[len(s)/2]
}

// checkDisk refuses to build when the file system under the server's data
// directory has less than 1.5 times the estimated size free. A server
// whose data directory is not on this machine is only warned about.
func checkDisk(ctx context.Context, pool *pgxpool.Pool, maxSize int64, progress func(string)) error {
	need := uint64(float64(maxSize) * bytesPerAgg * 1.5)
	var dir string
	if err := pool.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		progress(fmt.Sprintf("cannot read the server's data directory (%v); not checking free disk (about %.1f GB needed)", err, float64(need)/1e9))
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		progress(fmt.Sprintf("data directory %s is not on this machine (%v); not checking free disk (about %.1f GB needed)", dir, err, float64(need)/1e9))
		return nil
	}
	free := st.Bavail * uint64(st.Bsize)
	progress(fmt.Sprintf("free disk under %s: %.1f GB; the largest size needs about %.1f GB (with a 1.5× margin)", dir, float64(free)/1e9, float64(need)/1e9))
	if free < need {
		return fmt.Errorf("not enough free disk under %s: %.1f GB free, %.1f GB needed for %d aggregates; pass smaller --sizes", dir, float64(free)/1e9, float64(need)/1e9, maxSize)
	}
	return nil
}
