package benchharness

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// AllocRow is the heap allocations of one operation on one backend: the
// mean per call over allocCalls calls.
type AllocRow struct {
	Backend string
	// Op names the operation, as the table prints it.
	Op            string
	Allocs, Bytes float64
}

// TelemetryRow is a memstore load (snapshot at the head of 100 events)
// and a one-event save (sync snapshots, threshold 100) with one setup of
// OpenTelemetry.
type TelemetryRow struct {
	Setup string
	// LoadP50 and SaveP50 are medians over the runs of each run's p50.
	LoadP50, SaveP50       time.Duration
	LoadAllocs, SaveAllocs float64
}

// allocCalls is how many calls an allocation count averages over.
const allocCalls = 2000

// Operations of the allocation table.
const (
	opLoadHead   = "load, snapshot at head (100 events)"
	opLoadBehind = "load, snapshot 50 behind (100 events)"
	opSaveNone   = "save of one event, no snapshots"
	opSaveSync   = "save of one event, sync snapshots (threshold 100)"
)

// countAllocs calls fn n times and returns the mean heap allocations and
// bytes per call. It counts the whole process (runtime.MemStats), so the
// harness's other goroutines, idle meanwhile, add a little noise.
func countAllocs(n int, fn func() error) (allocs, bytes float64, err error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		if err := fn(); err != nil {
			return 0, 0, err
		}
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n), float64(after.TotalAlloc-before.TotalAlloc) / float64(n), nil
}

// countLoadAllocs adds the allocation rows of b's loads of a 100-event
// Account from a snapshot at its head (head) and 50 events behind (back).
func (h *Harness) countLoadAllocs(ctx context.Context, b string, r *accountRepo, head, back uuid.UUID) error {
	for _, c := range []struct {
		op string
		id uuid.UUID
	}{{opLoadHead, head}, {opLoadBehind, back}} {
		n, bytes, err := countAllocs(allocCalls, func() error { _, err := r.Load(ctx, c.id); return err })
		if err != nil {
			return err
		}
		h.report.addAllocs(AllocRow{Backend: b, Op: c.op, Allocs: n, Bytes: bytes})
	}
	return nil
}

// countSaveAllocs adds the allocation row of b's one-event saves in mode
// (raising the event included) on a fresh Account.
func (h *Harness) countSaveAllocs(ctx context.Context, b, mode string, r *accountRepo) error {
	a := r.New(uuid.New())
	v := int64(0)
	save := func() error {
		v++
		raise(a, v)
		return r.Save(ctx, a)
	}
	if err := save(); err != nil { // the opening, and the stream's first chunk
		return err
	}
	op := opSaveNone
	if mode != "none" {
		op = opSaveSync
	}
	n, bytes, err := countAllocs(allocCalls, save)
	if err != nil {
		return err
	}
	h.report.addAllocs(AllocRow{Backend: b, Op: op, Allocs: n, Bytes: bytes})
	return nil
}

func (r *Report) addAllocs(a AllocRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Allocs = append(r.Allocs, a)
}

// telemetrySetups are the OpenTelemetry setups of the telemetry table:
// the global providers with no SDK installed (every other table's), an SDK
// tracer provider that samples nothing (with the no-op meter provider,
// then an SDK one), and one that samples every span (exported nowhere).
var telemetrySetups = []struct {
	name string
	opts func() []eventsource.Option
}{
	{"off: global providers, no SDK installed", func() []eventsource.Option { return nil }},
	{"SDK tracer sampling nothing, no-op meter", func() []eventsource.Option {
		return []eventsource.Option{
			eventsource.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))),
			eventsource.WithMeterProvider(metricnoop.NewMeterProvider()),
		}
	}},
	{"SDK tracer sampling nothing, SDK meter", func() []eventsource.Option {
		return []eventsource.Option{
			eventsource.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))),
			eventsource.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))),
		}
	}},
	{"SDK tracer sampling every span, SDK meter", func() []eventsource.Option {
		return []eventsource.Option{
			eventsource.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))),
			eventsource.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))),
		}
	}},
}

// memHeadAccount returns a memstore repository with sync snapshots at
// threshold 100 (and opts) holding a 100-event Account with its snapshot
// at the head, checked: the subject of the telemetry table and of the
// peer step. The caller closes the repository.
func (h *Harness) memHeadAccount(ctx context.Context, opts ...eventsource.Option) (*accountRepo, uuid.UUID, error) {
	store := memstore.New()
	r, err := h.newRepo(store, append([]eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100})}, opts...)...)
	if err != nil {
		return nil, uuid.Nil, err
	}
	head := uuid.New()
	err = writeAccount(ctx, r, r.New(head), 100, 0, nil)
	if err == nil {
		err = checkSnapshot(ctx, store, head, 100)
	}
	if err != nil {
		_ = r.Close(context.WithoutCancel(ctx))
		return nil, uuid.Nil, err
	}
	return r, head, nil
}

