package natsnotice

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ErrInvalidOption matches every error about an invalid [PublisherOption]
// or [StreamConfig].
var ErrInvalidOption = errors.New("natsnotice: invalid option")

// Publisher defaults. See the With* options for what each one means.
const (
	DefaultBufferSize       = 16384
	DefaultMaxEnqueueWait   = time.Duration(0)
	DefaultMaxInFlight      = 1024
	DefaultPublishTimeout   = 5 * time.Second
	DefaultRetryInitial     = 100 * time.Millisecond
	DefaultRetryMaxInterval = 5 * time.Second
	DefaultRetryMaxElapsed  = time.Minute
	DefaultLinger           = 5 * time.Millisecond
)

// Limits the options enforce.
const (
	// MaxBufferSize is the largest accepted [WithBufferSize].
	MaxBufferSize = 1 << 24
	// MaxEnqueueWaitLimit is the largest accepted [WithMaxEnqueueWait]: a
	// save must never wait long for a hint.
	MaxEnqueueWaitLimit = time.Second
	// MaxInFlightLimit is the largest accepted [WithMaxInFlight].
	MaxInFlightLimit = 1 << 16
	// MaxLingerLimit is the largest accepted [WithLinger].
	MaxLingerLimit = 100 * time.Millisecond
)

// PublisherOption configures a [Publisher]. Options validate their
// arguments; an invalid one makes [NewPublisher] fail with an error
// matching [ErrInvalidOption].
type PublisherOption func(*publisherConfig) error

type publisherConfig struct {
	bufferSize       int
	maxEnqueueWait   time.Duration
	maxInFlight      int
	publishTimeout   time.Duration
	retryInitial     time.Duration
	retryMaxInterval time.Duration
	retryMaxElapsed  time.Duration
	linger           time.Duration
	coalesce         bool
	subjectPrefix    string
	logger           *slog.Logger
	tracerProvider   trace.TracerProvider
	meterProvider    metric.MeterProvider
	propagator       propagation.TextMapPropagator
}

func defaultPublisherConfig() publisherConfig {
	return publisherConfig{
		bufferSize:       DefaultBufferSize,
		maxEnqueueWait:   DefaultMaxEnqueueWait,
		maxInFlight:      DefaultMaxInFlight,
		publishTimeout:   DefaultPublishTimeout,
		retryInitial:     DefaultRetryInitial,
		retryMaxInterval: DefaultRetryMaxInterval,
		retryMaxElapsed:  DefaultRetryMaxElapsed,
		linger:           DefaultLinger,
		subjectPrefix:    DefaultSubjectPrefix,
		coalesce:         true,
	}
}

