// Package consumer is the snapshotter's JetStream pull loop: it takes
// notices from a durable pull consumer in batches, coalesces them per
// aggregate, hands each aggregate to a handler with bounded parallelism,
// and acks, naks (with a backoff delay) or terminates every message
// according to the outcome. It knows nothing about stores or aggregates;
// lib/snapshotter supplies the handler.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/logattr"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Group is every notice of one batch about one aggregate, coalesced.
type Group struct {
	AggregateType string
	AggregateID   uuid.UUID
	// HeadHint is the highest LastVersion among the notices: the head the
	// notices know of. The store's head may be further on.
	HeadHint int64
	// FirstHint is the lowest FirstVersion among the notices: with
	// HeadHint, the span of versions the notices announce.
	FirstHint int64
	// EventTypes is the union of the notices' event types.
	EventTypes []string
	// ReadFirst is the highest FirstVersion among the notices with reason
	// read (natsnotice.ReasonRead: a load's request for a snapshot), 0
	// when there is none; Reads counts those notices. A load that
	// started from the snapshot at ReadFirst-1 (or from nothing) asked.
	ReadFirst int64
	Reads     int
	// FirstCommit is the earliest commit time among the append notices
	// (zero when every notice is a read notice, whose time is not a
	// commit's).
	FirstCommit time.Time
	// Links point at the spans of the saves that published the notices.
	Links []trace.Link
	// Delivered is the highest delivery count among the messages.
	Delivered uint64

	msgs []jetstream.Msg
}

// Size returns how many messages the group coalesces.
func (g *Group) Size() int { return len(g.msgs) }

// Handler processes one aggregate's coalesced notices. A nil error acks
// every message of the group. An error for which Permanent holds
// terminates them at once; any other error naks them with a backoff delay,
// and terminates them when they have been delivered MaxDeliveries times.
// The handler must honour ctx.
type Handler func(ctx context.Context, g *Group) error

