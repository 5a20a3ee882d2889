package benchharness

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/cputime"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// LoadRow is one line of the load table: the median load time of an
// Account of Events events on Backend.
type LoadRow struct {
	Backend string
	Events  int
	// None is a full replay (a repository without a snapshot store), Head
	// a load from a snapshot at the head (written with threshold 100),
	// Behind from a snapshot 50 events behind the head.
	None, Head, Behind time.Duration
	// LoadsPerRun is how many loads each run's median was taken over
	// (none, head, behind).
	LoadsPerRun [3]int
	// PostgreSQL only: the floor of the same work through raw pgx with
	// the store's own SQL (see pgfloor.go). Zero elsewhere.
	FloorHeadBatch, FloorHeadTwo     time.Duration
	FloorBehindBatch, FloorBehindTwo time.Duration
	FloorReplay                      time.Duration
	// PostgreSQL only: the client's CPU per load at the head (the harness
	// process's user + system time over the run's loads, median of the
	// runs), the library's and the batch floor's.
	HeadCPU, FloorHeadBatchCPU time.Duration
}

// loadTarget is one aggregate the load step measures.
type loadTarget struct {
	n          int
	head, back uuid.UUID // snapshot at the head; snapshot 50 behind
}

// Load budgets: each run of each cell loads for at least this long (and at
// least minLoads times), and the cell's figure is the median of those loads.
func (h *Harness) loadBudget() time.Duration {
	if h.cfg.Quick {
		return 30 * time.Millisecond
	}
	return 150 * time.Millisecond
}

const (
	minLoads = 3
	maxLoads = 20_000
)

// timeLoads calls fn repeatedly for budget (at least minLoads times) and
// returns the median duration and how many calls it made.
func timeLoads(budget time.Duration, fn func() error) (time.Duration, int, error) {
	ds := make([]time.Duration, 0, 64)
	deadline := time.Now().Add(budget)
	for len(ds) < minLoads || (len(ds) < maxLoads && time.Now().Before(deadline)) {
		t := time.Now()
		if err := fn(); err != nil {
			return 0, 0, err
		}
		ds = append(ds, time.Since(t))
	}
	return Median(ds), len(ds), nil
}