// runTelemetry measures a memstore load and save with each setup of
// OpenTelemetry, the setups taking turns within each run.
func (h *Harness) runTelemetry(ctx context.Context) error {
	type subject struct {
		r    *accountRepo
		head uuid.UUID
	}
	subjects := make([]subject, len(telemetrySetups))
	for i, s := range telemetrySetups {
		r, head, err := h.memHeadAccount(ctx, s.opts()...)
		if err != nil {
			return err
		}
		defer r.Close(context.WithoutCancel(ctx))
		subjects[i] = subject{r: r, head: head}
	}
	loads := make([][]time.Duration, len(subjects))
	saves := make([][]time.Duration, len(subjects))
	for run := range h.cfg.Runs {
		for k := range subjects {
			i := (k + run) % len(subjects) // each run starts at the next setup
			s := subjects[i]
			runtime.GC()
			d, _, err := timeLoads(h.loadBudget(), func() error { _, err := s.r.Load(ctx, s.head); return err })
			if err != nil {
				return err
			}
			loads[i] = append(loads[i], d)
			lat, err := saveRun(ctx, s.r, 1, h.saveDuration()/3)
			if err != nil {
				return err
			}
			p50, _ := Quantiles(lat)
			saves[i] = append(saves[i], p50)
		}
	}
	for i, s := range subjects {
		row := TelemetryRow{Setup: telemetrySetups[i].name, LoadP50: Median(loads[i]), SaveP50: Median(saves[i])}
		var err error
		if row.LoadAllocs, _, err = countAllocs(allocCalls, func() error { _, err := s.r.Load(ctx, s.head); return err }); err != nil {
			return err
		}
		a := s.r.New(uuid.New())
		v := int64(0)
		if row.SaveAllocs, _, err = countAllocs(allocCalls, func() error { v++; raise(a, v); return s.r.Save(ctx, a) }); err != nil {
			return err
		}
		h.report.Telemetry = append(h.report.Telemetry, row)
	}
	return nil
}

// writeAllocs renders the allocation and telemetry tables.
func (r *Report) writeAllocs(b *strings.Builder) {
	if len(r.Allocs) == 0 && len(r.Telemetry) == 0 && len(r.TelemetryBench) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## 7. Allocations per operation\n\n")
	if len(r.Allocs) > 0 {
		p("Heap allocations and bytes per call, the mean over %s calls (`runtime.MemStats` before and after, so the process's idle goroutines add a little): ", thousands(allocCalls))
		p("loads of a 100-event Account of step 1, and one-event saves of step 2 (raising the event included) on a fresh Account. ")
		p("Telemetry is the global providers' with no SDK installed, as in every other table. The Go benchmarks count the same (`-benchmem`):\n\n")
		p("```sh\ngo test -run '^$' -bench 'BenchmarkLoad$/memstore/events=100$|BenchmarkSave$|BenchmarkTelemetry' -benchmem ./lib/eventsource/\n```\n\n")
		t := NewTable("backend", "operation", "allocations:", "bytes:")
		for _, a := range r.Allocs {
			t.Add(a.Backend, a.Op, sig(a.Allocs), thousands(int64(a.Bytes+0.5)))
		}
		b.WriteString(t.String())
		p("\n")
	}
	if len(r.Telemetry) == 0 {
		r.writeTelemetryBench(b)
		return
	}
	off := r.Telemetry[0]
	p("Telemetry on and off, memstore: a load from a snapshot at the head of 100 events, and a one-event save with sync snapshots at threshold 100, with each OpenTelemetry setup (its own store and repository, the setups taking turns within each run; p50 as in steps 1 and 2, medians of the runs). ")
	p("With no SDK, or the no-op providers, the repository starts no span and builds no attribute and reads no clock for metrics; what instrumentation then costs against none at all is the next table's. ")
	p("`BenchmarkTelemetry` has the same setups, and *none*, as Go benchmarks:\n\n")
	p("```sh\ngo test -run '^$' -bench '^BenchmarkTelemetry$' -benchmem -count 6 ./lib/eventsource/ | benchstat -col /telemetry -\n```\n\n")
	t := NewTable("setup", "load p50 µs:", "vs off µs:", "load allocations:", "save p50 µs:", "vs off µs:", "save allocations:")
	for _, row := range r.Telemetry {
		dl, ds := "", ""
		if row.Setup != off.Setup {
			dl, ds = signedUS(row.LoadP50-off.LoadP50), signedUS(row.SaveP50-off.SaveP50)
		}
		t.Add(row.Setup, us(row.LoadP50), dl, sig(row.LoadAllocs), us(row.SaveP50), ds, sig(row.SaveAllocs))
	}
	b.WriteString(t.String())
	p("\n")
	r.writeTelemetryBench(b)
}

