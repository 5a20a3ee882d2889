package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestSpans(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	st := newStore(t, pgstore.WithTracerProvider(tp))
	ctx := context.Background()
	typ, id := "Traced", uuid.New()

	if _, err := st.Append(ctx, typ, id, eventsource.NoStream, newEvents(2, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, typ, id, eventsource.NoStream, newEvents(1, 0)); err == nil {
		t.Fatal("want a conflict")
	}
	for _, err := range st.ReadEvents(ctx, typ, id, 0) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.StreamVersion(ctx, typ, id); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 2, SchemaVersion: 1, EventID: uuid.New(),
		State: []byte(`{}`), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSnapshot(ctx, typ, id, 1); err != nil {
		t.Fatal(err)
	}
	for _, err := range st.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.SaveSnapshot(cancelled, eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 3, SchemaVersion: 1, EventID: uuid.New(),
		State: []byte(`{}`), CreatedAt: time.Now()}); err == nil {
		t.Fatal("want an error from a cancelled context")
	}

	type want struct {
		name   string
		status codes.Code
	}
	wants := []want{
		{"pgstore.Append", codes.Unset}, {"pgstore.Append", codes.Unset}, // a conflict is an outcome, not a failure
		{"pgstore.ReadEvents", codes.Unset}, {"pgstore.StreamVersion", codes.Unset},
		{"pgstore.SaveSnapshot", codes.Unset}, {"pgstore.GetSnapshot", codes.Unset},
		{"pgstore.ListAggregates", codes.Unset}, {"pgstore.SaveSnapshot", codes.Error},
	}
	var spans []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() != "pgstore.Migrate" {
			spans = append(spans, s)
		}
	}
	if len(spans) != len(wants) {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name())
		}
		t.Fatalf("spans %v, want %d", names, len(wants))
	}
	for i, s := range spans {
		if s.Name() != wants[i].name || s.Status().Code != wants[i].status {
			t.Errorf("span %d: %s status %v, want %s status %v", i, s.Name(), s.Status().Code, wants[i].name, wants[i].status)
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if attrs[string(telemetrykeys.AttrAggregateType)] != typ || attrs["db.system.name"] != "postgresql" {
			t.Errorf("span %s attributes %v lack the aggregate type or db.system.name", s.Name(), attrs)
		}
		if s.Name() != "pgstore.ListAggregates" && attrs[string(telemetrykeys.AttrAggregateID)] != id.String() {
			t.Errorf("span %s attributes %v lack the aggregate id", s.Name(), attrs)
		}
	}
	if got := spans[2].Attributes(); !hasInt(got, "evsnap.read.events", 2) {
		t.Errorf("ReadEvents span attributes %v, want evsnap.read.events=2", got)
	}
}

func hasInt(attrs []attribute.KeyValue, key string, v int64) bool {
	for _, kv := range attrs {
		if string(kv.Key) == key && kv.Value.AsInt64() == v {
			return true
		}
	}
	return false
}
