package natsnotice

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/evsnap/evsnap/internal/logattr"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationName is the OpenTelemetry instrumentation scope of this
// package's spans and metrics.
const InstrumentationName = "github.com/evsnap/evsnap/lib/natsnotice"

// Metric names. Every counter is in {notice}; the duration is in seconds.
const (
	// MetricPublished counts notices JetStream acknowledged, duplicates
	// included (attribute evsnap.notice.duplicate).
	MetricPublished = "evsnap.notice.published"
	// MetricRetried counts failed publish attempts that were scheduled for
	// a retry.
	MetricRetried = "evsnap.notice.retried"
	// MetricDropped counts notices given up on, by reason (attribute
	// evsnap.reason: one of the Drop* constants) and aggregate type.
	MetricDropped = "evsnap.notice.dropped"
	// MetricPublishDuration is the time from Notify to JetStream's
	// acknowledgement, queueing and retries included, one value per
	// notice. A notice Notify merged into the one queued before it is
	// timed from that one's Notify.
	MetricPublishDuration = "evsnap.notice.publish.duration"
	// MetricBuffered observes how many notices the publisher holds
	// (queued, in flight or waiting to be retried).
	MetricBuffered = "evsnap.notice.buffered"
)

// Reasons a notice was dropped: the evsnap.reason attribute of
// [MetricDropped] and the log key "reason".
const (
	// DropBufferFull: Notify found the buffer full (NATS down or slow).
	DropBufferFull = "buffer_full"
	// DropInvalid: Notify was given an append that cannot make a valid
	// notice (an aggregate type that is not a subject token, say).
	DropInvalid = "invalid"
	// DropRetriesExhausted: publishing kept failing for the retry max
	// elapsed time.
	DropRetriesExhausted = "retries_exhausted"
	// DropRejected: the publish failed in a way a retry cannot fix (the
	// message exceeds the server's max payload, for example).
	DropRejected = "rejected"
	// DropClosed: Close's context ended before the notice was published.
	DropClosed = "closed"
)

// Span and metric attribute keys of this package (the aggregate keys are
// eventsource's).
const (
	AttrDuplicate = attribute.Key("evsnap.notice.duplicate")
	AttrSubject   = attribute.Key("messaging.destination.name")
	AttrMsgID     = attribute.Key("messaging.message.id")
	AttrSystem    = attribute.Key("messaging.system")
)

// Log keys of this package besides eventsource's.
const (
	LogKeySubject    = "subject"
	LogKeyMsgID      = "msg_id"
	LogKeyCount      = "count"
	LogKeyAttempts   = "attempts"
	LogKeyRetryIn    = "retry_in_seconds" // a number of seconds, as every duration in evsnap's logs
	LogKeySuppressed = "suppressed"
)

// dropLogEvery is the least time between two log lines about drops of one
// reason: while NATS is down thousands of notices a second can be dropped.
const dropLogEvery = 10 * time.Second

// publishBuckets are the bucket boundaries, in seconds, of
// evsnap.notice.publish.duration: 100 µs to 1 min, about three to a
// decade. A notice usually waits out the 5 ms linger and one round trip;
// retries after a NATS outage take seconds to a minute. OpenTelemetry's
// default boundaries (0, 5, 10 ... 10000) are meant for milliseconds.
var publishBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

type telemetry struct {
	tracer trace.Tracer
	logger *slog.Logger

	published       metric.Int64Counter
	retried         metric.Int64Counter
	dropped         metric.Int64Counter
	publishDuration metric.Float64Histogram
	buffered        metric.Int64ObservableGauge

	pubOrig, pubDup metric.AddOption

	logMu   sync.Mutex
	lastLog map[string]time.Time
	quiet   map[string]int
}

