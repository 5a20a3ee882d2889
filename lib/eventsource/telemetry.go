package eventsource

import (
	"context"
	"log/slog"
	"reflect"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
)

// instrumentationName is the OpenTelemetry instrumentation scope of this
// package's spans and metrics.
const instrumentationName = "github.com/evsnap/evsnap/lib/eventsource"

// durationBuckets are the bucket boundaries, in seconds, of this
// package's duration histograms (evsnap.load.duration): 100 µs to 10 s,
// about three to a decade, which spans a load from a snapshot (tens of
// µs on SQLite) to a full replay of 100,000 events from PostgreSQL.
// OpenTelemetry's default boundaries (0, 5, 10 ... 10000) are meant for
// milliseconds and would put every load in the first bucket.
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

type telemetry struct {
	// tracer starts this package's spans; nil when tracing is off for
	// good (the provider is OpenTelemetry's no-op one). Spans are started
	// through start and startChild, which skip it while tracing is off.
	tracer trace.Tracer
	// globalDefault, when not nil, is the global delegating provider
	// that tracer comes from (no SDK was installed when the repository
	// was made): spans are started only once otel.GetTracerProvider
	// returns another provider, an SDK's (tracing).
	globalDefault trace.TracerProvider
	logger        *slog.Logger
	// reportedMode, when set, is the mode snapshot writes report in place
	// of the repository's (WithReportedMode).
	reportedMode SnapshotMode

	loadDuration     metric.Float64Histogram
	eventsReplayed   metric.Int64Counter
	snapshotsWritten metric.Int64Counter
	snapshotsSkipped metric.Int64Counter
	fallbacks        metric.Int64Counter
	failures         metric.Int64Counter
	staleDeletes     metric.Int64Counter
	loadRequests     metric.Int64Counter
	// requestAttrs are evsnap.load.snapshot_requests' attribute sets, by
	// result, built once (the repository's type and mode are fixed), as
	// the slice Add takes: a rate-limited load then allocates nothing.
	requestAttrs map[string][]metric.AddOption
	// loadRecord and loadAdd are the attribute set of evsnap.load.*, by
	// whether the load used a snapshot (index 1) or not (0), built once.
	loadRecord [2][]metric.RecordOption
	loadAdd    [2][]metric.AddOption
}

// newTelemetry sets up the instrumentation of a repository of aggregate
// type typ. A nil provider in c is the global one.
func newTelemetry(c *config, typ string) (*telemetry, error) {
	t := &telemetry{logger: c.logger, reportedMode: c.reportedMode}
	tp := c.tracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if isGlobalDefault(tp) {
		t.globalDefault = tp
	}
	if _, off := tp.(tracenoop.TracerProvider); !off {
		t.tracer = tp.Tracer(instrumentationName)
	}
	mp := c.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	var err error
	if t.loadDuration, err = m.Float64Histogram("evsnap.load.duration",
		metric.WithUnit("s"), metric.WithDescription("Time to load an aggregate (snapshot + replay)."),
		metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, err
	}
	if t.eventsReplayed, err = m.Int64Counter("evsnap.load.events_replayed",
		metric.WithUnit("{event}"), metric.WithDescription("Events applied while loading aggregates.")); err != nil {
		return nil, err
	}
	if t.snapshotsWritten, err = m.Int64Counter("evsnap.snapshot.written",
		metric.WithUnit("{snapshot}"), metric.WithDescription("Snapshots the store accepted.")); err != nil {
		return nil, err
	}
	if t.snapshotsSkipped, err = m.Int64Counter("evsnap.snapshot.superseded",
		metric.WithUnit("{snapshot}"), metric.WithDescription("Snapshot writes that were no-ops because the store held a newer one.")); err != nil {
		return nil, err
	}
	if t.fallbacks, err = m.Int64Counter("evsnap.snapshot.fallbacks",
		metric.WithUnit("{load}"), metric.WithDescription("Loads that ignored a snapshot and replayed every event, by reason.")); err != nil {
		return nil, err
	}
	if t.failures, err = m.Int64Counter("evsnap.snapshot.failures",
		metric.WithUnit("{snapshot}"), metric.WithDescription("Snapshots or notices not written after a committed save or a load's request, by reason.")); err != nil {
		return nil, err
	}
	if t.staleDeletes, err = m.Int64Counter("evsnap.snapshot.stale_deletes",
		metric.WithUnit("{snapshot}"), metric.WithDescription("Stale snapshots a load tried to remove, by result.")); err != nil {
		return nil, err
	}
	if t.loadRequests, err = m.Int64Counter("evsnap.load.snapshot_requests",
		metric.WithUnit("{load}"), metric.WithDescription("Loads that replayed enough events to ask for a snapshot (WithLoadTrigger), by result: asked, failed, rate_limited.")); err != nil {
		return nil, err
	}
	t.requestAttrs = map[string][]metric.AddOption{}
	for _, result := range []string{telemetrykeys.RequestAsked, telemetrykeys.RequestFailed, telemetrykeys.RequestRateLimited} {
		t.requestAttrs[result] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(telemetrykeys.AttrAggregateType.String(typ),
			telemetrykeys.AttrMode.String(string(c.mode)), telemetrykeys.AttrResult.String(result)))}
	}
	for used := range 2 {
		set := metric.WithAttributeSet(attribute.NewSet(telemetrykeys.AttrAggregateType.String(typ), telemetrykeys.AttrSnapshotUsed.Bool(used == 1)))
		t.loadRecord[used] = []metric.RecordOption{set}
		t.loadAdd[used] = []metric.AddOption{set}
	}
	return t, nil
}

