package eventsource_test

import (
	"context"
	"testing"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// instrumentationAllocs returns the allocations of a load (snapshot at the
// head) and of a one-event save (sync snapshots, threshold 100) by a
// repository made with opts, each less those of the same operation
// without instrumentation.
func instrumentationAllocs(t *testing.T, opts ...eventsource.Option) (load, save float64) {
	t.Helper()
	ctx := context.Background()
	opts = append([]eventsource.Option{eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100})}, opts...)
	r, err := eventsource.NewRepository[exampledomain.Account](memstore.New(), exampledomain.NewRegistry(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	a := r.New(uuid.New())
	_ = a.Open("Alloc", 0)
	for range 99 {
		_ = a.Deposit(1)
	}
	if err := r.Save(ctx, a); err != nil { // v100: a snapshot at the head
		t.Fatal(err)
	}
	const runs = 500
	loadWith := testing.AllocsPerRun(runs, func() {
		if _, err := r.Load(ctx, a.ID()); err != nil {
			t.Fatal(err)
		}
	})
	loadWithout := testing.AllocsPerRun(runs, func() {
		if _, err := eventsource.LoadUninstrumented(ctx, r, a.ID()); err != nil {
			t.Fatal(err)
		}
	})
	saveWith := testing.AllocsPerRun(runs, func() {
		_ = a.Deposit(1)
		if err := r.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
	})
	saveWithout := testing.AllocsPerRun(runs, func() {
		_ = a.Deposit(1)
		if err := eventsource.SaveUninstrumented(ctx, r, a); err != nil {
			t.Fatal(err)
		}
	})
	return loadWith - loadWithout, saveWith - saveWithout
}

// With OpenTelemetry's no-op providers, given or the global ones of a
// program that installed no SDK, loads and saves allocate nothing for
// their spans and metrics. The global tracer provider is followed: once
// the program installs an SDK, the repository made before records spans.
// (Not parallel: it counts allocations, and sets the global provider.)
func TestTelemetryOffAllocatesNothing(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []eventsource.Option
	}{
		{"noop providers", []eventsource.Option{eventsource.WithTracerProvider(tracenoop.NewTracerProvider()), eventsource.WithMeterProvider(metricnoop.NewMeterProvider())}},
		{"global providers, no SDK", nil},
	} {
		if eventsource.RaceEnabled {
			t.Logf("%s: allocations not counted under the race detector", c.name)
			continue
		}
		load, save := instrumentationAllocs(t, c.opts...)
		if load > 0 || save > 0 {
			t.Errorf("%s: instrumentation allocates %v per load and %v per save, want 0", c.name, load, save)
		}
	}

	if _, set := otel.GetTracerProvider().(tracenoop.TracerProvider); set {
		t.Log("the global tracer provider was set by an earlier run of this test (-count): no SDK to install")
		return
	}
	r, err := eventsource.NewRepository[exampledomain.Account](memstore.New(), exampledomain.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	spans := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	t.Cleanup(func() { otel.SetTracerProvider(tracenoop.NewTracerProvider()) })
	a := r.New(uuid.New())
	_ = a.Open("Traced", 0)
	if err := r.Save(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load(context.Background(), a.ID()); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range spans.Ended() {
		names[s.Name()] = true
	}
	for _, n := range []string{"eventsource.Save", "eventsource.Load", "eventsource.LoadSnapshotAndEvents"} {
		if !names[n] {
			t.Errorf("after installing an SDK: no %s span (got %v)", n, names)
		}
	}
}