// runLoad is steps 1 and 5 for one backend: it writes the aggregates, checks
// that each load takes the path it is meant to, measures, and then measures
// the memory of the largest full replay.
func (h *Harness) runLoad(ctx context.Context, b string) error {
	s, err := h.openSite(ctx, b, "load")
	if err != nil {
		return err
	}
	defer func() {
		if err := s.close(ctx); err != nil {
			h.report.fail("load / %s: cleanup: %v", b, err)
		}
	}()
	plain, err := h.plainRepo(s.store) // every load replays
	if err != nil {
		return err
	}
	syncRepo, err := h.newRepo(s.store, eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
	if err != nil {
		return err
	}
	manual, err := h.newRepo(s.store, eventsource.WithSnapshotMode(eventsource.ModeManual))
	if err != nil {
		return err
	}
	defer func() {
		for _, r := range []*accountRepo{plain, syncRepo, manual} {
			_ = r.Close(ctx)
		}
	}()

	var targets []loadTarget
	for _, n := range h.cfg.sizes() {
		t := time.Now()
		lt := loadTarget{n: n, head: uuid.New(), back: uuid.New()}
		a := syncRepo.New(lt.head)
		if err := writeAccount(ctx, syncRepo, a, int64(n), 0, nil); err != nil {
			return fmt.Errorf("write %d events: %w", n, err)
		}
		a = manual.New(lt.back)
		if err := writeAccount(ctx, manual, a, int64(n), int64(n-50), func() error {
			_, err := manual.CreateSnapshot(ctx, a)
			return err
		}); err != nil {
			return fmt.Errorf("write %d events with a snapshot at %d: %w", n, n-50, err)
		}
		if err := checkSnapshot(ctx, s.store, lt.head, int64(n)); err != nil {
			return err
		}
		if err := checkSnapshot(ctx, s.store, lt.back, int64(n-50)); err != nil {
			return err
		}
		targets = append(targets, lt)
		h.progress("load / %s: wrote 2 accounts of %s events (saves of %d) in %s", b, thousands(int64(n)), savesOf, time.Since(t).Round(time.Millisecond))
	}

	// Every load must take the path its column names.
	for _, lt := range targets {
		for _, c := range []struct {
			r       *accountRepo
			id      uuid.UUID
			fromSn  bool
			replays int64
		}{{plain, lt.head, false, int64(lt.n)}, {manual, lt.head, true, 0}, {manual, lt.back, true, 50}} {
			a, err := c.r.Load(ctx, c.id)
			if err != nil {
				return err
			}
			from, replayed := a.LoadedFromSnapshot()
			if from != c.fromSn || replayed != c.replays || a.Version() != int64(lt.n) {
				return fmt.Errorf("%w: load of %d events: from snapshot %v, replayed %d, version %d; want %v, %d, %d",
					errSanity, lt.n, from, replayed, a.Version(), c.fromSn, c.replays, lt.n)
			}
		}
	}

	var floor *pgFloor
	if s.pg != nil {
		floor = newPGFloor(s, h.reg.Codec())
		h.report.Codec = fmt.Sprintf("%T", h.reg.Codec())
		last := targets[len(targets)-1]
		plan, err := floor.explain(ctx, last.head)
		if err != nil {
			return err
		}
		plan.Events = last.n
		h.report.Plan = &plan
	}

	type cell struct{ none, head, back, fhb, fh2, fbb, fb2, frp, headCPU, fhbCPU []time.Duration }
	cells := make([]cell, len(targets))
	counts := make([][3]int, len(targets))
	budget := h.loadBudget()
	for run := range h.cfg.Runs {
		t := time.Now()
		for i, lt := range targets {
			runtime.GC()
			c := &cells[i]
			var cpuPer time.Duration // the last measure's client CPU per load
			measure := func(dst *[]time.Duration, k int, fn func() error) error {
				cpu := cputime.Process()
				d, n, err := timeLoads(budget, fn)
				if err != nil {
					return err
				}
				cpuPer = (cputime.Process() - cpu) / time.Duration(n)
				*dst = append(*dst, d)
				if k >= 0 {
					counts[i][k] = n
				}
				return nil
			}
			load := func(r *accountRepo, id uuid.UUID) func() error {
				return func() error { _, err := r.Load(ctx, id); return err }
			}
			if err := measure(&c.none, 0, load(plain, lt.head)); err != nil {
				return err
			}
			if err := measure(&c.head, 1, load(manual, lt.head)); err != nil {
				return err
			}
			c.headCPU = append(c.headCPU, cpuPer)
			if err := measure(&c.back, 2, load(manual, lt.back)); err != nil {
				return err
			}
			if floor == nil {
				continue
			}
			for _, f := range []struct {
				dst *[]time.Duration
				fn  func() error
			}{
				{&c.fhb, func() error { return floor.loadBatch(ctx, lt.head, int64(lt.n)) }},
				{&c.fh2, func() error { return floor.loadTwo(ctx, lt.head) }},
				{&c.fbb, func() error { return floor.loadBatch(ctx, lt.back, int64(lt.n-50)) }},
				{&c.fb2, func() error { return floor.loadTwo(ctx, lt.back) }},
				{&c.frp, func() error { return floor.replay(ctx, lt.head, int64(lt.n)) }},
			} {
				if err := measure(f.dst, -1, f.fn); err != nil {
					return fmt.Errorf("postgres floor: %w", err)
				}
				if f.dst == &c.fhb {
					c.fhbCPU = append(c.fhbCPU, cpuPer)
				}
			}
		}
		h.progress("load / %s: run %d/%d in %s", b, run+1, h.cfg.Runs, time.Since(t).Round(time.Millisecond))
	}
	for i, lt := range targets {
		c := cells[i]
		h.report.Load = append(h.report.Load, LoadRow{
			Backend: b, Events: lt.n,
			None: Median(c.none), Head: Median(c.head), Behind: Median(c.back),
			LoadsPerRun:    counts[i],
			FloorHeadBatch: Median(c.fhb), FloorHeadTwo: Median(c.fh2),
			FloorBehindBatch: Median(c.fbb), FloorBehindTwo: Median(c.fb2),
			FloorReplay: Median(c.frp),
		})
		if floor != nil {
			row := &h.report.Load[len(h.report.Load)-1]
			row.HeadCPU, row.FloorHeadBatchCPU = Median(c.headCPU), Median(c.fhbCPU)
		}
	}

	if err := h.countLoadAllocs(ctx, b, manual, targets[0].head, targets[0].back); err != nil {
		return err
	}

	// Step 5: memory of the largest full replay.
	last := targets[len(targets)-1]
	return h.measureMemory(ctx, b, s, plain, last.head, last.n)
}

// checkSnapshot verifies that the stored snapshot of id is at version want.
func checkSnapshot(ctx context.Context, s eventsource.SnapshotStore, id uuid.UUID, want int64) error {
	snap, err := s.GetSnapshot(ctx, exampledomain.AccountType, id, exampledomain.AccountSchemaVersion)
	if err != nil {
		return err
	}
	if snap == nil || snap.Version != want {
		got := int64(0)
		if snap != nil {
			got = snap.Version
		}
		return fmt.Errorf("%w: snapshot of %s at v%d, want v%d", errSanity, id, got, want)
	}
	return nil
}
