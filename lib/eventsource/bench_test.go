package eventsource_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// buildAccount writes the tutorial's workload into r: an account opened,
// then alternating deposits and withdrawals, saved 100 events at a time,
// n events in all. If snapshotAt > 0 a snapshot is created at that version.
func buildAccount(tb testing.TB, r *accountRepo, n, snapshotAt int) uuid.UUID {
	tb.Helper()
	ctx := context.Background()
	a := r.New(uuid.New())
	if err := a.Open("Bench", 1000); err != nil {
		tb.Fatal(err)
	}
	for v := 2; v <= n; v++ {
		if v%2 == 0 {
			_ = a.Deposit(10)
		} else {
			_ = a.Withdraw(5)
		}
		if v%100 == 0 || v == n || v == snapshotAt {
			if err := r.Save(ctx, a); err != nil {
				tb.Fatal(err)
			}
		}
		if v == snapshotAt {
			if _, err := r.CreateSnapshot(ctx, a); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if n == 1 {
		if err := r.Save(ctx, a); err != nil {
			tb.Fatal(err)
		}
	}
	if snapshotAt == n && n == 1 {
		if _, err := r.CreateSnapshot(ctx, a); err != nil {
			tb.Fatal(err)
		}
	}
	return a.ID()
}

// BenchmarkLoad measures Repository.Load on memstore for the tutorial's
// table: 100 to 100,000 events, without a snapshot, with one at the head
// (what a threshold of 100 with saves of 100 leaves) and with one 50
// events behind.
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{100, 1_000, 10_000, 100_000} {
		for _, c := range []struct {
			name   string
			snapAt int
		}{{"none", 0}, {"head", n}, {"behind50", n - 50}} {
			b.Run(fmt.Sprintf("memstore/events=%d/snapshot=%s", n, c.name), func(b *testing.B) {
				store := memstore.New()
				opts := []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeManual)}
				r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), opts...)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close(context.Background())
				id := buildAccount(b, r, n, c.snapAt)
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				var replayed int64
				for b.Loop() {
					a, err := r.Load(ctx, id)
					if err != nil {
						b.Fatal(err)
					}
					_, replayed = a.LoadedFromSnapshot()
				}
				b.ReportMetric(float64(replayed), "events_replayed")
				if replayed > 0 {
					perEvent := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(replayed)
					b.ReportMetric(perEvent, "ns/event")
					b.ReportMetric(1e9/perEvent, "events/s")
				}
			})
		}
	}
}

// BenchmarkSave measures Repository.Save of one event on memstore per mode.
func BenchmarkSave(b *testing.B) {
	for _, mode := range []string{"none", "sync", "background"} {
		b.Run("memstore/mode="+mode, func(b *testing.B) {
			store := memstore.New()
			opts := []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeOff)}
			if mode != "none" {
				opts = []eventsource.Option{eventsource.WithSnapshotMode(eventsource.SnapshotMode(mode)), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100})}
			}
			r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(context.Background())
			ctx := context.Background()
			a := r.New(uuid.New())
			_ = a.Open("Bench", 0)
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Deposit(1)
				if err := r.Save(ctx, a); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkLoadTrigger measures what WithLoadTrigger adds to a load that
