package natsnotice_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A minimal aggregate, so this package's tests depend only on
// lib/eventsource and lib/memstore.
type (
	ticketOpened struct{}
	ticketNoted  struct {
		Text string `json:"text"`
	}
	ticketState struct{ Notes int }
	ticket      struct{ eventsource.Root[ticketState] }
)

func (ticketOpened) EventType() string { return "TicketOpened" }
func (ticketNoted) EventType() string  { return "TicketNoted" }
func (s ticketState) Apply(e eventsource.Event) ticketState {
	if _, ok := e.(ticketNoted); ok {
		s.Notes++
	}
	return s
}
func (*ticket) AggregateType() string { return "Ticket" }
func (*ticket) SchemaVersion() int    { return 1 }

func ticketRegistry() *eventsource.Registry {
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[ticketOpened](reg)
	eventsource.MustRegister[ticketNoted](reg)
	return reg
}

// TestRepositoryExternalMode wires the publisher into a repository the way
// an app does: a Save publishes a notice whose trace context is the
// Save's, and Close of the repository then the publisher loses nothing.
func TestRepositoryExternalMode(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	// Without coalescing: the two saves' notices could otherwise merge.
	p := e.publisher(natsnotice.WithTracerProvider(tp), natsnotice.WithCoalescing(false))
	repo, err := eventsource.NewRepository[ticket](memstore.New(), ticketRegistry(),
		eventsource.WithSnapshotMode(eventsource.ModeExternal), eventsource.WithAppendNotifier(p),
		eventsource.WithTracerProvider(tp), eventsource.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	ctx := ctxTimeout(t, 20*time.Second)
	id := uuid.New()
	tk := repo.New(id)
	tk.Raise(ticketOpened{})
	tk.Raise(ticketNoted{Text: "a"})
	tk.Raise(ticketNoted{Text: "b"})
	if err := repo.Save(ctx, tk); err != nil {
		t.Fatalf("Save: %v", err)
	}
	tk.Raise(ticketNoted{Text: "c"})
	if err := repo.Save(ctx, tk); err != nil {
		t.Fatalf("second Save: %v", err)
	}
	if err := repo.Close(ctx); err != nil {
		t.Fatalf("repository Close: %v", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("publisher Close: %v", err)
	}

	msgs := e.messages()
	if len(msgs) != 2 {
		t.Fatalf("%d notices, want 2", len(msgs))
	}
	first, err := natsnotice.Decode(msgs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	second, err := natsnotice.Decode(msgs[1].Data)
	if err != nil {
		t.Fatal(err)
	}
	if first.AggregateType != "Ticket" || first.AggregateID != id || first.FirstVersion != 1 || first.LastVersion != 3 ||
		!slices.Equal(first.EventTypes, []string{"TicketOpened", "TicketNoted"}) || first.CommittedAt.IsZero() {
		t.Errorf("first notice %+v", first)
	}
	if second.FirstVersion != 4 || second.LastVersion != 4 || !slices.Equal(second.EventTypes, []string{"TicketNoted"}) {
		t.Errorf("second notice %+v", second)
	}
	// The traceparent's trace is the first Save's.
	var save sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "eventsource.Save" {
			save = s
			break
		}
	}
	if save == nil {
		t.Fatal("no eventsource.Save span recorded")
	}
	if tp := msgs[0].Header.Get("traceparent"); len(tp) < 36 || tp[3:35] != save.SpanContext().TraceID().String() {
		t.Errorf("traceparent %q is not in the Save's trace %s", tp, save.SpanContext().TraceID())
	}
}

// ExampleNewPublisher shows the wiring of a repository in external mode,
// here on an embedded nats-server (in production, your NATS's URL).
func ExampleNewPublisher() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "evsnap-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := natsconnect.StartEmbedded(dir, "")
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		panic(err)
	}
	defer nc.Close() // last: after the publisher has flushed
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	// Usually `snapshotter migrate` does this once.
	if _, err := natsnotice.EnsureStream(ctx, js, natsnotice.DefaultStreamConfig()); err != nil {
		panic(err)
	}
	pub, err := natsnotice.NewPublisher(js)
	if err != nil {
		panic(err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := pub.Close(closeCtx); err != nil {
			fmt.Println(err) // how many notices were not published
		}
	}()
	repo, err := eventsource.NewRepository[ticket](memstore.New(), ticketRegistry(),
		eventsource.WithSnapshotMode(eventsource.ModeExternal), eventsource.WithAppendNotifier(pub))
	if err != nil {
		panic(err)
	}
	defer repo.Close(ctx) // first

	tk := repo.New(uuid.New())
	tk.Raise(ticketOpened{})
	if err := repo.Save(ctx, tk); err != nil { // never fails because of NATS
		panic(err)
	}
	if err := pub.Flush(ctx); err != nil { // waits for JetStream's acknowledgement
		panic(err)
	}
	fmt.Println("notices published:", pub.Stats().Published)
	// Output:
	// notices published: 1
}
