package benchharness

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// SaveRow is the Save latency of one snapshot mode on one backend.
type SaveRow struct {
	Backend string
	// Mode is "none" (no snapshot store) or a snapshot mode.
	Mode string
	// P50 and P99 are the medians over the runs of each run's p50 and
	// p99.
	P50, P99 time.Duration
	// Goroutines is how many goroutines saved at once, each to its own
	// aggregate.
	Goroutines int
	// Saves is the median number of saves a run timed.
	Saves int
	// External mode only: notices the publisher accepted and dropped
	// (buffer full) over all the timed runs. A dropped notice's save
	// skipped the enqueue, so drops make the figures optimistic.
	Notices, Dropped int64
	// External mode only: the median over the runs of the p50 time spent
	// inside the notifier's Notify, the part of a save external mode adds
	// directly (the rest of its cost is CPU the publisher and NATS take
	// from everything else).
	NotifyP50 time.Duration
}

// timedNotifier records how long one Notify call in notifySample takes.
// Timing every call would add two clock reads, a lock and an append to a
// save that takes under 2 µs on memstore, and charge them to the external
// mode; a sample costs the others one atomic add.
type timedNotifier struct {
	next  eventsource.AppendNotifier
	calls atomic.Uint64
	mu    sync.Mutex
	took  []time.Duration
}

// notifySample is how often timedNotifier times a call: one in this many.
const notifySample = 16

// Notify implements eventsource.AppendNotifier.
func (n *timedNotifier) Notify(ctx context.Context, a eventsource.Appended) error {
	if n.calls.Add(1)%notifySample != 0 {
		return n.next.Notify(ctx, a)
	}
	t := time.Now()
	err := n.next.Notify(ctx, a)
	d := time.Since(t)
	n.mu.Lock()
	n.took = append(n.took, d)
	n.mu.Unlock()
	return err
}

// Flush implements eventsource.AppendNotifier.
func (n *timedNotifier) Flush(ctx context.Context) error { return n.next.Flush(ctx) }

// take returns and forgets the recorded durations.
func (n *timedNotifier) take() []time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.took
	n.took = nil
	return t
}

// saveConcurrency are the goroutine counts of the save table: one (latency
// on an idle client) and four (a closed loop that saturates a small box).
var saveConcurrency = []int{1, 4}

// saveGoroutines is the goroutine count of the worker's lag load.
const saveGoroutines = 4

// saveModes are the modes of the save table, in order.
var saveModes = []string{"none", string(eventsource.ModeSync), string(eventsource.ModeBackground), string(eventsource.ModeExternal)}

func (h *Harness) saveDuration() time.Duration {
	if h.cfg.Quick {
		return 100 * time.Millisecond
	}
	return 750 * time.Millisecond
}

