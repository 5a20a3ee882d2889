package eventsource

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/policy"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// SnapshotMode says when a repository takes snapshots.
type SnapshotMode string

const (
	// ModeSync writes the snapshot before Save returns (the default, unless
	// an [AppendNotifier] is given). Simple and predictable; adds the
	// snapshot write to the latency of the saves that take one.
	ModeSync SnapshotMode = "sync"
	// ModeBackground captures the state when Save runs and writes it from a
	// bounded pool of goroutines; Save does not wait. Use
	// [Repository.AwaitPendingSnapshots] in tests.
	ModeBackground SnapshotMode = "background"
	// ModeManual never snapshots on Save; only [Repository.CreateSnapshot]
	// does. A snapshot policy given with it is accepted and never applies
	// to saves.
	ModeManual SnapshotMode = "manual"
	// ModeExternal leaves snapshots to another process: after each
	// successful append the repository hands an [Appended] notice to the
	// [AppendNotifier] given with [WithAppendNotifier] (for example
	// natsnotice's JetStream publisher), and the snapshotter worker
	// decides and writes. Loads use the snapshots it writes. The default
	// when a notifier is given.
	ModeExternal SnapshotMode = "external"
	// ModeOff neither reads nor writes snapshots: every load replays every
	// event (the tutorial's repository without a snapshot store, and the
	// baseline a snapshot's speed-up is measured against), and
	// CreateSnapshot is refused.
	ModeOff SnapshotMode = "off"
)

// ParseSnapshotMode parses a mode name as used in flags and env vars.
func ParseSnapshotMode(s string) (SnapshotMode, error) {
	switch m := SnapshotMode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeSync, ModeBackground, ModeManual, ModeExternal, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("%w: unknown snapshot mode %q (want sync, background, manual, external or off)", ErrInvalidOption, s)
}

// Defaults of the repository options (documented on the options).
const (
	defaultSnapshotThreshold = 100 // the tutorial's "reasonable default"
	defaultBackgroundWorkers = 2
	defaultBackgroundQueue   = 1024
	defaultMaxSnapshotBytes  = 16 << 20
	// defaultLoadTriggerInterval is how long an aggregate that asked for
	// a snapshot on load waits before it may ask again.
	defaultLoadTriggerInterval = time.Minute
)

// Option configures a [Repository]. Options validate their arguments; an
// invalid option makes [NewRepository] fail with an error matching
// [ErrInvalidOption], before anything is written.
type Option func(*config) error

type config struct {
	mode           SnapshotMode
	modeSet        bool
	policy         *Policy // nil: DefaultPolicy
	bgWorkers      int
	bgQueue        int
	maxState       int
	notifier       AppendNotifier
	reportedMode   SnapshotMode
	loadTrigger    int64         // WithLoadTrigger; 0: off
	loadInterval   time.Duration // WithLoadTriggerInterval; 0: the default
	logger         *slog.Logger
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

// WithSnapshotPolicy says when the repository's sync and background modes
// take a snapshot (default [DefaultPolicy]: every 100 events). The same
// Policy configures the snapshotter worker for external mode. An invalid
// policy, or one given with a mode that takes no snapshot itself, is an
// error matching ErrInvalidOption.
func WithSnapshotPolicy(p Policy) Option {
	return func(c *config) error {
		if err := p.Validate(); err != nil {
			return err
		}
		c.policy = &p
		return nil
	}
}

// WithSnapshotMode sets when snapshots are taken; see [SnapshotMode].
func WithSnapshotMode(m SnapshotMode) Option {
	return func(c *config) error {
		if _, err := ParseSnapshotMode(string(m)); err != nil || string(m) != strings.ToLower(strings.TrimSpace(string(m))) {
			return invalid("unknown snapshot mode %q (want sync, background, manual, external or off)", string(m))
		}
		c.mode = m
		c.modeSet = true
		return nil
	}
}

// WithReportedMode sets the mode the repository's snapshot writes report,
// in place of its own, as the evsnap.snapshot.mode attribute of the
// evsnap.snapshot.written and evsnap.snapshot.superseded metrics and of
// the eventsource.SaveSnapshot span. It changes nothing else. The
// snapshotter worker's repositories run in ModeManual and report
// ModeExternal: the snapshots they write are those of applications in
// external mode, and a dashboard must not count them as manual ones.
func WithReportedMode(m SnapshotMode) Option {
	return func(c *config) error {
		if _, err := ParseSnapshotMode(string(m)); err != nil || string(m) != strings.ToLower(strings.TrimSpace(string(m))) {
			return invalid("WithReportedMode: unknown snapshot mode %q (want sync, background, manual, external or off)", string(m))
		}
		c.reportedMode = m
		return nil
	}
}

// WithBackgroundWorkers sets how many goroutines write snapshots in
// [ModeBackground] (default 2) and how many may be queued before further
// ones are dropped (default 1024).
// Dropped snapshots are logged and counted; the events are committed and the
// next due save snapshots again.
func WithBackgroundWorkers(workers, queue int) Option {
	return func(c *config) error {
		if workers < 1 {
			return invalid("background workers must be at least 1, got %d", workers)
		}
		if queue < 1 {
			return invalid("background queue must be at least 1, got %d", queue)
		}
		c.bgWorkers, c.bgQueue = workers, queue
		return nil
	}
}

// WithMaxSnapshotBytes refuses snapshots whose encoded state is larger
// than n bytes (default 16 MiB). A refused snapshot is
// logged and counted after a save, and an error from CreateSnapshot; loads
// then replay events. n must be at least 1.
func WithMaxSnapshotBytes(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("max snapshot bytes must be at least 1, got %d", n)
		}
		c.maxState = n
		return nil
	}
}