func invalidOption(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

// WithBufferSize sets how many notices the publisher holds at once:
// queued, in flight and waiting to be retried together (default
// [DefaultBufferSize], at most [MaxBufferSize]). When it is full, Notify
// drops the new notice and returns an error matching [ErrDropped]. Each
// held notice costs about a kilobyte of memory (so the default holds at
// most about 16 MiB), and the buffer also bounds how much Close may have
// to flush. A notice that Notify merges into the notice queued just
// before it ([WithCoalescing]) takes no room of its own.
func WithBufferSize(n int) PublisherOption {
	return func(c *publisherConfig) error {
		if n < 1 || n > MaxBufferSize {
			return invalidOption("buffer size must be 1..%d, got %d", MaxBufferSize, n)
		}
		c.bufferSize = n
		return nil
	}
}

// WithMaxEnqueueWait sets how long Notify may wait for room when the buffer
// is full before it drops the notice (default 0: it never waits; at most
// [MaxEnqueueWaitLimit]). This is the bound Notify documents, and so the
// most a save can be delayed by notices.
func WithMaxEnqueueWait(d time.Duration) PublisherOption {
	return func(c *publisherConfig) error {
		if d < 0 || d > MaxEnqueueWaitLimit {
			return invalidOption("max enqueue wait must be 0..%s, got %s", MaxEnqueueWaitLimit, d)
		}
		c.maxEnqueueWait = d
		return nil
	}
}

// WithMaxInFlight sets how many notices may be published and not yet
// acknowledged at once (default [DefaultMaxInFlight], at most
// [MaxInFlightLimit]).
func WithMaxInFlight(n int) PublisherOption {
	return func(c *publisherConfig) error {
		if n < 1 || n > MaxInFlightLimit {
			return invalidOption("max in flight must be 1..%d, got %d", MaxInFlightLimit, n)
		}
		c.maxInFlight = n
		return nil
	}
}

// WithPublishTimeout sets how long one publish attempt waits for
// JetStream's acknowledgement before it counts as failed and is retried
// (default [DefaultPublishTimeout]).
func WithPublishTimeout(d time.Duration) PublisherOption {
	return func(c *publisherConfig) error {
		if d <= 0 {
			return invalidOption("publish timeout must be positive, got %s", d)
		}
		c.publishTimeout = d
		return nil
	}
}

// WithRetryBackoff sets the exponential backoff between attempts to
// publish one notice: the first retry waits about initial, each later one
// twice as long (±50% jitter), never more than maxInterval (defaults
// [DefaultRetryInitial] and [DefaultRetryMaxInterval]).
func WithRetryBackoff(initial, maxInterval time.Duration) PublisherOption {
	return func(c *publisherConfig) error {
		if initial <= 0 || maxInterval < initial {
			return invalidOption("retry backoff needs 0 < initial <= max interval, got %s and %s", initial, maxInterval)
		}
		c.retryInitial, c.retryMaxInterval = initial, maxInterval
		return nil
	}
}

// WithRetryMaxElapsed sets how long a notice is retried after its first
// failed attempt before it is dropped, logged and counted (default
// [DefaultRetryMaxElapsed]). Keep it below the stream's duplicate window
// ([StreamConfig.Duplicates], default 2m) so that a retry of a notice
// JetStream did store but failed to acknowledge is still recognised as a
// duplicate.
func WithRetryMaxElapsed(d time.Duration) PublisherOption {
	return func(c *publisherConfig) error {
		if d <= 0 {
			return invalidOption("retry max elapsed must be positive, got %s", d)
		}
		c.retryMaxElapsed = d
		return nil
	}
}

// WithLinger sets how long the publisher's sender waits after publishing
// a batch of notices before it takes the next one (default
// [DefaultLinger], at most [MaxLingerLimit]; 0: it publishes as soon as
// notices arrive).
//
// Notices that arrive while it lingers are queued without waking it, so a
// steady stream of saves costs no wake-up per save, and they go out
// together (one write, one acknowledgement read, fewer server wake-ups).
// The price is that much delay before a notice is published, which a
// hint can afford. Flush and Close do not wait for it: they cut the
// linger short. A notice that arrives while the sender is idle wakes it
// at once.
func WithLinger(d time.Duration) PublisherOption {
	return func(c *publisherConfig) error {
		if d < 0 || d > MaxLingerLimit {
			return invalidOption("linger must be 0..%s, got %s", MaxLingerLimit, d)
		}
		c.linger = d
		return nil
	}
}

// WithCoalescing sets whether queued notices of one aggregate are merged
// before they are published (default on): Notify merges a notice into the
// one queued just before it when it can, without allocating, and the
// sender merges the rest of a batch before encoding it. A notice merges
// into the previous queued notice of the same aggregate when it directly
// follows it (its first version is that one's last version plus one), and
// neither carries a trace context (so no save's trace link is lost) nor
// was accepted before a Flush the other was not. The merged
// notice has the first one's first version and commit time, the last
// one's last version, and so its message id, and the distinct event
// types of both, in order of first appearance (at most [MaxEventTypes],
// Truncated beyond). Notices already attempted, and a load's requests
// ([Publisher.RequestSnapshot]), are never merged.
//
// A merged notice says exactly what the notices it replaces said
// together: the same versions, event types and earliest commit, one
// message instead of several. Flush, Close and Stats still count each
// accepted notice ([Stats.Coalesced] counts those merged). It matters
// when one aggregate is saved several times within a linger
// ([WithLinger]): a hot aggregate then costs JetStream, and every worker,
// one message per linger instead of one per save, and the publisher keeps
// up with saves faster than JetStream stores messages instead of dropping
// their notices. Turn it off only for a consumer that must see one
// message per save. See docs/notice-format.md, "Coalesced notices".
func WithCoalescing(on bool) PublisherOption {
	return func(c *publisherConfig) error {
		c.coalesce = on
		return nil
	}
}

// WithSubjectPrefix sets the subject prefix notices are published under
// (default [DefaultSubjectPrefix]); the stream must capture <prefix>.>
// (see [StreamConfig.SubjectPrefix]). It must be one or more dot-separated
// tokens of letters, digits, '_' and '-'.
func WithSubjectPrefix(prefix string) PublisherOption {
	return func(c *publisherConfig) error {
		if err := validateSubjectPrefix(prefix); err != nil {
			return err
		}
		c.subjectPrefix = prefix
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()). The publisher logs
// notices it drops in the background (rate-limited: at most one line per
// reason every 10 seconds, with a count) and failed attempts at debug
// level.
func WithLogger(l *slog.Logger) PublisherOption {
	return func(c *publisherConfig) error {
		if l == nil {
			return invalidOption("WithLogger(nil)")
		}
		c.logger = l
		return nil
	}
}

// WithTracerProvider sets the OpenTelemetry tracer provider (default: the
// global one, a no-op unless the program installs an SDK).
func WithTracerProvider(tp trace.TracerProvider) PublisherOption {
	return func(c *publisherConfig) error {
		if tp == nil {
			return invalidOption("WithTracerProvider(nil)")
		}
		c.tracerProvider = tp
		return nil
	}
}

// WithMeterProvider sets the OpenTelemetry meter provider (default: the
// global one, a no-op unless the program installs an SDK).
func WithMeterProvider(mp metric.MeterProvider) PublisherOption {
	return func(c *publisherConfig) error {
		if mp == nil {
			return invalidOption("WithMeterProvider(nil)")
		}
		c.meterProvider = mp
		return nil
	}
}

// WithPropagator sets how the trace context is written into the message
// headers (default [propagation.TraceContext]: W3C traceparent and
// tracestate). The default does not follow otel.GetTextMapPropagator(),
// which propagates nothing unless the program installs one, because the
// notice format promises a traceparent. Pass otel.GetTextMapPropagator()
// to use the program's choice (baggage included, if it propagates that).
// Its Inject must not block: Notify may call it while it holds the
// publisher's lock, to see whether a notice may merge (WithCoalescing).
func WithPropagator(p propagation.TextMapPropagator) PublisherOption {
	return func(c *publisherConfig) error {
		if p == nil {
			return invalidOption("WithPropagator(nil)")
		}
		c.propagator = p
		return nil
	}
}

func (c *publisherConfig) resolve() {
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if c.tracerProvider == nil {
		c.tracerProvider = otel.GetTracerProvider()
	}
	if c.meterProvider == nil {
		c.meterProvider = otel.GetMeterProvider()
	}
	if c.propagator == nil {
		c.propagator = propagation.TraceContext{}
	}
}

// validateSubjectPrefix checks that prefix is one or more literal subject
// tokens, so that <prefix>.<type>.<id> and <prefix>.> are valid subjects.
func validateSubjectPrefix(prefix string) error {
	if prefix == "" {
		return invalidOption("empty subject prefix")
	}
	for tok := range strings.SplitSeq(prefix, ".") {
		if !isToken(tok) {
			return invalidOption("subject prefix %q: token %q must be 1-128 of A-Z a-z 0-9 _ - (no wildcards, spaces or empty tokens)", prefix, tok)
		}
	}
	return nil
}