// runSave is step 2 for one backend: single-event saves, one aggregate per
// goroutine, for each mode; the modes take turns within each run so that
// drift on the machine affects them alike.
func (h *Harness) runSave(ctx context.Context, b string) error {
	s, err := h.openSite(ctx, b, "save")
	if err != nil {
		return err
	}
	defer func() {
		if err := s.close(ctx); err != nil {
			h.report.fail("save / %s: cleanup: %v", b, err)
		}
	}()
	st, err := h.newStream(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.drop(); err != nil {
			h.report.fail("save / %s: %v", b, err)
		}
	}()
	pub, err := st.publisher()
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close(context.WithoutCancel(ctx)) }()

	notifier := &timedNotifier{next: pub}
	repos := map[string]*accountRepo{}
	for _, m := range saveModes {
		var opts []eventsource.Option
		switch m {
		case "none":
			opts = append(opts, eventsource.WithSnapshotMode(eventsource.ModeOff))
		case string(eventsource.ModeExternal):
			opts = append(opts, eventsource.WithSnapshotMode(eventsource.ModeExternal), eventsource.WithAppendNotifier(notifier))
		default:
			opts = append(opts, eventsource.WithSnapshotMode(eventsource.SnapshotMode(m)), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
		}
		r, err := h.newRepo(s.store, opts...)
		if err != nil {
			return err
		}
		defer r.Close(context.WithoutCancel(ctx))
		repos[m] = r
	}
	settle := func(m string) error {
		switch m {
		case string(eventsource.ModeBackground):
			_, err := repos[m].AwaitPendingSnapshots(ctx)
			return err
		case string(eventsource.ModeExternal):
			return pub.Flush(ctx)
		}
		return nil
	}
	// Warm up every mode (connections, prepared statements), untimed.
	for _, m := range saveModes {
		if _, err := saveRun(ctx, repos[m], 4, h.saveDuration()/4); err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
		if err := settle(m); err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
	}
	type key struct {
		mode string
		g    int
	}
	p50s := map[key][]time.Duration{}
	p99s := map[key][]time.Duration{}
	counts := map[key][]int{}
	notices := map[int]int64{}
	dropped := map[int]int64{}
	notifyP50 := map[int][]time.Duration{}
	for run := range h.cfg.Runs {
		t := time.Now()
		for _, g := range saveConcurrency {
			for i := range saveModes {
				// Each run starts at the next mode, so that no mode always
				// runs first, on the smallest heap (memstore keeps every
				// event) or right after a given other mode.
				m := saveModes[(i+run)%len(saveModes)]
				runtime.GC()
				notifier.take()
				before := pub.Stats()
				lat, err := saveRun(ctx, repos[m], g, h.saveDuration())
				if err != nil {
					return fmt.Errorf("%s, %d goroutines: %w", m, g, err)
				}
				if err := settle(m); err != nil {
					return fmt.Errorf("%s: %w", m, err)
				}
				if m == string(eventsource.ModeExternal) {
					after := pub.Stats()
					notices[g] += after.Enqueued + after.Dropped - before.Enqueued - before.Dropped
					dropped[g] += after.Dropped - before.Dropped
					notifyP50[g] = append(notifyP50[g], Median(notifier.take()))
				}
				k := key{m, g}
				p50, p99 := Quantiles(lat)
				p50s[k] = append(p50s[k], p50)
				p99s[k] = append(p99s[k], p99)
				counts[k] = append(counts[k], len(lat))
			}
		}
		h.progress("save / %s: run %d/%d in %s", b, run+1, h.cfg.Runs, time.Since(t).Round(time.Millisecond))
	}
	for _, g := range saveConcurrency {
		for _, m := range saveModes {
			k := key{m, g}
			row := SaveRow{Backend: b, Mode: m, Goroutines: g, P50: Median(p50s[k]), P99: Median(p99s[k]), Saves: Median(counts[k])}
			if m == string(eventsource.ModeExternal) {
				row.Notices, row.Dropped, row.NotifyP50 = notices[g], dropped[g], Median(notifyP50[g])
				if row.Dropped > 0 {
					h.report.note("save / %s, %d goroutines, external: the publisher dropped %s of %s notices (buffer full: saves outran JetStream); those saves skipped the enqueue, so the external figures are optimistic.",
						b, g, thousands(row.Dropped), thousands(row.Notices))
				}
			}
			h.report.Save = append(h.report.Save, row)
		}
	}
	for _, m := range []string{"none", string(eventsource.ModeSync)} {
		if err := h.countSaveAllocs(ctx, b, m, repos[m]); err != nil {
			return fmt.Errorf("allocations, %s: %w", m, err)
		}
	}
	if b != Memstore {
		return nil
	}
	t := time.Now()
	if err := h.runTelemetry(ctx); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	if err := h.runTelemetryBench(ctx); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	h.progress("save / %s: telemetry on and off in %s", b, time.Since(t).Round(time.Millisecond))
	return nil
}

// saveRun has g goroutines each open an account and then save one event at
// a time until d has passed, and returns every save's latency.
func saveRun(ctx context.Context, r *accountRepo, g int, d time.Duration) ([]time.Duration, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		all   []time.Duration
		first error
	)
	deadline := time.Now().Add(d)
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := r.New(uuid.New())
			lat := make([]time.Duration, 0, 1024)
			var err error
			for v := int64(1); err == nil && time.Now().Before(deadline); v++ {
				raise(a, v)
				t := time.Now()
				err = r.Save(ctx, a)
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			if err != nil && first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	return all, first
}
