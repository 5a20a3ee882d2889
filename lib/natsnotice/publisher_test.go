package natsnotice_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/syncbuf"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestNewPublisherValidatesOptions(t *testing.T) {
	e := newEnv(t)
	bad := map[string]natsnotice.PublisherOption{
		"buffer 0":            natsnotice.WithBufferSize(0),
		"buffer huge":         natsnotice.WithBufferSize(natsnotice.MaxBufferSize + 1),
		"negative wait":       natsnotice.WithMaxEnqueueWait(-time.Millisecond),
		"long wait":           natsnotice.WithMaxEnqueueWait(2 * time.Second),
		"in flight 0":         natsnotice.WithMaxInFlight(0),
		"publish timeout 0":   natsnotice.WithPublishTimeout(0),
		"backoff inverted":    natsnotice.WithRetryBackoff(time.Second, time.Millisecond),
		"backoff 0":           natsnotice.WithRetryBackoff(0, time.Second),
		"max elapsed 0":       natsnotice.WithRetryMaxElapsed(0),
		"negative linger":     natsnotice.WithLinger(-time.Millisecond),
		"long linger":         natsnotice.WithLinger(natsnotice.MaxLingerLimit + 1),
		"empty prefix":        natsnotice.WithSubjectPrefix(""),
		"wildcard prefix":     natsnotice.WithSubjectPrefix("evsnap.*"),
		"empty token prefix":  natsnotice.WithSubjectPrefix("evsnap..appended"),
		"trailing dot prefix": natsnotice.WithSubjectPrefix("evsnap."),
		"nil logger":          natsnotice.WithLogger(nil),
		"nil tracer":          natsnotice.WithTracerProvider(nil),
		"nil meter":           natsnotice.WithMeterProvider(nil),
		"nil propagator":      natsnotice.WithPropagator(nil),
	}
	for name, opt := range bad {
		t.Run(name, func(t *testing.T) {
			p, err := natsnotice.NewPublisher(e.js, opt)
			if !errors.Is(err, natsnotice.ErrInvalidOption) {
				if p != nil {
					_ = p.Close(context.Background())
				}
				t.Fatalf("NewPublisher = %v, want ErrInvalidOption", err)
			}
		})
	}
	if _, err := natsnotice.NewPublisher(nil); !errors.Is(err, natsnotice.ErrInvalidOption) {
		t.Fatalf("NewPublisher(nil) = %v, want ErrInvalidOption", err)
	}
}

// TestPublish: one notice lands in the stream on the right subject, with
// Nats-Msg-Id, the save's trace context, and a body Decode accepts listing
// the distinct event types.
func TestPublish(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	p := e.publisher(natsnotice.WithTracerProvider(tp), natsnotice.WithMeterProvider(mp))

	ctx, save := tp.Tracer("test").Start(ctxTimeout(t, 10*time.Second), "eventsource.Save")
	a := appended("Account", testID, 1, 5,
		"AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "MoneyDeposited", "MoneyWithdrawn")
	m := notifyInSave(t, e, p, ctx, save, a)
	if want := e.cfg.SubjectPrefix + ".Account." + testID.String(); m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	if got, want := m.Header.Get(jetstream.MsgIDHeader), "Account/"+testID.String()+"/5"; got != want {
		t.Errorf("Nats-Msg-Id %q, want %q", got, want)
	}
	n, err := natsnotice.Decode(m.Data)
	if err != nil {
		t.Fatalf("Decode: %v\n%s", err, m.Data)
	}
	if want := natsnotice.FromAppended(a); !slices.Equal(n.EventTypes, []string{"AccountOpened", "MoneyDeposited", "MoneyWithdrawn"}) ||
		n.AggregateType != "Account" || n.AggregateID != testID || n.FirstVersion != 1 || n.LastVersion != 5 ||
		!n.CommittedAt.Equal(want.CommittedAt) {
		t.Errorf("notice %+v, want %+v", n, want)
	}

	// traceparent carries the save's trace, through the producer span.
	tparent := m.Header.Get("traceparent")
	var producer sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "natsnotice.Notify" {
			producer = s
		}
	}
	if producer == nil {
		t.Fatalf("no natsnotice.Notify span; spans: %v", rec.Ended())
	}
	if producer.Parent().SpanID() != save.SpanContext().SpanID() {
		t.Errorf("producer span's parent %s, want the save span %s", producer.Parent().SpanID(), save.SpanContext().SpanID())
	}
	want := fmt.Sprintf("00-%s-%s-01", save.SpanContext().TraceID(), producer.SpanContext().SpanID())
	if tparent != want {
		t.Errorf("traceparent %q, want %q (headers %v)", tparent, want, m.Header)
	}
	got := propagation.TraceContext{}.Extract(context.Background(), natsnotice.HeaderCarrier(m.Header))
	if sc := trace.SpanContextFromContext(got); sc.TraceID() != save.SpanContext().TraceID() {
		t.Errorf("extracted trace %s, want %s", sc.TraceID(), save.SpanContext().TraceID())
	}

	st := p.Stats()
	if st.Enqueued != 1 || st.Published != 1 || st.Dropped != 0 || st.Buffered != 0 {
		t.Errorf("stats %+v", st)
	}
	if v := sumCounter(t, reader, natsnotice.MetricPublished, nil); v != 1 {
		t.Errorf("%s = %d, want 1", natsnotice.MetricPublished, v)
	}
}

