package natsnotice

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// queued builds the item Notify would queue for the notice of versions
// first..last of typ/id; traced adds a trace context header.
func queued(t *testing.T, typ string, id uuid.UUID, first, last int64, at time.Time, traced bool, types ...string) *item {
	t.Helper()
	n := Notice{Version: FormatVersion, AggregateType: typ, AggregateID: id, FirstVersion: first, LastVersion: last,
		EventTypes: types, CommittedAt: at}
	if err := n.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	it := &item{n: n}
	if traced {
		it.trace.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	}
	return it
}

// TestCoalesce: consecutive notices of one aggregate merge (versions,
// event types, earliest commit, message id of the last); a gap, another
// aggregate, a trace context or a repeated notice keeps them apart.
func TestCoalesce(t *testing.T) {
	p := &Publisher{cfg: publisherConfig{coalesce: true, subjectPrefix: DefaultSubjectPrefix}}
	a, b := uuid.New(), uuid.New()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	batch := []*item{
		queued(t, "Order", a, 1, 2, t0.Add(2*time.Second), false, "X", "Y"),
		queued(t, "Order", a, 3, 3, t0.Add(time.Second), false, "Y", "Z"), // merges; earlier commit
		queued(t, "Order", b, 1, 1, t0, false, "X"),                       // another aggregate
		queued(t, "Order", a, 4, 5, t0.Add(3*time.Second), false, "W"),    // merges
		queued(t, "Order", a, 7, 7, t0, false, "X"),                       // gap: v6 is missing
		queued(t, "Order", a, 8, 8, t0, false, "Q"),                       // merges into v7
		queued(t, "Order", a, 9, 9, t0, true, "X"),                        // traced
		queued(t, "Order", a, 10, 10, t0, false, "X"),                     // after a traced one
		queued(t, "Order", a, 11, 11, t0, false, "X"),                     // merges into v10
		queued(t, "Order", a, 3, 3, t0, false, "Y", "Z"),                  // a repeat of v3
	}
	first := slices.Clone(batch)
	out := p.coalesce(batch)
	type want struct {
		id          uuid.UUID
		first, last int64
		types       []string
		at          time.Time
		merged      int
		traced      bool
	}
	wants := []want{
		{a, 1, 5, []string{"X", "Y", "Z", "W"}, t0.Add(time.Second), 2, false},
		{b, 1, 1, []string{"X"}, t0, 0, false},
		{a, 7, 8, []string{"X", "Q"}, t0, 1, false},
		{a, 9, 9, []string{"X"}, t0, 0, true},
		{a, 10, 11, []string{"X"}, t0, 1, false},
		{a, 3, 3, []string{"Y", "Z"}, t0, 0, false},
	}
	if len(out) != len(wants) {
		t.Fatalf("%d notices after coalescing, want %d", len(out), len(wants))
	}
	for i, w := range wants {
		it := out[i]
		if err := p.build(it); err != nil {
			t.Fatalf("notice %d: build: %v", i, err)
		}
		if want := Subject(DefaultSubjectPrefix, "Order", w.id); it.msg.Subject != want {
			t.Errorf("notice %d: subject %q, want %q", i, it.msg.Subject, want)
		}
		got, err := Decode(it.msg.Data)
		if err != nil {
			t.Fatalf("notice %d: Decode: %v\n%s", i, err, it.msg.Data)
		}
		exp := Notice{Version: FormatVersion, AggregateType: "Order", AggregateID: w.id, FirstVersion: w.first, LastVersion: w.last,
			EventTypes: w.types, CommittedAt: w.at}
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("notice %d:\n got %+v\nwant %+v", i, got, exp)
		}
		if id := it.msg.Header.Get(HeaderMsgID); id != exp.MsgID() {
			t.Errorf("notice %d: Nats-Msg-Id %q, want %q", i, id, exp.MsgID())
		}
		if len(it.merged) != w.merged || it.traced() != w.traced || (it.msg.Header.Get("traceparent") != "") != w.traced {
			t.Errorf("notice %d: %d merged, traced %v (headers %v), want %d, %v", i, len(it.merged), it.traced(), it.msg.Header, w.merged, w.traced)
		}
	}
	if out[0] != first[0] || out[0].merged[0] != first[1] || out[0].merged[1] != first[3] {
		t.Errorf("the merged notice does not carry the notices it replaced")
	}
	if n := p.stats.coalesced.Load(); n != 4 {
		t.Errorf("coalesced %d, want 4", n)
	}
	if len(p.tails) != 0 {
		t.Errorf("tails left: %v", p.tails)
	}
}

