package eventsource

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

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
	tracer trace.Tracer
	logger *slog.Logger
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
}

func newTelemetry(c *config, typ string) (*telemetry, error) {
	t := &telemetry{
		tracer:       c.tracerProvider.Tracer(instrumentationName),
		logger:       c.logger,
		reportedMode: c.reportedMode,
	}
	m := c.meterProvider.Meter(instrumentationName)
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
	return t, nil
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
