package eventsource_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/evsnap/evsnap/internal/tooling/syncbuf"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

type accountRepo = eventsource.Repository[exampledomain.Account, *exampledomain.Account]

// harness bundles stores, telemetry readers and a log buffer for one test.
type harness struct {
	t      *testing.T
	events *memstore.EventStore
	snaps  *memstore.SnapshotStore
	reg    *eventsource.Registry
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	logs   *syncbuf.Buffer
	opts   []eventsource.Option
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{
		t:      t,
		events: memstore.NewEventStore(),
		snaps:  memstore.NewSnapshotStore(),
		reg:    exampledomain.NewRegistry(),
		reader: sdkmetric.NewManualReader(),
		spans:  tracetest.NewSpanRecorder(),
		logs:   &syncbuf.Buffer{},
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	h.opts = []eventsource.Option{
		eventsource.WithMeterProvider(mp),
		eventsource.WithTracerProvider(tp),
		eventsource.WithLogger(slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
	return h
}

// store is the harness's event store and snapshots (h.snaps, or the
// snapshot store given) as one store.
func (h *harness) store(snaps ...eventsource.SnapshotStore) eventsource.Store {
	if len(snaps) > 0 {
		return eventsource.Split(h.events, snaps[0])
	}
	return eventsource.Split(h.events, h.snaps)
}

// accounts builds an Account repository on the harness's events and the
// snapshot store given; with nil, on h.snaps with snapshots off (the
// options may turn them on again).
func (h *harness) accounts(snaps eventsource.SnapshotStore, opts ...eventsource.Option) *accountRepo {
	h.t.Helper()
	all := append([]eventsource.Option{}, h.opts...)
	if snaps == nil {
		snaps = h.snaps
		all = append(all, eventsource.WithSnapshotMode(eventsource.ModeOff))
	}
	all = append(all, opts...)
	r, err := eventsource.NewRepository[exampledomain.Account](h.store(snaps), h.reg, all...)
	if err != nil {
		h.t.Fatalf("NewRepository: %v", err)
	}
	h.t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			h.t.Errorf("Close: %v", err)
		}
	})
	return r
}

// counter sums the int64 counter `name` over points whose attributes
// include every key/value in match.
func (h *harness) counter(name string, match ...attribute.KeyValue) int64 {
	h.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		h.t.Fatalf("collect metrics: %v", err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				h.t.Fatalf("metric %s is %T, not an int64 sum", name, m.Data)
			}
		points:
			for _, dp := range sum.DataPoints {
				for _, kv := range match {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue points
					}
				}
				total += dp.Value
			}
		}
	}
	return total
}

// openAccount creates and saves an account with n events in total (the
// opening plus n-1 deposits), in one save.
func openAccount(t *testing.T, r *accountRepo, n int) *exampledomain.Account {
	t.Helper()
	a := r.New(uuid.New())
	if err := a.Open("Ada", 100); err != nil {
		t.Fatal(err)
	}
	for range n - 1 {
		if err := a.Deposit(1); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Save(context.Background(), a); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return a
}

// faultySnapshots wraps a real snapshot store and injects faults a real
// store cannot be made to produce on demand.
type faultySnapshots struct {
	eventsource.SnapshotStore
	mu        sync.Mutex
	saveErr   error
	getErr    error
	deleteErr error // DeleteStaleSnapshot's
	// corrupt, when set, replaces the state GetSnapshot returns: what a
	// damaged row looks like (real stores refuse to write invalid JSON).
	corrupt []byte
	block   chan struct{} // when set, SaveSnapshot waits for it to close
	started chan struct{} // when set, SaveSnapshot signals it (non-blocking)
	saves   int
}

func (f *faultySnapshots) SaveSnapshot(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	f.mu.Lock()
	f.saves++
	err, block, started := f.saveErr, f.block, f.started
	f.mu.Unlock()
	if started != nil {
		select {
		case started <- struct{}{}:
		default:
		}
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if err != nil {
		return false, err
	}
	return f.SnapshotStore.SaveSnapshot(ctx, s)
}

func (f *faultySnapshots) GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, error) {
	f.mu.Lock()
	err, corrupt := f.getErr, f.corrupt
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s, err := f.SnapshotStore.GetSnapshot(ctx, typ, id, schemaVersion)
	if s != nil && corrupt != nil {
		s.State = corrupt
	}
	return s, err
}

func (f *faultySnapshots) DeleteStaleSnapshot(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	f.mu.Lock()
	err := f.deleteErr
	f.mu.Unlock()
	if err != nil {
		return false, err
	}
	return f.SnapshotStore.DeleteStaleSnapshot(ctx, s)
}

var errInjected = errors.New("injected snapshot store failure")