// TestCoalesceTruncates: the union of event types is capped at
// MaxEventTypes and the merged notice says it was truncated.
func TestCoalesceTruncates(t *testing.T) {
	p := &Publisher{cfg: publisherConfig{coalesce: true}}
	id := uuid.New()
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	types := func(from, to int) []string {
		var ts []string
		for i := from; i < to; i++ {
			ts = append(ts, fmt.Sprint("E", i))
		}
		return ts
	}
	out := p.coalesce([]*item{
		queued(t, "Order", id, 1, 40, at, false, types(0, 40)...),
		queued(t, "Order", id, 41, 80, at, false, types(20, 60)...),
	})
	if len(out) != 1 || len(out[0].n.EventTypes) != 60 || out[0].n.Truncated {
		t.Fatalf("after two merges: %d notices, %d types, truncated %v", len(out), len(out[0].n.EventTypes), out[0].n.Truncated)
	}
	out = p.coalesce(append(out, queued(t, "Order", id, 81, 90, at, false, types(60, 70)...)))
	if err := p.build(out[0]); err != nil {
		t.Fatalf("build: %v", err)
	}
	got, err := Decode(out[0].msg.Data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(out) != 1 || !slices.Equal(got.EventTypes, types(0, MaxEventTypes)) || !got.Truncated || got.LastVersion != 90 {
		t.Fatalf("merged notice %+v", got)
	}
}

// TestTraceFields: the carrier Notify injects into keeps keys as given,
// replaces a key set twice, and allocates nothing when nothing is set.
func TestTraceFields(t *testing.T) {
	var f traceFields
	if f.Get("traceparent") != "" || len(f.Keys()) != 0 || f != nil {
		t.Fatalf("empty carrier: %v", f)
	}
	f.Set("traceparent", "a")
	f.Set("baggage", "k=v")
	f.Set("traceparent", "b")
	if f.Get("traceparent") != "b" || f.Get("baggage") != "k=v" || f.Get("Traceparent") != "" {
		t.Errorf("Get after Set: %v", f)
	}
	if got := f.Keys(); !slices.Equal(got, []string{"traceparent", "baggage"}) {
		t.Errorf("Keys = %v", got)
	}
}

// TestAbsorb: Notify's merge into the last queued notice takes no room in
// the buffer and happens only for the same aggregate, directly following,
// untraced (by whatever the propagator writes) and within the same Flush
// epoch; the merged notice counts every notice it stands for.
func TestAbsorb(t *testing.T) {
	id := uuid.New()
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	app := func(typ string, id uuid.UUID, v int64, types ...string) eventsource.Appended {
		return eventsource.Appended{AggregateType: typ, AggregateID: id, FirstVersion: v, LastVersion: v, EventTypes: types, CommittedAt: at}
	}
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	p := &Publisher{cfg: publisherConfig{coalesce: true, bufferSize: 1, propagator: prop}, pending: map[uint64]int{}}
	ctx := context.Background()
	if p.absorb(ctx, app("Order", id, 1, "A")) {
		t.Fatal("absorbed into an empty queue")
	}
	tail := queued(t, "Order", id, 1, 1, at, false, "A")
	p.queue = []*item{tail}
	p.held.Store(1) // the buffer is full

	sampled := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}}))
	withBaggage := WithTenantBaggage(t, ctx)
	for _, c := range []struct {
		name string
		ctx  context.Context
		a    eventsource.Appended
	}{
		{"another aggregate", ctx, app("Order", uuid.New(), 2, "A")},
		{"another type", ctx, app("Invoice", id, 2, "A")},
		{"a gap", ctx, app("Order", id, 3, "A")},
		{"a repeat", ctx, app("Order", id, 1, "A")},
		{"a save with a span context", sampled, app("Order", id, 2, "A")},
		{"a save with baggage", withBaggage, app("Order", id, 2, "A")},
	} {
		if p.absorb(c.ctx, c.a) {
			t.Fatalf("absorbed %s", c.name)
		}
		for _, v := range p.scratch {
			if v != "" {
				t.Fatalf("after %s the carrier still holds %v", c.name, p.scratch)
			}
		}
	}
	if !p.absorb(ctx, app("Order", id, 2, "B")) || !p.absorb(ctx, app("Order", id, 3, "A", "C")) {
		t.Fatal("did not absorb the next versions")
	}
	if tail.n.LastVersion != 3 || !slices.Equal(tail.n.EventTypes, []string{"A", "B", "C"}) || tail.count() != 3 ||
		p.held.Load() != 1 || p.stats.coalesced.Load() != 2 || p.stats.enqueued.Load() != 2 {
		t.Fatalf("after two merges: %+v, count %d, held %d", tail.n, tail.count(), p.held.Load())
	}
	p.epoch++ // a Flush began: later notices are not merged into earlier ones
	if p.absorb(ctx, app("Order", id, 4, "A")) {
		t.Fatal("absorbed across a Flush")
	}
	p.epoch--
	tail.trace.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if p.absorb(ctx, app("Order", id, 4, "A")) {
		t.Fatal("absorbed into a traced notice")
	}
	tail.trace = nil
	p.isShut = true
	if p.absorb(ctx, app("Order", id, 4, "A")) {
		t.Fatal("absorbed after Close began")
	}
	// A merged item carries its own absorbed notices in the count.
	outer := queued(t, "Order", id, 1, 1, at, false, "A")
	outer.merged = []*item{tail}
	if outer.count() != 4 {
		t.Fatalf("count %d, want 4", outer.count())
	}
}