// Config tunes the loop. Zero values take the defaults noted.
type Config struct {
	// BatchSize is the most messages taken into one batch (default 256).
	BatchSize int
	// Concurrency is how many aggregates are processed at once (default 4).
	Concurrency int
	// Linger is how long a batch waits for more messages after its first
	// (default 5ms): a longer linger coalesces more under load.
	Linger time.Duration
	// MaxDeliveries bounds the deliveries of a message whose handling keeps
	// failing with transient errors: when its MaxDeliveries-th delivery
	// fails too, it is terminated (default 10). A permanent failure is
	// terminated on its first delivery.
	MaxDeliveries int
	// NakDelay returns the redelivery delay after the n-th failed delivery
	// (default: exponential from 1s, capped at 1m).
	NakDelay func(delivered uint64) time.Duration
	// InProgressEvery is how often a long-running group tells JetStream it
	// is still being worked on (default 10s; keep it well under AckWait).
	InProgressEvery time.Duration
	// DrainTimeout bounds how long Run spends finishing buffered messages
	// after its context ends (default 20s).
	DrainTimeout time.Duration
	// Permanent classifies handler errors that can never succeed.
	Permanent func(error) bool
	// SubjectPrefix is the notice subject prefix (default natsnotice's).
	SubjectPrefix string
	// Connected, when set, reports whether the NATS connection is up. A
	// drain while it is down stops pulling at once: nats.go's drain waits
	// for a flush the server cannot answer.
	Connected func() bool

	Logger     *slog.Logger
	Meter      metric.Meter
	Propagator propagation.TextMapPropagator
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.Linger <= 0 {
		c.Linger = 5 * time.Millisecond
	}
	if c.MaxDeliveries <= 0 {
		c.MaxDeliveries = 10
	}
	if c.NakDelay == nil {
		c.NakDelay = DefaultNakDelay
	}
	if c.InProgressEvery <= 0 {
		c.InProgressEvery = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 20 * time.Second
	}
	if c.Permanent == nil {
		c.Permanent = func(error) bool { return false }
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = natsnotice.DefaultSubjectPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Propagator == nil {
		c.Propagator = propagation.TraceContext{}
	}
}

// DefaultNakDelay is 1s, 2s, 4s, ... capped at one minute.
func DefaultNakDelay(delivered uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < delivered && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// Outcome names for the evsnap.worker.notice.settled metric's "outcome" attribute.
const (
	OutcomeAcked      = "acked"
	OutcomeNaked      = "naked"
	OutcomeTerminated = "terminated"
)

var outcomeKey = attribute.Key("evsnap.outcome")

// drainIdle is how long a draining loop waits for buffered messages to
// come out of the iterator before it stops pulling.
const drainIdle = time.Second

// FetchExpiry is how long one pull request waits on the server for
// notices. While a pull waits, the server sends a heartbeat every half of
// it; a pull that misses them for a whole FetchExpiry ends Run with an
// error (the caller rebinds).
const FetchExpiry = 5 * time.Second

// idleProbe is how long the loop waits for a first notice before it
// counts the quiet as an answered pull: a wait of more than FetchExpiry
// with no missed heartbeat proves the pull is alive.
const idleProbe = 2 * FetchExpiry

// FreshFetch is how recent the last answered pull must be for
// [Loop.Fetching] to hold: three times FetchExpiry, so an idle loop, which
// has an answer every idleProbe, stays fresh.
const FreshFetch = 3 * FetchExpiry

// Loop is one replica's pull loop over a durable consumer.
type Loop struct {
	cfg     Config
	handler Handler

	received metric.Int64Counter
	outcomes metric.Int64Counter
	batches  metric.Int64Histogram

	// lastFetch is when a pull was last answered (unix ns): notices came,
	// or a quiet idleProbe passed with the heartbeats arriving. busy is
	// set while a fetched batch is being dispatched: time spent working
	// does not make the fetch stale.
	lastFetch atomic.Int64
	busy      atomic.Bool

	counts struct{ received, acked, naked, terminated atomic.Int64 }
}

// Counts are the notices a loop took and settled since it was created.
type Counts struct {
	Received, Acked, Naked, Terminated int64
}

// Counts returns the notices taken and settled so far.
func (l *Loop) Counts() Counts {
	return Counts{
		Received:   l.counts.received.Load(),
		Acked:      l.counts.acked.Load(),
		Naked:      l.counts.naked.Load(),
		Terminated: l.counts.terminated.Load(),
	}
}

// Fetching reports whether the loop's pull has been answered within
// FreshFetch of now, or the loop is busy with notices it fetched. It is
// false before Run and after it returns.
func (l *Loop) Fetching(now time.Time) bool {
	last := l.lastFetch.Load()
	if last == 0 {
		return false
	}
	return l.busy.Load() || now.Sub(time.Unix(0, last)) <= FreshFetch
}

func (l *Loop) fetched() { l.lastFetch.Store(time.Now().UnixNano()) }

// New returns a loop; it does no I/O.
func New(cfg Config, h Handler) (*Loop, error) {
	cfg.defaults()
	l := &Loop{cfg: cfg, handler: h}
	if cfg.Meter != nil {
		var err error
		if l.received, err = cfg.Meter.Int64Counter("evsnap.worker.notice.received",
			metric.WithUnit("{notice}"), metric.WithDescription("Notices taken from JetStream.")); err != nil {
			return nil, err
		}
		if l.outcomes, err = cfg.Meter.Int64Counter("evsnap.worker.notice.settled",
			metric.WithUnit("{notice}"), metric.WithDescription("Notices settled, by outcome: acked, naked, terminated.")); err != nil {
			return nil, err
		}
		if l.batches, err = cfg.Meter.Int64Histogram("evsnap.worker.batch.size",
			metric.WithUnit("{notice}"), metric.WithDescription("Notices per fetched batch.")); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Run consumes until ctx ends, then stops pulling, finishes the messages
// already buffered (within DrainTimeout), settles them and returns nil.
// It returns an error if ctx is still live and the consumer cannot be read
// (a deleted consumer, missed heartbeats), which the caller may retry.
// The caller has just bound cons: Run counts that as the first answered
// pull (see [Loop.Fetching]).
func (l *Loop) Run(ctx context.Context, cons jetstream.Consumer) error {
	it, err := cons.Messages(
		jetstream.PullMaxMessages(2*l.cfg.BatchSize),
		jetstream.PullExpiry(FetchExpiry),
		jetstream.WithMessagesErrOnMissingHeartbeat(true),
	)
	if err != nil {
		return fmt.Errorf("consumer: start pulling: %w", err)
	}
	l.fetched()
	defer l.lastFetch.Store(0)
	// Processing continues after ctx ends, for the drain; it gets its own
	// context, cancelled only when the drain runs out of time.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopped := make(chan struct{})
	finished := make(chan struct{})
	var lastMsg atomic.Int64 // when Next last returned a message (unix ns)
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		drainStart := time.Now()
		lastMsg.Store(drainStart.UnixNano())
		if l.cfg.Connected != nil && !l.cfg.Connected() {
			// Nothing can be pulled or acked; the buffered notices (if
			// any) are redelivered after the ack wait.
			it.Stop()
		} else {
			it.Drain()
		}
		t := time.NewTimer(l.cfg.DrainTimeout)
		defer t.Stop()
		idle := time.NewTicker(100 * time.Millisecond)
		defer idle.Stop()
		for {
			select {
			case <-t.C:
				l.cfg.Logger.Warn("drain timed out; cancelling in-flight work (unacked notices are redelivered)", logattr.Seconds("drain_timeout", l.cfg.DrainTimeout))
				cancelWork()
				it.Stop()
				return
			case <-idle.C:
				// Nothing buffered has come out for a while: the drain is
				// done pulling even if the server cannot confirm it (NATS
				// down). Stop the iterator so the loop can finish the work
				// in flight and return, instead of waiting the full timeout.
				if time.Since(time.Unix(0, lastMsg.Load())) > drainIdle {
					it.Stop()
				}
			case <-finished:
				return
			}
		}
	}()
	defer func() {
		close(finished)
		it.Stop()
		<-stopped
	}()
	d := newDispatcher(work, l)
	defer d.wait() // runs first: in-flight groups finish (or the drain timer cancels them)

	for {
		first, err := it.Next(jetstream.NextMaxWait(idleProbe))
		if err == nil {
			lastMsg.Store(time.Now().UnixNano())
		}
		if errors.Is(err, nats.ErrTimeout) {
			// No notice for idleProbe and no missed heartbeat (that would
			// have ended the wait with ErrNoHeartbeat): the pull is alive,
			// unless the connection is down, which stops the heartbeat
			// check.
			if l.cfg.Connected == nil || l.cfg.Connected() {
				l.fetched()
			}
			continue
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("consumer: next message: %w", err)
		}
		l.busy.Store(true)
		l.fetched()
		batch := l.collect(it, first, &lastMsg)
		l.dispatchBatch(work, d, batch)
		l.fetched()
		l.busy.Store(false)
	}
}

// collect gathers up to BatchSize messages, waiting at most Linger after
// the first.
func (l *Loop) collect(it jetstream.MessagesContext, first jetstream.Msg, lastMsg *atomic.Int64) []jetstream.Msg {
	batch := []jetstream.Msg{first}
	deadline := time.Now().Add(l.cfg.Linger)
	for len(batch) < l.cfg.BatchSize {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		if err == nil {
			lastMsg.Store(time.Now().UnixNano())
		}
		if err != nil {
			break // timeout, or the iterator closed: the next Next reports it
		}
		batch = append(batch, m)
	}
	return batch
}

// dispatchBatch coalesces a batch by aggregate and hands each group to the
// dispatcher, which blocks while every slot is busy: that back-pressure is
// what stops the loop from pulling more than it can process.
func (l *Loop) dispatchBatch(ctx context.Context, d *dispatcher, batch []jetstream.Msg) {
	l.counts.received.Add(int64(len(batch)))
	if l.received != nil {
		l.received.Add(ctx, int64(len(batch)))
		l.batches.Record(ctx, int64(len(batch)))
	}
	for _, g := range l.coalesce(ctx, batch) {
		d.dispatch(g)
	}
}

// dispatcher runs groups with bounded parallelism, never two of one
// aggregate at once: notices for an aggregate being processed wait, merged
// into one follow-up group, and run right after it (usually finding the
// snapshot already current). There is no barrier between batches: a slow
// aggregate holds one runner, not the whole loop.
//
// The runners are Concurrency long-lived goroutines, so a group does not
// pay for starting one and growing its stack through the store's call
// path.
type dispatcher struct {
	ctx  context.Context
	l    *Loop
	jobs chan *Group // unbuffered: a send waits for a free runner
	wg   sync.WaitGroup
	mu   sync.Mutex
	busy map[groupKey]*Group // aggregate in flight -> its follow-up (nil: none yet)
}

func newDispatcher(ctx context.Context, l *Loop) *dispatcher {
	d := &dispatcher{ctx: ctx, l: l, jobs: make(chan *Group), busy: map[groupKey]*Group{}}
	d.wg.Add(l.cfg.Concurrency)
	for range l.cfg.Concurrency {
		go func() {
			defer d.wg.Done()
			for g := range d.jobs {
				d.run(g)
			}
		}()
	}
	return d
}

// dispatch hands g to a runner, waiting for one to be free, unless its
// aggregate is in flight: then g becomes (or joins) the follow-up.
func (d *dispatcher) dispatch(g *Group) {
	k := groupKey{g.AggregateType, g.AggregateID}
	d.mu.Lock()
	if follow, inFlight := d.busy[k]; inFlight {
		if follow == nil {
			d.busy[k] = g
		} else {
			follow.merge(g)
		}
		d.mu.Unlock()
		return
	}
	d.busy[k] = nil
	d.mu.Unlock()
	d.jobs <- g
}

// run handles g and then the follow-ups that arrive for its aggregate
// meanwhile.
func (d *dispatcher) run(g *Group) {
	k := groupKey{g.AggregateType, g.AggregateID}
	for g != nil {
		d.l.handle(d.ctx, g)
		d.mu.Lock()
		if g = d.busy[k]; g == nil {
			delete(d.busy, k)
		} else {
			d.busy[k] = nil
		}
		d.mu.Unlock()
	}
}

// wait lets the runners finish what they hold and stops them. Call it
// once, after the last dispatch.
func (d *dispatcher) wait() {
	close(d.jobs)
	d.wg.Wait()
}

// merge folds o's notices into g.
func (g *Group) merge(o *Group) {
	g.msgs = append(g.msgs, o.msgs...)
	g.HeadHint = max(g.HeadHint, o.HeadHint)
	g.FirstHint = min(g.FirstHint, o.FirstHint)
	g.Delivered = max(g.Delivered, o.Delivered)
	g.ReadFirst = max(g.ReadFirst, o.ReadFirst)
	g.Reads += o.Reads
	if !o.FirstCommit.IsZero() && (g.FirstCommit.IsZero() || o.FirstCommit.Before(g.FirstCommit)) {
		g.FirstCommit = o.FirstCommit
	}
	for _, t := range o.EventTypes {
		if !slices.Contains(g.EventTypes, t) {
			g.EventTypes = append(g.EventTypes, t)
		}
	}
	g.Links = append(g.Links, o.Links...)
}

type groupKey struct {
	typ string
	id  uuid.UUID
}

// coalesce decodes each message; malformed ones are settled at once.
func (l *Loop) coalesce(ctx context.Context, batch []jetstream.Msg) []*Group {
	index := make(map[groupKey]*Group, len(batch))
	var groups []*Group
	for _, m := range batch {
		delivered := uint64(1)
		if md, err := m.Metadata(); err == nil {
			delivered = md.NumDelivered
		}
		n, err := natsnotice.Decode(m.Data())
		if err == nil {
			// The subject must agree with the body: a notice routed under
			// one aggregate must not act on another.
			typ, id, serr := natsnotice.ParseSubject(l.cfg.SubjectPrefix, m.Subject())
			if serr != nil {
				err = serr
			} else if typ != n.AggregateType || id != n.AggregateID {
				err = fmt.Errorf("%w: subject %q names another aggregate than the body (%s %s)", natsnotice.ErrMalformed, m.Subject(), n.AggregateType, n.AggregateID)
			}
		}
		if err != nil {
			l.settleFailed(ctx, []jetstream.Msg{m}, delivered, fmt.Errorf("notice on %q: %w", m.Subject(), err), true)
			continue
		}
		one := &Group{AggregateType: n.AggregateType, AggregateID: n.AggregateID, HeadHint: n.LastVersion, FirstHint: n.FirstVersion,
			EventTypes: n.EventTypes, FirstCommit: n.CommittedAt, Delivered: delivered, msgs: []jetstream.Msg{m}}
		if n.Reason == natsnotice.ReasonRead {
			// Other reasons, from a newer producer, read as appends.
			one.ReadFirst, one.Reads, one.FirstCommit = n.FirstVersion, 1, time.Time{}
		}
		if sc := trace.SpanContextFromContext(l.cfg.Propagator.Extract(context.Background(), natsnotice.HeaderCarrier(m.Headers()))); sc.IsValid() {
			one.Links = []trace.Link{{SpanContext: sc}}
		}
		k := groupKey{n.AggregateType, n.AggregateID}
		if g := index[k]; g != nil {
			g.merge(one)
		} else {
			index[k] = one
			groups = append(groups, one)
		}
	}
	return groups
}

// handle runs the handler on one group, keeping its messages alive with
// in-progress acks while it runs, and settles them.
func (l *Loop) handle(ctx context.Context, g *Group) {
	// A timer rather than a goroutine: most groups finish long before it
	// fires. Once finished is set (under mu) no in-progress ack follows.
	var (
		mu       sync.Mutex
		finished bool
		timer    *time.Timer
	)
	mu.Lock()
	timer = time.AfterFunc(l.cfg.InProgressEvery, func() {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return
		}
		for _, m := range g.msgs {
			_ = m.InProgress()
		}
		timer.Reset(l.cfg.InProgressEvery)
	})
	mu.Unlock()
	err := l.handler(ctx, g)
	mu.Lock()
	finished = true
	timer.Stop()
	mu.Unlock()
	if err == nil {
		for _, m := range g.msgs {
			if aerr := m.Ack(); aerr != nil {
				l.cfg.Logger.WarnContext(ctx, "ack failed; the notice will be redelivered and handled again (idempotent)",
					"subject", m.Subject(), "error", aerr)
			}
		}
		l.counts.acked.Add(int64(len(g.msgs)))
		l.count(ctx, OutcomeAcked, len(g.msgs))
		return
	}
	l.settleFailed(ctx, g.msgs, g.Delivered, fmt.Errorf("%s %s: %w", g.AggregateType, g.AggregateID, err), l.cfg.Permanent(err))
}

// settleFailed terminates msgs when the failure is permanent, or when
// they have been delivered MaxDeliveries times, logging each once at warn
// with its stream sequence, message id and the reason; otherwise it naks
// them with a backoff delay.
func (l *Loop) settleFailed(ctx context.Context, msgs []jetstream.Msg, delivered uint64, err error, permanent bool) {
	if permanent || delivered >= uint64(l.cfg.MaxDeliveries) {
		msg := "notice terminated: it can never succeed"
		if !permanent {
			msg = "notice terminated: it failed on every delivery; the reconciliation sweep catches its aggregate up"
		}
		// Plain Term, not TermWithReason: servers before 2.10 do not
		// understand a reason and would leave the message pending. The
		// reason is in the log line.
		for _, m := range msgs {
			var seq uint64
			if md, merr := m.Metadata(); merr == nil {
				seq = md.Sequence.Stream
			}
			l.cfg.Logger.WarnContext(ctx, msg,
				LogKeyStreamSeq, seq, LogKeyMsgID, m.Headers().Get(jetstream.MsgIDHeader), LogKeySubject, m.Subject(),
				LogKeyDeliveries, delivered, LogKeyReason, err.Error())
			if terr := m.Term(); terr != nil && !errors.Is(terr, nats.ErrConnectionClosed) {
				l.cfg.Logger.WarnContext(ctx, "term failed; JetStream redelivers after the ack wait", LogKeyStreamSeq, seq, "error", terr)
			}
		}
		l.counts.terminated.Add(int64(len(msgs)))
		l.count(ctx, OutcomeTerminated, len(msgs))
		return
	}
	delay := l.cfg.NakDelay(delivered)
	l.cfg.Logger.InfoContext(ctx, "notice failed; retrying later",
		LogKeyDeliveries, delivered, logattr.Seconds("retry_in", delay), "error", err)
	for _, m := range msgs {
		if nerr := m.NakWithDelay(delay); nerr != nil && !errors.Is(nerr, nats.ErrConnectionClosed) {
			l.cfg.Logger.WarnContext(ctx, "nak failed; JetStream redelivers after the ack wait", "error", nerr)
		}
	}
	l.counts.naked.Add(int64(len(msgs)))
	l.count(ctx, OutcomeNaked, len(msgs))
}

// Log keys of the loop's lines about single notices.
const (
	LogKeyStreamSeq  = "stream_seq"
	LogKeyMsgID      = "msg_id"
	LogKeySubject    = "subject"
	LogKeyDeliveries = "deliveries"
	LogKeyReason     = "reason"
)

func (l *Loop) count(ctx context.Context, outcome string, n int) {
	if l.outcomes != nil {
		opt, ok := outcomeOpts[outcome]
		if !ok {
			opt = metric.WithAttributes(outcomeKey.String(outcome))
		}
		l.outcomes.Add(ctx, int64(n), opt)
	}
}

// outcomeOpts are the outcome attribute sets, built once.
var outcomeOpts = map[string]metric.AddOption{
	OutcomeAcked:      metric.WithAttributeSet(attribute.NewSet(outcomeKey.String(OutcomeAcked))),
	OutcomeNaked:      metric.WithAttributeSet(attribute.NewSet(outcomeKey.String(OutcomeNaked))),
	OutcomeTerminated: metric.WithAttributeSet(attribute.NewSet(outcomeKey.String(OutcomeTerminated))),
}