// notifyInSave notifies a inside the save's span, ends the span, flushes
// and returns the one message the stream then holds.
func notifyInSave(t *testing.T, e *env, p *natsnotice.Publisher, ctx context.Context, save trace.Span, a eventsource.Appended) *jetstream.RawStreamMsg {
	t.Helper()
	if err := p.Notify(ctx, a); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	save.End()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	msgs := e.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages in the stream, want 1", len(msgs))
	}
	return msgs[0]
}

// TestPublishWithoutSpan: no span in ctx, no traceparent header.
func TestPublishWithoutSpan(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	ctx := ctxTimeout(t, 10*time.Second)
	if err := p.Notify(ctx, appended("Account", testID, 1, 1)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	msgs := e.messages()
	if len(msgs) != 1 || msgs[0].Header.Get("traceparent") != "" {
		t.Fatalf("messages %d, headers %v", len(msgs), msgs[0].Header)
	}
}

// TestPublishUnsampledSave: a save whose span is not recorded gets no
// producer span, and its message still carries the save's trace context
// (unsampled), with whatever else the propagator writes.
func TestPublishUnsampledSave(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(rec))
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	p := e.publisher(natsnotice.WithTracerProvider(tp), natsnotice.WithPropagator(prop))

	ctx, save := tp.Tracer("test").Start(natsnotice.WithTenantBaggage(t, ctxTimeout(t, 10*time.Second)), "eventsource.Save")
	if save.IsRecording() || !save.SpanContext().IsValid() {
		t.Fatalf("the save's span: recording %v, valid %v; want an unsampled, valid span", save.IsRecording(), save.SpanContext().IsValid())
	}
	h := notifyInSave(t, e, p, ctx, save, appended("Account", testID, 1, 1)).Header
	if want := fmt.Sprintf("00-%s-%s-00", save.SpanContext().TraceID(), save.SpanContext().SpanID()); h.Get("traceparent") != want {
		t.Errorf("traceparent %q, want %q", h.Get("traceparent"), want)
	}
	if h.Get("baggage") != "tenant=acme" {
		t.Errorf("baggage %q, want tenant=acme (headers %v)", h.Get("baggage"), h)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Errorf("%d spans recorded, want none", n)
	}
}