// globalDefaultTracerProvider is the type of what otel.GetTracerProvider
// returns while no SDK is installed: the global package's delegating
// provider, whose spans do nothing until one is. It is nil if that type
// was not seen (a provider was installed before this package was
// initialised), and then no provider is taken for that one.
var globalDefaultTracerProvider = func() reflect.Type {
	t := reflect.TypeOf(otel.GetTracerProvider())
	if t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" {
		return t
	}
	return nil
}()

// isGlobalDefault reports whether tp is the global delegating provider
// of a program that has installed no SDK.
func isGlobalDefault(tp trace.TracerProvider) bool {
	return globalDefaultTracerProvider != nil && reflect.TypeOf(tp) == globalDefaultTracerProvider
}

// tracing reports whether a span started now could be recorded or carry
// a span context of its own. It is false with OpenTelemetry's no-op
// provider, and with the global provider while the program has installed
// no SDK (or has installed the no-op provider): such a span would only
// carry ctx's span context on, which ctx already does.
func (t *telemetry) tracing() bool {
	if t.tracer == nil {
		return false
	}
	if t.globalDefault == nil {
		return true
	}
	tp := otel.GetTracerProvider()
	if tp == t.globalDefault { // still no SDK: the common case, one comparison
		return false
	}
	_, off := tp.(tracenoop.TracerProvider)
	return !off
}

// spanOff is the span of an operation that tracing does not see: its
// methods do nothing and it records nothing.
var spanOff = trace.SpanFromContext(context.Background())

// start starts the span name when tracing is on. Otherwise it returns ctx
// unchanged and spanOff, and costs no allocation. Set attributes only when
// the span records (span.IsRecording()), so that nothing is built for a
// span that drops them.
func (t *telemetry) start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !t.tracing() {
		return ctx, spanOff
	}
	return t.tracer.Start(ctx, name, opts...)
}

// startChild starts the span name under ctx's span (one of this
// package's) only when that span records: under a parent-based sampler,
// the SDK's default, a child of a span that does not record is not
// recorded either, and not starting it saves a sampled-out load or save
// a span.
func (t *telemetry) startChild(ctx context.Context, name string) (context.Context, trace.Span) {
	if !t.tracing() || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, spanOff
	}
	return t.tracer.Start(ctx, name)
}

// failSpan marks span as failed with err, if it records.
func failSpan(span trace.Span, err error) {
	if span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// writeMode is the mode a snapshot write by a repository in mode m reports.
func (t *telemetry) writeMode(m SnapshotMode) SnapshotMode {
	if t.reportedMode != "" {
		return t.reportedMode
	}
	return m
}

func (t *telemetry) fallback(ctx context.Context, typ string, reason string) {
	t.fallbacks.Add(ctx, 1, metric.WithAttributes(telemetrykeys.AttrAggregateType.String(typ), telemetrykeys.AttrReason.String(reason)))
}

func (t *telemetry) failure(ctx context.Context, typ string, mode SnapshotMode, reason string) {
	t.failures.Add(ctx, 1, metric.WithAttributes(telemetrykeys.AttrAggregateType.String(typ), telemetrykeys.AttrMode.String(string(mode)), telemetrykeys.AttrReason.String(reason)))
}

// loadRequest counts a load that replayed enough events to ask for a
// snapshot, by result.
func (t *telemetry) loadRequest(ctx context.Context, result string) {
	t.loadRequests.Add(ctx, 1, t.requestAttrs[result]...)
}

func (t *telemetry) staleDelete(ctx context.Context, typ string, result string) {
	t.staleDeletes.Add(ctx, 1, metric.WithAttributes(telemetrykeys.AttrAggregateType.String(typ), telemetrykeys.AttrResult.String(result)))
}