// WithAppendNotifier sets the notifier that [ModeExternal] hands each
// committed append to.
func WithAppendNotifier(n AppendNotifier) Option {
	return func(c *config) error {
		if n == nil {
			return invalid("WithAppendNotifier(nil)")
		}
		c.notifier = n
		return nil
	}
}

// WithLoadTrigger makes a load that replays at least n events (after its
// snapshot, or from version 1 when it has none usable) ask for a snapshot,
// so that an aggregate read often but written rarely, whose snapshot is
// missing or far behind (its notices were lost, its snapshots pruned, it
// predates the worker), heals from reads alone. Off by default. What
// asking means depends on the mode:
//
//   - [ModeSync]: the load stores the snapshot of the state it built
//     before it returns, through the same write as a save's snapshot
//     (monotonic; a failure is logged and counted, never returned).
//   - [ModeBackground]: the snapshot is queued on the repository's
//     background writer.
//   - [ModeExternal]: the request goes to the notifier, which must
//     implement [SnapshotRequester] (natsnotice.Publisher publishes a
//     notice with reason "read", which the snapshotter worker acts on).
//   - [ModeManual], [ModeOff]: nothing; those modes take no snapshot of
//     their own accord.
//
// Each aggregate asks at most once per interval ([WithLoadTriggerInterval],
// default one minute), however many loads replay that much meanwhile, and
// the repository remembers at most 4,096 aggregates per interval: beyond
// that, further loads wait for the next interval. Loads that ask, fail to,
// or are held back are counted (evsnap.load.snapshot_requests, by result).
// A load never fails because of its request. n must be at least 1.
func WithLoadTrigger(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("WithLoadTrigger: the events a load replays before it asks for a snapshot must be at least 1, got %d", n)
		}
		c.loadTrigger = int64(n)
		return nil
	}
}

// WithLoadTriggerInterval sets how long an aggregate that asked for a
// snapshot on load ([WithLoadTrigger]) waits before it may ask again
// (default one minute): a hot aggregate asks once, not on every load while
// its snapshot is being taken. d must be positive, and WithLoadTrigger
// given too.
func WithLoadTriggerInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("WithLoadTriggerInterval: the interval must be positive, got %v", d)
		}
		c.loadInterval = d
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return invalid("WithLogger(nil)")
		}
		c.logger = l
		return nil
	}
}

// WithTracerProvider sets the OpenTelemetry tracer provider (default: the
// global one, a no-op unless the program installs an SDK).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) error {
		if tp == nil {
			return invalid("WithTracerProvider(nil)")
		}
		c.tracerProvider = tp
		return nil
	}
}

// WithMeterProvider sets the OpenTelemetry meter provider (default: the
// global one, a no-op unless the program installs an SDK).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) error {
		if mp == nil {
			return invalid("WithMeterProvider(nil)")
		}
		c.meterProvider = mp
		return nil
	}
}

// resolve applies defaults and checks the combination of options.
func (c *config) resolve() (policy.Policy, error) {
	if !c.modeSet {
		c.mode = ModeSync
		if c.notifier != nil {
			c.mode = ModeExternal
		}
	}
	switch c.mode {
	case ModeExternal:
		if c.notifier == nil {
			return nil, invalid("snapshot mode %q needs an append notifier: add WithAppendNotifier (natsnotice.NewPublisher)", c.mode)
		}
	case ModeOff:
		if c.policy != nil {
			return nil, invalid("a snapshot policy has no effect in snapshot mode %q", c.mode)
		}
	}
	if c.notifier != nil && c.mode != ModeExternal {
		return nil, invalid("WithAppendNotifier is only used by snapshot mode %q, not %q", ModeExternal, c.mode)
	}
	if c.loadInterval != 0 && c.loadTrigger == 0 {
		return nil, invalid("WithLoadTriggerInterval has no effect without WithLoadTrigger")
	}
	if c.loadTrigger > 0 && c.mode == ModeExternal {
		if _, ok := c.notifier.(SnapshotRequester); !ok {
			return nil, invalid("WithLoadTrigger in snapshot mode %q needs a notifier that passes a load's request on: %T does not implement eventsource.SnapshotRequester (natsnotice.Publisher does)", c.mode, c.notifier)
		}
	}
	if c.loadInterval == 0 {
		c.loadInterval = defaultLoadTriggerInterval
	}
	if c.maxState == 0 {
		c.maxState = defaultMaxSnapshotBytes
	}
	if c.bgWorkers == 0 {
		c.bgWorkers, c.bgQueue = defaultBackgroundWorkers, defaultBackgroundQueue
	}
	if c.mode == ModeManual || c.mode == ModeExternal || c.mode == ModeOff {
		return policy.Never{}, nil
	}
	if c.policy == nil {
		return DefaultPolicy().rule(), nil
	}
	return c.policy.rule(), nil
}