func newTelemetry(c *publisherConfig) (*telemetry, error) {
	t := &telemetry{
		tracer:  c.tracerProvider.Tracer(InstrumentationName),
		logger:  c.logger,
		pubOrig: metric.WithAttributeSet(attribute.NewSet(AttrDuplicate.Bool(false))),
		pubDup:  metric.WithAttributeSet(attribute.NewSet(AttrDuplicate.Bool(true))),
		lastLog: map[string]time.Time{},
		quiet:   map[string]int{},
	}
	m := c.meterProvider.Meter(InstrumentationName)
	var err error
	if t.published, err = m.Int64Counter(MetricPublished, metric.WithUnit("{notice}"),
		metric.WithDescription("Notices JetStream acknowledged (duplicates included).")); err != nil {
		return nil, err
	}
	if t.retried, err = m.Int64Counter(MetricRetried, metric.WithUnit("{notice}"),
		metric.WithDescription("Failed notice publish attempts scheduled for a retry.")); err != nil {
		return nil, err
	}
	if t.dropped, err = m.Int64Counter(MetricDropped, metric.WithUnit("{notice}"),
		metric.WithDescription("Notices given up on, by reason; the snapshotter's sweep catches their aggregates.")); err != nil {
		return nil, err
	}
	if t.publishDuration, err = m.Float64Histogram(MetricPublishDuration, metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(publishBuckets...),
		metric.WithDescription("Time from Notify to JetStream's acknowledgement, queueing and retries included.")); err != nil {
		return nil, err
	}
	if t.buffered, err = m.Int64ObservableGauge(MetricBuffered, metric.WithUnit("{notice}"),
		metric.WithDescription("Notices held by the publisher: queued, in flight or waiting to be retried.")); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *telemetry) drop(ctx context.Context, typ, reason string, n int64) {
	t.dropped.Add(ctx, n, metric.WithAttributes(
		telemetrykeys.AttrAggregateType.String(typ), telemetrykeys.AttrReason.String(reason)))
}

// quietFor reports whether a line about key may be logged now (at most
// one every dropLogEvery) and how many were held back since the last one.
func (t *telemetry) quietFor(key string) (suppressed int, ok bool) {
	now := time.Now()
	t.logMu.Lock()
	defer t.logMu.Unlock()
	if last, seen := t.lastLog[key]; seen && now.Sub(last) < dropLogEvery {
		t.quiet[key]++
		return 0, false
	}
	suppressed = t.quiet[key]
	t.quiet[key] = 0
	t.lastLog[key] = now
	return suppressed, true
}

// logRetry logs at warn that a publish failed and will be retried, at
// most once every dropLogEvery, so that an operator sees a stream that
// refuses notices (a full disk, a missing stream, a lost quorum) long
// before the retry window ends and the first notice is dropped.
func (t *telemetry) logRetry(subject, msgID string, attempts int, retryIn time.Duration, err error) {
	suppressed, ok := t.quietFor("retrying")
	if !ok {
		return
	}
	t.logger.Warn("append notice publish failed; retrying (saves are not affected)",
		LogKeySubject, subject,
		LogKeyMsgID, msgID,
		LogKeyAttempts, attempts,
		logattr.Seconds(LogKeyRetryIn, retryIn),
		LogKeySuppressed, suppressed,
		telemetrykeys.LogKeyError, err)
}

// logDrop logs a background drop, at most once per reason every
// dropLogEvery; the lines in between are counted into the next one.
func (t *telemetry) logDrop(reason string, it *item, err error) {
	suppressed, ok := t.quietFor(reason)
	if !ok {
		return
	}
	var subject, msgID string
	if it.msg != nil {
		subject, msgID = it.msg.Subject, it.msg.Header.Get(HeaderMsgID)
	}
	t.logger.Warn("append notice dropped; the snapshotter's sweep will catch up",
		telemetrykeys.LogKeyReason, reason,
		LogKeySubject, subject,
		LogKeyMsgID, msgID,
		LogKeyAttempts, it.attempts,
		LogKeySuppressed, suppressed,
		telemetrykeys.LogKeyError, err)
}