// TestValidateAppended agrees with Notice.Validate on the notice of each
// append, without refusing a save of more events than a notice lists.
func TestValidateAppended(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	ok := eventsource.Appended{AggregateType: "Order", AggregateID: uuid.New(), FirstVersion: 2, LastVersion: 3, EventTypes: []string{"A"}, CommittedAt: at}
	many := make([]string, 3*MaxEventTypes)
	for i := range many {
		many[i] = fmt.Sprint("E", i)
	}
	for name, mut := range map[string]func(*eventsource.Appended){
		"valid":             func(*eventsource.Appended) {},
		"many event types":  func(a *eventsource.Appended) { a.EventTypes = many },
		"bad type":          func(a *eventsource.Appended) { a.AggregateType = "a.b" },
		"nil id":            func(a *eventsource.Appended) { a.AggregateID = uuid.Nil },
		"first version 0":   func(a *eventsource.Appended) { a.FirstVersion = 0 },
		"last before first": func(a *eventsource.Appended) { a.LastVersion = 1 },
		"empty type":        func(a *eventsource.Appended) { a.EventTypes = []string{"A", ""} },
		"year 10000":        func(a *eventsource.Appended) { a.CommittedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"year -1":           func(a *eventsource.Appended) { a.CommittedAt = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		a := ok
		mut(&a)
		n := FromAppended(a)
		got, want := validateAppended(a), n.Validate()
		if (got == nil) != (want == nil) || (got != nil && !errors.Is(got, ErrMalformed)) {
			t.Errorf("%s: validateAppended %v, Validate %v", name, got, want)
		}
	}
}