// does not ask: off, on but below its count (idle), and on and past it
// but held back by its interval (limited: the aggregate asked on the
// first load). Compare with BenchmarkLoad's same rows.
func BenchmarkLoadTrigger(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []eventsource.Option
	}{
		{"off", []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync)}},
		{"idle", []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithLoadTrigger(1 << 30)}},
		{"limited", []eventsource.Option{eventsource.WithAppendNotifier(&requestingNotifier{}), eventsource.WithLoadTrigger(1), eventsource.WithLoadTriggerInterval(time.Hour)}},
	} {
		for _, snap := range []string{"head", "behind50"} {
			b.Run(fmt.Sprintf("memstore/events=1000/snapshot=%s/trigger=%s", snap, c.name), func(b *testing.B) {
				store := memstore.New()
				writer, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeManual))
				if err != nil {
					b.Fatal(err)
				}
				defer writer.Close(context.Background())
				at := 1000
				if snap == "behind50" {
					at = 950
				}
				id := buildAccount(b, writer, 1000, at)
				r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), c.opts...)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close(context.Background())
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if _, err := r.Load(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkLoadTriggerHook measures the load path's hook alone, on an
// aggregate loaded by replaying 20 events: without a trigger, with one
// whose count the load did not reach (idle), and with one it reached but
// whose interval holds it back (limited). A whole load is noisier than
// what the hook costs.
func BenchmarkLoadTriggerHook(b *testing.B) {
	store := memstore.New()
	writer, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		b.Fatal(err)
	}
	defer writer.Close(context.Background())
	id := buildAccount(b, writer, 20, 0)
	for _, c := range []struct {
		name string
		opts []eventsource.Option
	}{
		{"off", nil},
		{"idle", []eventsource.Option{eventsource.WithLoadTrigger(21)}},
		{"limited", []eventsource.Option{eventsource.WithAppendNotifier(&requestingNotifier{}), eventsource.WithLoadTrigger(20), eventsource.WithLoadTriggerInterval(time.Hour)}},
	} {
		b.Run("trigger="+c.name, func(b *testing.B) {
			r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(context.Background())
			ctx := context.Background()
			a, err := r.Load(ctx, id) // limited: this load asks
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				eventsource.AskIfReplayedEnough(ctx, r, a)
			}
		})
	}
}