// writeTelemetryBench renders BenchmarkTelemetryOff's medians.
func (r *Report) writeTelemetryBench(b *strings.Builder) {
	if len(r.TelemetryBench) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("What instrumentation costs when telemetry is off, against none at all: `%s`, run by the harness (%d times; medians). ", telemetryBench, r.Runs)
	p("Each operation runs in blocks of 64 calls, each block with its instrumentation or without at random (the same repository and aggregate), timed by the thread's CPU time, which other processes' turns on the core do not inflate. ")
	p("*global*: the global providers with no SDK installed; *noop*: OpenTelemetry's no-op providers; *control*: the instrumented operation on both sides, whose difference is the method's noise. ")
	p("Allocations per call are the same with and without (`TestTelemetryOffAllocatesNothing` checks it).\n\n")
	p("```sh\ngo test -run '^$' -bench '^%s$' -benchmem -count %d ./lib/eventsource/\n```\n\n", telemetryBench, r.Runs)
	t := NewTable("operation", "telemetry", "without CPU ns:", "with, off CPU ns:", "added ns:", "allocs/op:")
	for _, x := range r.TelemetryBench {
		t.Add(x.Op, x.Setup, sig(x.NoneNs), sig(x.OffNs), fmt.Sprintf("%+.1f", x.AddedNs), sig(x.Allocs))
	}
	b.WriteString(t.String())
	p("\n")
}

// signedUS formats a duration difference in µs with its sign.
func signedUS(d time.Duration) string {
	if d >= 0 {
		return "+" + us(d)
	}
	return "-" + us(-d)
}

// Issue 20's targets for the in-memory store and telemetry.
const (
	targetMemLoadHead   = 1500 * time.Nanosecond // memstore snapshot load at 100 events
	targetMemLoadAllocs = 12                     // allocations of that load
	targetMemSave       = 1200 * time.Nanosecond // memstore one-event save p50, sync
	targetTelemetrySDK  = 300 * time.Nanosecond  // an SDK that samples nothing, over off

	// The peer figures those goals came from (PERF-ANCHORS.md).
	anchorPeerLoadHead = 1600 * time.Nanosecond
	anchorPeerSave     = 1300 * time.Nanosecond
)

// hotPathTargets evaluates issue 20's targets for memstore and telemetry.
func (r *Report) hotPathTargets() []Target {
	var ts []Target
	if rows := r.loadRows(Memstore); len(rows) > 0 && rows[0].Events == 100 {
		ts = append(ts, Target{
			What:     "memstore: snapshot load at 100 events ≤ 1.5 µs (hallgren/eventsourcing 1.6 µs, anchor)",
			Measured: us(rows[0].Head) + " µs", Ratio: ratio(rows[0].Head, targetMemLoadHead), Goal: "≤ 1×", Met: rows[0].Head <= targetMemLoadHead,
			Note: r.peerScale(func(p PeerRow) time.Duration { return p.LoadHead }, anchorPeerLoadHead),
		})
	}
	for _, a := range r.Allocs {
		if a.Backend == Memstore && a.Op == opLoadHead {
			ts = append(ts, Target{
				What:     "memstore: snapshot load at 100 events ≤ 12 allocations (hallgren/eventsourcing 11, anchor)",
				Measured: sig(a.Allocs) + " allocations, " + thousands(int64(a.Bytes+0.5)) + " bytes", Ratio: a.Allocs / targetMemLoadAllocs, Goal: "≤ 1×", Met: a.Allocs <= targetMemLoadAllocs,
			})
		}
	}
	if s, ok := r.saveRow(Memstore, string(eventsource.ModeSync), 1); ok {
		ts = append(ts, Target{
			What:     "memstore: one-event save p50, sync snapshots at threshold 100, ≤ 1.2 µs (hallgren/eventsourcing 1.3 µs, anchor)",
			Measured: us(s.P50) + " µs", Ratio: ratio(s.P50, targetMemSave), Goal: "≤ 1×", Met: s.P50 <= targetMemSave,
			Note: r.peerScale(func(p PeerRow) time.Duration { return p.SaveP50 }, anchorPeerSave),
		})
	}
	for _, op := range []string{"load", "save"} {
		global, ok := r.telemetryBenchRow(op, "global")
		if !ok {
			continue
		}
		control, _ := r.telemetryBenchRow(op, "control")
		ts = append(ts, Target{
			What:     fmt.Sprintf("telemetry off (global providers, no SDK): a %s spends ≤ 50 ns in instrumentation (BenchmarkTelemetryOff)", op),
			Measured: fmt.Sprintf("%+.1f ns (%s vs %s CPU ns); control %+.1f ns", global.AddedNs, sig(global.OffNs), sig(global.NoneNs), control.AddedNs),
			Ratio:    global.AddedNs / 50, Goal: "≤ 1×", Met: global.AddedNs <= 50,
			Note: "no allocation: TestTelemetryOffAllocatesNothing",
		})
	}
	ts = append(ts, r.peerTargets()...)
	if len(r.Telemetry) > 1 {
		off, sdk := r.Telemetry[0], r.Telemetry[1]
		worst := max(sdk.LoadP50-off.LoadP50, sdk.SaveP50-off.SaveP50)
		ts = append(ts, Target{
			What:     "telemetry: an SDK tracer sampling nothing adds ≤ 0.3 µs to a memstore load and save",
			Measured: fmt.Sprintf("load %s µs, save %s µs", signedUS(sdk.LoadP50-off.LoadP50), signedUS(sdk.SaveP50-off.SaveP50)),
			Ratio:    ratio(worst, targetTelemetrySDK), Goal: "≤ 1×", Met: worst <= targetTelemetrySDK,
			Note: fmt.Sprintf("%s and %s allocations per load and save when off, %s and %s with this SDK", sig(off.LoadAllocs), sig(off.SaveAllocs), sig(sdk.LoadAllocs), sig(sdk.SaveAllocs)),
		})
	}
	return ts
}