// TestDuplicatesDropped: the same append notified twice (same MsgID) is
// stored once.
func TestDuplicatesDropped(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	ctx := ctxTimeout(t, 10*time.Second)
	a := appended("Account", testID, 1, 3)
	for range 2 {
		if err := p.Notify(ctx, a); err != nil {
			t.Fatalf("Notify: %v", err)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
	if err := p.Notify(ctx, appended("Account", testID, 4, 4)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if n := len(e.messages()); n != 2 {
		t.Fatalf("%d messages in the stream, want 2 (v3 once, v4)", n)
	}
	if st := p.Stats(); st.Published != 3 || st.Duplicates != 1 {
		t.Fatalf("stats %+v, want 3 published of which 1 duplicate", st)
	}
}

func TestNotifyInvalid(t *testing.T) {
	e := newEnv(t)
	reader := sdkmetric.NewManualReader()
	p := e.publisher(natsnotice.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	ctx := ctxTimeout(t, 10*time.Second)
	err := p.Notify(ctx, appended("Bad.Type", testID, 1, 1))
	if !errors.Is(err, natsnotice.ErrInvalidAggregateType) || !strings.Contains(err.Error(), "Bad.Type") {
		t.Fatalf("Notify(Bad.Type) = %v, want ErrInvalidAggregateType naming the type", err)
	}
	if err := p.Notify(ctx, appended("Account", testID, 3, 2)); !errors.Is(err, natsnotice.ErrMalformed) {
		t.Fatalf("Notify(last < first) = %v, want ErrMalformed", err)
	}
	if err := p.Notify(ctx, appended("Account", uuid.Nil, 1, 1)); !errors.Is(err, natsnotice.ErrMalformed) {
		t.Fatalf("Notify(nil id) = %v, want ErrMalformed", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if n := len(e.messages()); n != 0 {
		t.Fatalf("%d messages published for invalid appends", n)
	}
	if st := p.Stats(); st.Invalid != 3 || st.Enqueued != 0 {
		t.Fatalf("stats %+v", st)
	}
	if v := sumCounter(t, reader, natsnotice.MetricDropped, attrSet(
		telemetrykeys.AttrAggregateType.String("Bad.Type"), telemetrykeys.AttrReason.String(natsnotice.DropInvalid))); v != 1 {
		t.Fatalf("dropped{invalid, Bad.Type} = %d, want 1", v)
	}
}

// TestBufferFull: with NATS down, Notify drops once the buffer is full,
// returns ErrDropped within its bound, and counts the drops.
func TestBufferFull(t *testing.T) {
	for _, wait := range []time.Duration{0, 30 * time.Millisecond} {
		t.Run(fmt.Sprintf("wait=%s", wait), func(t *testing.T) {
			e := newEnv(t)
			reader := sdkmetric.NewManualReader()
			const size = 8
			p := e.publisher(natsnotice.WithBufferSize(size), natsnotice.WithMaxEnqueueWait(wait),
				natsnotice.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
			natstest.Shutdown(e.srv)
			ctx := ctxTimeout(t, 20*time.Second)
			var dropped int
			for range size + 5 {
				start := time.Now()
				err := p.Notify(ctx, appended("Account", uuid.New(), 1, 1)) // one aggregate each: nothing merges
				took := time.Since(start)
				switch {
				case err == nil:
				case errors.Is(err, natsnotice.ErrDropped):
					dropped++
					if took < wait {
						t.Errorf("Notify dropped after %s, before its wait %s", took, wait)
					}
				default:
					t.Fatalf("Notify: %v", err)
				}
				// The bound is wait plus microseconds; allow for the race
				// detector and a loaded machine.
				within(t, "Notify", took, wait+250*time.Millisecond)
			}
			if dropped != 5 {
				t.Fatalf("%d notices dropped, want 5", dropped)
			}
			st := p.Stats()
			if st.Enqueued != size || st.DroppedBufferFull != 5 || st.Buffered != size {
				t.Fatalf("stats %+v", st)
			}
			if v := sumCounter(t, reader, natsnotice.MetricDropped, attrSet(
				telemetrykeys.AttrAggregateType.String("Account"), telemetrykeys.AttrReason.String(natsnotice.DropBufferFull))); v != 5 {
				t.Fatalf("dropped{buffer_full} = %d, want 5", v)
			}
			closeCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			if err := p.Close(closeCtx); !errors.Is(err, natsnotice.ErrDropped) {
				t.Fatalf("Close = %v, want ErrDropped", err)
			}
		})
	}
}

// TestWaitForRoom: with a buffer of one and a wait allowed, each Notify
// waits for the previous notice's acknowledgement to free the room, and
// none is dropped.
func TestWaitForRoom(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(natsnotice.WithBufferSize(1), natsnotice.WithMaxEnqueueWait(natsnotice.MaxEnqueueWaitLimit),
		natsnotice.WithLinger(0))
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 50
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for v := range n {
				if err := p.Notify(ctx, appended("Order", ids[g], int64(v+1), int64(v+1))); err != nil {
					t.Errorf("Notify: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if st := p.Stats(); st.Published != 2*n || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNATSDown: with the server gone, Notify keeps returning within its
// bound (buffering, then dropping), and Close with a short deadline
// returns, drops what it holds and reports it.
func TestNATSDown(t *testing.T) {
	e := newEnv(t)
	const size = 32
	wait := 20 * time.Millisecond
	p := e.publisher(natsnotice.WithBufferSize(size), natsnotice.WithMaxEnqueueWait(wait),
		natsnotice.WithPublishTimeout(200*time.Millisecond), natsnotice.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond))
	ctx := ctxTimeout(t, 30*time.Second)
	if err := p.Notify(ctx, appended("Account", testID, 1, 1)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	natstest.Shutdown(e.srv)

	var accepted, dropped int
	var slowest time.Duration
	for range 200 {
		start := time.Now()
		err := p.Notify(ctx, appended("Account", uuid.New(), 1, 1)) // one aggregate each: nothing merges
		slowest = max(slowest, time.Since(start))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, natsnotice.ErrDropped):
			dropped++
		default:
			t.Fatalf("Notify while NATS is down: %v", err)
		}
	}
	within(t, "the slowest Notify while NATS is down", slowest, wait+250*time.Millisecond)
	if accepted > size || dropped < 200-size {
		t.Fatalf("accepted %d, dropped %d with a buffer of %d", accepted, dropped, size)
	}
	if st := p.Stats(); st.Retries == 0 {
		t.Logf("stats %+v", st) // retries depend on timing; they are not the point here
	}

	closeCtx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Close(closeCtx)
	within(t, "Close with a 300ms deadline", time.Since(start), 3*time.Second)
	if !errors.Is(err, natsnotice.ErrDropped) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want ErrDropped and DeadlineExceeded", err)
	}
	st := p.Stats()
	if st.DroppedClosed != int64(accepted) || st.Published != 1 || st.Buffered != 0 || st.InFlight != 0 {
		t.Fatalf("stats after Close %+v (accepted %d while down)", st, accepted)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(accepted)) {
		t.Errorf("Close error %q does not say how many were dropped (%d)", err, accepted)
	}
	if err := p.Notify(ctx, appended("Account", testID, 999, 999)); !errors.Is(err, natsnotice.ErrClosed) {
		t.Fatalf("Notify after Close = %v, want ErrClosed", err)
	}
}

// TestHotAggregateMerges: the saves of one aggregate that come while the
// sender lingers go out as one message (Notify merges each into the
// notice queued before it), which covers every version once, lists their
// event types and carries the last version's message id.
func TestHotAggregateMerges(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(natsnotice.WithLinger(natsnotice.MaxLingerLimit))
	ctx := ctxTimeout(t, 30*time.Second)
	hot := uuid.New()
	const n = 50
	for v := int64(1); v <= n; v++ {
		if err := p.Notify(ctx, appended("Account", hot, v, v, fmt.Sprint("T", v%2))); err != nil {
			t.Fatalf("Notify v%d: %v", v, err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	msgs := e.messages()
	// The first notice wakes the idle sender; the rest queue during its
	// linger, unless the sender had not yet taken the first.
	if len(msgs) == 0 || len(msgs) > 2 {
		t.Fatalf("%d messages for %d saves within one linger, want 1 or 2", len(msgs), n)
	}
	next := int64(1)
	for _, m := range msgs {
		nt, err := natsnotice.Decode(m.Data)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if nt.FirstVersion != next || m.Header.Get(jetstream.MsgIDHeader) != nt.MsgID() {
			t.Fatalf("message %v: %+v, want it to start at v%d", m.Header, nt, next)
		}
		if nt.LastVersion > nt.FirstVersion && !slices.Equal(nt.EventTypes, []string{fmt.Sprint("T", nt.FirstVersion%2), fmt.Sprint("T", (nt.FirstVersion+1)%2)}) {
			t.Fatalf("merged notice lists %v", nt.EventTypes)
		}
		next = nt.LastVersion + 1
	}
	if next != n+1 {
		t.Fatalf("messages cover v1-v%d, want v1-v%d", next-1, n)
	}
	if st := p.Stats(); st.Enqueued != n || st.Published != n || st.Coalesced != n-int64(len(msgs)) || st.Buffered != 0 {
		t.Fatalf("stats %+v with %d messages", st, len(msgs))
	}
}

// TestNATSRestart: notices enqueued before, during and after a server
// restart (same port and store) are all published once the server is back,
// and none is stored twice.
func TestNATSRestart(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(natsnotice.WithBufferSize(4096), natsnotice.WithPublishTimeout(time.Second),
		natsnotice.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond), natsnotice.WithRetryMaxElapsed(time.Minute))
	ctx := ctxTimeout(t, 60*time.Second)
	ids := make([]uuid.UUID, 50)
	for i := range ids {
		ids[i] = uuid.New()
	}
	version := int64(0)
	notify := func(n int) {
		t.Helper()
		for range n {
			version++
			id := ids[int(version)%len(ids)]
			if err := p.Notify(ctx, appended("Account", id, version, version)); err != nil {
				t.Fatalf("Notify v%d: %v", version, err)
			}
		}
	}

	notify(300)
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush before the restart: %v", err)
	}
	notify(300) // some of these are in flight when the server goes
	natstest.Shutdown(e.srv)
	notify(300)
	time.Sleep(300 * time.Millisecond) // let attempts fail and back off
	natstest.Restart(t, e.srv)
	notify(300)

	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush after the restart: %v (stats %+v)", err, p.Stats())
	}
	msgs := e.messages()
	seen := map[string]bool{}
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if seen[id] {
			t.Errorf("message %s stored twice", id)
		}
		seen[id] = true
	}
	if len(msgs) != int(version) {
		t.Fatalf("%d messages in the stream, want %d", len(msgs), version)
	}
	st := p.Stats()
	if st.Published != version || st.Dropped != 0 {
		t.Fatalf("stats %+v, want %d published, none dropped", st, version)
	}
	t.Logf("stats after the restart: %+v", st)
}

// TestCloseFlushes: Close publishes everything accepted, is idempotent, and
// Notify and Flush fail with ErrClosed afterwards. Without coalescing, so
// that the stream holds one message per notice.
func TestCloseFlushes(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(natsnotice.WithCoalescing(false))
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 2000
	var wg sync.WaitGroup
	for g := range 4 { // concurrent savers
		wg.Go(func() {
			id := uuid.New()
			for v := range n / 4 {
				if err := p.Notify(ctx, appended("Order", id, int64(v+1), int64(v+1), "OrderPlaced")); err != nil {
					t.Errorf("saver %d: Notify: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := len(e.messages()); got != n {
		t.Fatalf("%d messages after Close, want %d", got, n)
	}
	if st := p.Stats(); st.Published != n || st.Dropped != 0 || st.Buffered != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.Notify(ctx, appended("Order", testID, 1, 1)); !errors.Is(err, natsnotice.ErrClosed) {
		t.Fatalf("Notify after Close = %v, want ErrClosed", err)
	}
	if err := p.Flush(ctx); !errors.Is(err, natsnotice.ErrClosed) {
		t.Fatalf("Flush after Close = %v, want ErrClosed", err)
	}
}

// TestConcurrentNotifyAndFlush: many goroutines notify, pausing now and
// then so the sender goes to sleep and must be woken, while others call
// Flush; with and without linger every notice is published without a
// final Flush, and no Flush hangs (a lost wake-up would leave notices
// queued).
func TestConcurrentNotifyAndFlush(t *testing.T) {
	for _, linger := range []time.Duration{0, time.Millisecond, natsnotice.DefaultLinger} {
		t.Run("linger="+linger.String(), func(t *testing.T) {
			e := newEnv(t)
			p := e.publisher(natsnotice.WithLinger(linger), natsnotice.WithMaxInFlight(16))
			ctx := ctxTimeout(t, 60*time.Second)
			const savers, each = 8, 150
			var wg sync.WaitGroup
			for g := range savers {
				wg.Go(func() {
					id := uuid.New()
					for v := range each {
						if err := p.Notify(ctx, appended("Order", id, int64(v+1), int64(v+1), "OrderPlaced")); err != nil {
							t.Errorf("saver %d: Notify: %v", g, err)
							return
						}
						switch {
						case v%50 == 20: // not last: the savers end without a Flush
							if err := p.Flush(ctx); err != nil {
								t.Errorf("saver %d: Flush: %v", g, err)
								return
							}
						case v%7 == g%7:
							time.Sleep(time.Duration(v%3) * 100 * time.Microsecond)
						}
					}
				})
			}
			wg.Wait()
			// Without a Flush (which wakes the sender too), every notice
			// is published: each Notify that found the sender asleep woke
			// it.
			for deadline := time.Now().Add(20 * time.Second); p.Stats().Published < savers*each; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("notices left unpublished: stats %+v", p.Stats())
				}
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v (stats %+v)", err, p.Stats())
			}
			// Lone notices, each to a sleeping sender.
			lone := uuid.New()
			for v := range 20 {
				if err := p.Notify(ctx, appended("Order", lone, int64(v+1), int64(v+1), "OrderPlaced")); err != nil {
					t.Fatalf("Notify: %v", err)
				}
				for deadline := time.Now().Add(20 * time.Second); p.Stats().Published < savers*each+int64(v+1); time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("lone notice %d left unpublished: stats %+v", v+1, p.Stats())
					}
				}
				time.Sleep(linger + time.Millisecond) // the sender goes back to sleep
			}
			st := p.Stats()
			if st.Published != savers*each+20 || st.Dropped != 0 || st.Buffered != 0 || st.InFlight != 0 {
				t.Fatalf("stats %+v, want %d published", st, savers*each+20)
			}
			covered := map[string]int64{}
			for _, m := range e.messages() {
				n, err := natsnotice.Decode(m.Data)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				k := n.AggregateID.String()
				if n.FirstVersion != covered[k]+1 {
					t.Fatalf("%s: notice of v%d-%d after v%d", k, n.FirstVersion, n.LastVersion, covered[k])
				}
				covered[k] = n.LastVersion
			}
			for k, v := range covered {
				if want := map[bool]int64{true: 20, false: each}[k == lone.String()]; v != want {
					t.Errorf("%s: notices up to v%d, want v%d", k, v, want)
				}
			}
			if len(covered) != savers+1 {
				t.Errorf("notices about %d aggregates, want %d", len(covered), savers+1)
			}
		})
	}
}

// TestFlushCutsLingerShort: Flush does not wait out the sender's linger.
func TestFlushCutsLingerShort(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(natsnotice.WithLinger(natsnotice.MaxLingerLimit))
	ctx := ctxTimeout(t, 30*time.Second)
	const rounds = 10
	start := time.Now()
	for v := range rounds {
		if err := p.Notify(ctx, appended("Account", testID, int64(v+1), int64(v+1))); err != nil {
			t.Fatalf("Notify: %v", err)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
	// Waiting out the linger would take rounds × 100ms; Flush normally
	// takes well under a millisecond.
	within(t, fmt.Sprintf("%d Notify+Flush with a %s linger", rounds, natsnotice.MaxLingerLimit),
		time.Since(start), rounds*natsnotice.MaxLingerLimit/2)
}

// TestCoalescingPublishesEverything: with coalescing (the default),
// concurrent savers' notices, some flushed and the rest left for Close,
// all reach the stream:
// per aggregate the messages cover every version once, in order, each
// listing the event types of the versions it covers and carrying the
// message id of its last version; the counters add up.
func TestCoalescingPublishesEverything(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	ctx := ctxTimeout(t, 30*time.Second)
	const savers, each = 4, 300
	typeOf := func(v int64) string { return fmt.Sprint("T", v%3) }
	notify := func(from, to int64) {
		var wg sync.WaitGroup
		for g := range savers {
			wg.Go(func() {
				id := ids[g]
				for v := from; v <= to; v++ {
					if err := p.Notify(ctx, appended("Order", id, v, v, typeOf(v))); err != nil {
						t.Errorf("Notify: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	notify(1, each/2)
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	notify(each/2+1, each)
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	msgs := e.messages()
	covered := map[uuid.UUID]int64{}
	for _, m := range msgs {
		n, err := natsnotice.Decode(m.Data)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if n.FirstVersion != covered[n.AggregateID]+1 {
			t.Fatalf("%s: notice of v%d-%d after v%d", n.AggregateID, n.FirstVersion, n.LastVersion, covered[n.AggregateID])
		}
		covered[n.AggregateID] = n.LastVersion
		var types []string
		for v := n.FirstVersion; v <= n.LastVersion && len(types) < 3; v++ {
			if !slices.Contains(types, typeOf(v)) {
				types = append(types, typeOf(v))
			}
		}
		if !slices.Equal(n.EventTypes, types) || m.Header.Get(jetstream.MsgIDHeader) != n.MsgID() ||
			m.Subject != natsnotice.Subject(e.cfg.SubjectPrefix, "Order", n.AggregateID) {
			t.Fatalf("message %s %v: %+v (want types %v)", m.Subject, m.Header, n, types)
		}
	}
	for _, id := range ids[:savers] {
		if covered[id] != each {
			t.Errorf("%s: notices up to v%d, want v%d", id, covered[id], each)
		}
	}
	st := p.Stats()
	if st.Enqueued != savers*each || st.Published != savers*each || st.Dropped != 0 || st.Buffered != 0 ||
		st.Coalesced != st.Published-int64(len(msgs)) {
		t.Fatalf("stats %+v with %d messages", st, len(msgs))
	}
	t.Logf("%d notices in %d messages", st.Published, len(msgs))
}

// ids are aggregates the tests share.
var ids = func() []uuid.UUID {
	ids := make([]uuid.UUID, 8)
	for i := range ids {
		ids[i] = uuid.New()
	}
	return ids
}()

// TestCoalescedDropsCounted: notices merged into one message that is
// never acknowledged are each counted when Close drops it.
func TestCoalescedDropsCounted(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(natsnotice.WithCoalescing(true), natsnotice.WithLinger(20*time.Millisecond))
	ctx := ctxTimeout(t, 10*time.Second)
	if err := p.Notify(ctx, appended("Order", ids[0], 1, 1)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	natstest.Shutdown(e.srv)
	const n = 50
	for v := int64(2); v < 2+n; v++ {
		if err := p.Notify(ctx, appended("Order", ids[0], v, v)); err != nil {
			t.Fatalf("Notify: %v", err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err := p.Close(short)
	if !errors.Is(err, natsnotice.ErrDropped) || !strings.Contains(err.Error(), fmt.Sprintf("%d notices not published", n)) {
		t.Fatalf("Close = %v, want ErrDropped for %d notices", err, n)
	}
	if st := p.Stats(); st.DroppedClosed != n || st.Published != 1 || st.Buffered != 0 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRetriesExhausted: with no stream capturing the subjects, publishes
// fail, are retried, and are dropped after the max elapsed time; Flush
// reports the drops.
func TestRetriesExhausted(t *testing.T) {
	e := newEnv(t)
	p, err := natsnotice.NewPublisher(e.js, natsnotice.WithSubjectPrefix(natstest.UniqueName(t, "nostream")), natsnotice.WithLogger(testLogger(t)),
		natsnotice.WithRetryBackoff(10*time.Millisecond, 20*time.Millisecond), natsnotice.WithRetryMaxElapsed(100*time.Millisecond))
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	ctx := ctxTimeout(t, 20*time.Second)
	for v := range 3 {
		if err := p.Notify(ctx, appended("Account", testID, int64(v+1), int64(v+1))); err != nil {
			t.Fatalf("Notify: %v", err)
		}
	}
	if err := p.Flush(ctx); !errors.Is(err, natsnotice.ErrDropped) || !strings.Contains(err.Error(), "3 notices") {
		t.Fatalf("Flush = %v, want ErrDropped for 3 notices", err)
	}
	if st := p.Stats(); st.DroppedRetriesExhausted != 3 || st.Retries == 0 || st.Buffered != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestFlushDeadline: Flush gives up when its context ends and says how
// many notices are pending.
func TestFlushDeadline(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	natstest.Shutdown(e.srv)
	ctx := ctxTimeout(t, 10*time.Second)
	if err := p.Notify(ctx, appended("Account", testID, 1, 1)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := p.Flush(short)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 notices still pending") {
		t.Fatalf("Flush = %v, want DeadlineExceeded with 1 pending", err)
	}
	short, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := p.Close(short); !errors.Is(err, natsnotice.ErrDropped) || !strings.Contains(err.Error(), "1 notices not published") {
		t.Fatalf("Close = %v, want ErrDropped for 1 notice", err)
	}
}

// TestAgainstRealServer runs the publish test against the real NATS server
// (EVSNAP_TEST_NATS_URL), on its own stream and subjects, one message per
// notice (no coalescing), so that the duplicate is a message of its own.
func TestAgainstRealServer(t *testing.T) {
	e := connectEnv(t, natstest.ExternalURL(t), true)
	p := e.publisher(natsnotice.WithCoalescing(false))
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 500
	id := uuid.New()
	for v := range n {
		if err := p.Notify(ctx, appended("Account", id, int64(v+1), int64(v+1), "MoneyDeposited")); err != nil {
			t.Fatalf("Notify: %v", err)
		}
	}
	if err := p.Notify(ctx, appended("Account", id, n, n, "MoneyDeposited")); err != nil { // a duplicate
		t.Fatalf("Notify: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	msgs := e.messages()
	if len(msgs) != n {
		t.Fatalf("%d messages, want %d", len(msgs), n)
	}
	last := msgs[len(msgs)-1]
	nt, err := natsnotice.Decode(last.Data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if last.Subject != natsnotice.Subject(e.cfg.SubjectPrefix, "Account", id) || nt.LastVersion != n ||
		last.Header.Get(jetstream.MsgIDHeader) != nt.MsgID() {
		t.Fatalf("last message %s %v: %+v", last.Subject, last.Header, nt)
	}
	if st := p.Stats(); st.Published != n+1 || st.Duplicates != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// sumCounter returns the value of the int64 sum metric name whose
// attributes equal attrs (nil: the sum over every attribute set).
func sumCounter(t testing.TB, r *sdkmetric.ManualReader, name string, attrs *attribute.Set) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("metric %s is %T, want an int64 sum", name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				if attrs == nil || dp.Attributes.Equals(attrs) {
					total += dp.Value
				}
			}
		}
	}
	return total
}

func attrSet(kv ...attribute.KeyValue) *attribute.Set {
	s := attribute.NewSet(kv...)
	return &s
}

// TestRetriesWarned: a stream that refuses notices is reported at warn
// level well before any notice is dropped, and only once per interval
// however many retries fail.
func TestRetriesWarned(t *testing.T) {
	e := newEnv(t)
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := natsnotice.NewPublisher(e.js, natsnotice.WithSubjectPrefix(natstest.UniqueName(t, "nostream")), natsnotice.WithLogger(logger),
		natsnotice.WithRetryBackoff(5*time.Millisecond, 10*time.Millisecond), natsnotice.WithRetryMaxElapsed(time.Minute))
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	ctx := ctxTimeout(t, 20*time.Second)
	if err := p.Notify(ctx, appended("Account", testID, 1, 1)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	for p.Stats().Retries < 5 {
		if ctx.Err() != nil {
			t.Fatalf("retries %d before the deadline", p.Stats().Retries)
		}
		time.Sleep(5 * time.Millisecond)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_ = p.Close(short) // drops the notice still being retried
	out := logs.String()
	if n := strings.Count(out, "publish failed; retrying"); n != 1 {
		t.Fatalf("%d warn lines about retries after %d retries, want 1:\n%s", n, p.Stats().Retries, out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "nostream") {
		t.Fatalf("the retry line does not name the subject at warn:\n%s", out)
	}
}