// newBenchRepo returns an Account repository on a fresh memstore with
// opts, closed when b ends.
func newBenchRepo(b *testing.B, opts ...eventsource.Option) *accountRepo {
	b.Helper()
	r, err := eventsource.NewRepository[exampledomain.Account](memstore.New(), exampledomain.NewRegistry(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// telemetrySetups are BenchmarkTelemetry's instrumentation setups: none
// (the load and save without their spans and metrics), OpenTelemetry's
// no-op providers given explicitly, the global providers with no SDK
// installed (the default), an SDK tracer that samples nothing (alone, and
// with an SDK meter provider whose reader is never collected), and one
// that records every span (exported nowhere).
func telemetrySetups() []struct {
	name string
	opts func() []eventsource.Option
} {
	sdk := func(sampler sdktrace.Sampler, metrics bool) func() []eventsource.Option {
		return func() []eventsource.Option {
			opts := []eventsource.Option{eventsource.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler)))}
			if metrics {
				opts = append(opts, eventsource.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
			} else {
				opts = append(opts, eventsource.WithMeterProvider(metricnoop.NewMeterProvider()))
			}
			return opts
		}
	}
	return []struct {
		name string
		opts func() []eventsource.Option
	}{
		{"none", func() []eventsource.Option { return nil }},
		{"noop", func() []eventsource.Option {
			return []eventsource.Option{eventsource.WithTracerProvider(tracenoop.NewTracerProvider()), eventsource.WithMeterProvider(metricnoop.NewMeterProvider())}
		}},
		{"global", func() []eventsource.Option { return nil }},
		{"sdk-unsampled", sdk(sdktrace.NeverSample(), false)},
		{"sdk-unsampled-metrics", sdk(sdktrace.NeverSample(), true)},
		{"sdk-sampled-metrics", sdk(sdktrace.AlwaysSample(), true)},
	}
}

// BenchmarkTelemetry measures what instrumentation adds to a load (100
// events, snapshot at the head) and to a one-event save (sync snapshots,
// threshold 100) on memstore: compare each setup's row with none's.
func BenchmarkTelemetry(b *testing.B) {
	for _, setup := range telemetrySetups() {
		b.Run("op=load/telemetry="+setup.name, func(b *testing.B) {
			r := newBenchRepo(b, append([]eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeManual)}, setup.opts()...)...)
			id := buildAccount(b, r, 100, 100)
			ctx := context.Background()
			load := r.Load
			if setup.name == "none" {
				load = func(ctx context.Context, id uuid.UUID) (*exampledomain.Account, error) {
					return eventsource.LoadUninstrumented(ctx, r, id)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := load(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("op=save/telemetry="+setup.name, func(b *testing.B) {
			r := newBenchRepo(b, append([]eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100})}, setup.opts()...)...)
			ctx := context.Background()
			save := r.Save
			if setup.name == "none" {
				save = func(ctx context.Context, a *exampledomain.Account) error {
					return eventsource.SaveUninstrumented(ctx, r, a)
				}
			}
			a := r.New(uuid.New())
			_ = a.Open("Bench", 0)
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Deposit(1)
				if err := save(ctx, a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTelemetryOff measures what instrumentation costs a load (100
// events, snapshot at the head) and a one-event save (sync snapshots,
// threshold 100) on memstore when telemetry is off: the global providers
// with no SDK installed, and OpenTelemetry's no-op providers. The
// operation runs in blocks of 64, each block with its instrumentation or
// without at random (same repository, same aggregate), so both see the
// same machine, which a shared one changes from second to second, and
// blocks are timed by the thread's CPU time. It reports each's CPU ns/op
// (none-cpu-ns/op, off-cpu-ns/op) and the difference (added-cpu-ns/op).
// The control setup runs the instrumented operation on both sides: its
// difference is the method's noise.
func BenchmarkTelemetryOff(b *testing.B) {
	for _, setup := range []struct {
		name string
		opts []eventsource.Option
	}{
		{"global", nil},
		{"noop", []eventsource.Option{eventsource.WithTracerProvider(tracenoop.NewTracerProvider()), eventsource.WithMeterProvider(metricnoop.NewMeterProvider())}},
		{"control", nil},
	} {
		control := setup.name == "control"
		b.Run("op=load/telemetry="+setup.name, func(b *testing.B) {
			r := newBenchRepo(b, append([]eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeManual)}, setup.opts...)...)
			id := buildAccount(b, r, 100, 100)
			ctx := context.Background()
			load := func() error { _, err := r.Load(ctx, id); return err }
			none := func() error { _, err := eventsource.LoadUninstrumented(ctx, r, id); return err }
			if control {
				none = load
			}
			alternate(b, none, load)
		})
		b.Run("op=save/telemetry="+setup.name, func(b *testing.B) {
			r := newBenchRepo(b, append([]eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100})}, setup.opts...)...)
			ctx := context.Background()
			a := r.New(uuid.New())
			_ = a.Open("Bench", 0)
			save := func() error { _ = a.Deposit(1); return r.Save(ctx, a) }
			none := func() error { _ = a.Deposit(1); return eventsource.SaveUninstrumented(ctx, r, a) }
			if control {
				none = save
			}
			alternate(b, none, save)
		})
	}
}

// alternate runs none and off in blocks of 64 calls, each block's
// function drawn at random, for b's iterations, timing each block by the
// CPU time of the benchmark's thread (which other processes' turns on the
// core do not inflate), and reports each's CPU ns/op and their
// difference. (Strict alternation would put whatever happens every 256
// or 512 calls, such as a store growing by a chunk, always in the same
// function's blocks.)
func alternate(b *testing.B, none, off func() error) {
	const block = 64
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rng := rand.New(rand.NewPCG(1, 2))
	fns := [2]func() error{none, off}
	var took [2]time.Duration
	var calls [2]int
	k := 0
	b.ReportAllocs()
	start := threadCPU()
	for i := 0; b.Loop(); i++ {
		if i%block == 0 && i > 0 {
			now := threadCPU()
			took[k] += now - start
			start, k = now, rng.IntN(2)
		}
		if err := fns[k](); err != nil {
			b.Fatal(err)
		}
		calls[k]++
	}
	took[k] += threadCPU() - start
	if calls[0] == 0 || calls[1] == 0 {
		return // the probe run of one iteration
	}
	n0, n1 := float64(took[0].Nanoseconds())/float64(calls[0]), float64(took[1].Nanoseconds())/float64(calls[1])
	b.ReportMetric(n0, "none-cpu-ns/op")
	b.ReportMetric(n1, "off-cpu-ns/op")
	b.ReportMetric(n1-n0, "added-cpu-ns/op")
}