// writeHotPathTargets renders issue 20's targets.
func (r *Report) writeHotPathTargets(b *strings.Builder) {
	writeTargetSection(b, "\n## Targets (issue 20: in memory, and telemetry)\n\n", r.hotPathTargets())
}

// TelemetryBenchRow is one line of BenchmarkTelemetryOff
// (lib/eventsource): a memstore load or save with telemetry off in one
// setup (global: the global providers, no SDK; noop: OpenTelemetry's no-op
// providers; control: the instrumented operation against itself), against
// the same operation without its instrumentation, in CPU ns per call.
// Medians over the runs.
type TelemetryBenchRow struct {
	Op, Setup              string
	NoneNs, OffNs, AddedNs float64
	Allocs                 float64
}

// telemetryBench is the Go benchmark that compares instrumentation off
// with none at all, run by the harness with go test from the module root.
const telemetryBench = "BenchmarkTelemetryOff"

// runTelemetryBench runs BenchmarkTelemetryOff as many times as the
// harness runs each figure and records the medians.
func (h *Harness) runTelemetryBench(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^"+telemetryBench+"$", "-benchmem",
		"-count", strconv.Itoa(h.cfg.Runs), "./lib/eventsource/").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench %s: %w\n%s", telemetryBench, err, out)
	}
	rows, err := parseTelemetryBench(string(out))
	if err != nil {
		return err
	}
	h.report.TelemetryBench = rows
	return nil
}

// parseTelemetryBench reads go test's lines of BenchmarkTelemetryOff
// (BenchmarkTelemetryOff/op=load/telemetry=global-2  N  1234 ns/op
// 12.3 added-cpu-ns/op  900 none-cpu-ns/op  912 off-cpu-ns/op  592 B/op
// 8 allocs/op) into one row per op and setup, with the medians of the
// repeated lines, in the order they first appear.
func parseTelemetryBench(out string) ([]TelemetryBenchRow, error) {
	type key struct{ op, setup string }
	var order []key
	values := map[key]map[string][]float64{}
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], telemetryBench+"/op=") {
			continue
		}
		parts := strings.Split(f[0], "/")
		if len(parts) != 3 {
			continue
		}
		setup := strings.TrimPrefix(parts[2], "telemetry=")
		if i := strings.LastIndex(setup, "-"); i > 0 {
			setup = setup[:i] // the GOMAXPROCS suffix
		}
		k := key{strings.TrimPrefix(parts[1], "op="), setup}
		if values[k] == nil {
			values[k] = map[string][]float64{}
			order = append(order, k)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", telemetryBench, line, err)
			}
			values[k][f[i+1]] = append(values[k][f[i+1]], v)
		}
	}
	var rows []TelemetryBenchRow
	for _, k := range order {
		v := values[k]
		if len(v["added-cpu-ns/op"]) == 0 {
			continue
		}
		rows = append(rows, TelemetryBenchRow{Op: k.op, Setup: k.setup,
			NoneNs: Median(v["none-cpu-ns/op"]), OffNs: Median(v["off-cpu-ns/op"]), AddedNs: Median(v["added-cpu-ns/op"]), Allocs: Median(v["allocs/op"])})
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: no results in go test's output:\n%s", telemetryBench, out)
	}
	return rows, nil
}

// telemetryBenchRow returns the row of op and setup.
func (r *Report) telemetryBenchRow(op, setup string) (TelemetryBenchRow, bool) {
	for _, x := range r.TelemetryBench {
		if x.Op == op && x.Setup == setup {
			return x, true
		}
	}
	return TelemetryBenchRow{}, false
}
