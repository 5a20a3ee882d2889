package snapshotter_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// The worker's span links to the span of the save that published the
// notice, across the process boundary (via the notice's headers).
func TestWorkerSpanLinksToSave(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	appSpans := tracetest.NewSpanRecorder()
	appTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(appSpans))
	workerSpans := tracetest.NewSpanRecorder()
	workerTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(workerSpans))
	t.Cleanup(func() {
		_ = appTP.Shutdown(context.Background())
		_ = workerTP.Shutdown(context.Background())
	})
	repo, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg,
		eventsource.WithAppendNotifier(e.pub), eventsource.WithTracerProvider(appTP))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close(context.Background())
	w, err := snapshotter.New(e.config(func(c *snapshotter.Config) { c.TracerProvider = workerTP }),
		snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: 1}))
	if err != nil {
		t.Fatal(err)
	}
	e.start(w)

	a := repo.New(uuid.New())
	_ = a.Open("traced", 1)
	if err := repo.Save(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "snapshot", func() bool { return e.snapshotVersion(a.ID()) == 1 })

	var saveTrace string
	for _, s := range appSpans.Ended() {
		if s.Name() == "eventsource.Save" {
			saveTrace = s.SpanContext().TraceID().String()
		}
	}
	if saveTrace == "" {
		t.Fatal("no eventsource.Save span recorded")
	}
	waitFor(t, 5*time.Second, "worker span", func() bool {
		for _, s := range workerSpans.Ended() {
			if s.Name() != "snapshotter.Process" {
				continue
			}
			for _, l := range s.Links() {
				if l.SpanContext.TraceID().String() == saveTrace {
					return true
				}
			}
		}
		return false
	})
}
