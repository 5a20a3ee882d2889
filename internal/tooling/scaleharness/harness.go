// Package scaleharness is the program behind `make scale`: it builds a
// large PostgreSQL dataset with bulk SQL (not the repository), 100
// thousand to 10 million Account aggregates with about 5 events each and a
// realistic spread of how far each snapshot is behind, and measures at
// each size what the snapshotter's periodic and administrative work costs
// (the sweep's listing, stats, verify --sample, prune) beside a snapshot
// load and a one-event save: wall time, and for every statement it runs,
// EXPLAIN (ANALYZE, BUFFERS)'s execution time, rows read, temp blocks and
// sequential scans. It writes a table and a log-log chart.
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
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
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
}

// Op is one measured operation.
type Op struct {
	Name string
	// What describes it for the page.
	What string
}

// Ops are the measured operations, in the page's order.
var Ops = []Op{
	{"sweep", "the reconciliation sweep's listing: aggregates at least 100 behind, most behind first, the first 1,000"},
	{"stats", "`snapshotter stats`: counts and quantiles of how far behind, and the 10 stalest"},
	{"verify-sample", "`snapshotter verify --sample 100`: picks 100 aggregates, replays each and compares"},
	{"prune", "`snapshotter prune --schema-below 1`: the statement of a prune that finds nothing to remove"},
	{"load", "a snapshot load of an aggregate with a snapshot (median of 100)"},
	{"save", "a one-event save: load, deposit, save (median of 100)"},
}

// Result is one operation at one size.
type Result struct {
	Op   string
	Size int64
	// WallMS is the median wall time of the operation, in milliseconds.
	WallMS float64
	// Plans are the statements it ran (for load and save: none).
	Plans []Plan
	// Skipped: not run, because the time projected linearly from the
	// previous size (WallMS) is above Config.MaxOpTime.
	Skipped bool
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
	Sizes    []int64
	Events   map[int64]int64 // events stored at each size
	Results  []Result
	Settings map[string]string
	BuiltIn  map[int64]time.Duration // time to grow to each size
	Started  time.Time
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

	rep := &Report{Sizes: cfg.Sizes, Events: map[int64]int64{}, BuiltIn: map[int64]time.Duration{}, Settings: map[string]string{}, Started: time.Now()}
	for _, name := range []string{"server_version", "shared_buffers", "work_mem", "max_parallel_workers_per_gather"} {
		var v string
		if err := pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err == nil {
			rep.Settings[name] = v
		}
	}
	reg := exampledomain.NewRegistry()
	w, err := snapshotter.New(snapshotter.Config{Store: store, Stream: "x", Consumer: "x", SubjectPrefix: "x", BatchSize: 1, Concurrency: 1, WriteBatch: 1, ReadBatch: 1,
		AckWait: time.Second, MaxDeliveries: 1, MaxSnapshotBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
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
		rep.BuiltIn[size] = time.Since(t0)
		rep.Events[size] = events
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
			r, err := measure(ctx, op.Name, size, pool, tracer, store, w, repo)
			if err != nil {
				return rep, fmt.Errorf("%s at %d: %w", op.Name, size, err)
			}
			progress(fmt.Sprintf("  %s: %.2f ms", op.Name, r.WallMS))
			rep.Results = append(rep.Results, r)
		}
	}
	return rep, nil
}

// measure runs one operation: once to warm the cache and capture its SQL,
// then timed (up to 5 runs or 20 s), and explains what it captured.
func measure(ctx context.Context, op string, size int64, pool *pgxpool.Pool, tracer *capture, store *pgstore.Store, w *snapshotter.Worker,
	repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account]) (Result, error) {
	r := Result{Op: op, Size: size}
	var run func() error
	switch op {
	case "sweep":
		run = func() error {
			for _, err := range store.ListAggregates(ctx, scaleTypeName, eventsource.ListOptions{SchemaVersion: 1, MinBehind: dataThreshold, MostBehindFirst: true, Limit: 1000}) {
				if err != nil {
					return err
				}
			}
			return nil
		}
	case "stats":
		run = func() error { _, err := w.Stats(ctx, scaleTypeName, 10); return err }
	case "verify-sample":
		run = func() error {
			rep, err := w.Verify(ctx, scaleTypeName, 100)
			if err == nil && rep.Checked != 100 {
				err = fmt.Errorf("verify checked %d, not 100", rep.Checked)
			}
			return err
		}
	case "prune":
		run = func() error { _, err := w.Prune(ctx, scaleTypeName, 1); return err }
	case "load", "save":
		return measureRepo(ctx, op, size, repo)
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
	for _, q := range captured {
		p, err := explain(ctx, pool, q)
		if err != nil {
			return r, err
		}
		r.Plans = append(r.Plans, p)
	}
	return r, nil
}

// measureRepo times 100 loads or saves of random aggregates that have a
// snapshot (aggregate i with i % 20 != 3 and i % 1000 != 7).
func measureRepo(ctx context.Context, op string, size int64, repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account]) (Result, error) {
	r := Result{Op: op, Size: size}
	pick := func() uuid.UUID {
		for {
			i := mrand.Int64N(size)
			if i%noSnapshotMod != 3 && i%longEvery != 7 {
				return scaleID(i)
			}
		}
	}
	var times []float64
	for k := range 120 {
		id := pick()
		t0 := time.Now()
		a, err := repo.Load(ctx, id)
		if err != nil {
			return r, fmt.Errorf("load %s: %w", id, err)
		}
		if from, _ := a.LoadedFromSnapshot(); !from {
			return r, fmt.Errorf("load %s did not use its snapshot", id)
		}
		if op == "save" {
			if err := a.Deposit(1); err != nil {
				return r, err
			}
			if err := repo.Save(ctx, a); err != nil && !errors.Is(err, eventsource.ErrConcurrencyConflict) {
				return r, fmt.Errorf("save %s: %w", id, err)
			}
		}
		if k >= 20 { // the first 20 warm the pool and caches
			times = append(times, float64(time.Since(t0).Microseconds())/1000)
		}
	}
	r.WallMS = median(times)
	return r, nil
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
