package natsnotice

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Errors returned by [Publisher] methods.
var (
	// ErrDropped matches the error of a Notify whose notice was dropped
	// because the buffer was full, and the error of Flush and Close when
	// notices they waited for were dropped.
	ErrDropped = errors.New("natsnotice: notice dropped")
	// ErrClosed matches the error of Notify and Flush after Close.
	ErrClosed = errors.New("natsnotice: publisher closed")
)

var (
	_ eventsource.AppendNotifier    = (*Publisher)(nil)
	_ eventsource.SnapshotRequester = (*Publisher)(nil)
)

var producerSpan = trace.WithSpanKind(trace.SpanKindProducer)

// Publisher publishes "events appended" notices to NATS JetStream. It is
// the [eventsource.AppendNotifier] of a repository in
// [eventsource.ModeExternal]:
//
//	pub, err := natsnotice.NewPublisher(js)
//	...
//	defer pub.Close(ctx) // after the repository's Close: flushes what is left
//	repo, err := eventsource.NewRepository[...](store, reg,
//		eventsource.WithSnapshotMode(eventsource.ModeExternal),
//		eventsource.WithAppendNotifier(pub))
//
// Notify builds the message and puts it into a bounded buffer; one
// background goroutine publishes asynchronously with a bounded number of
// acknowledgements outstanding and retries failures with exponential
// backoff. Notices are hints: one that cannot be published in time is
// dropped, logged and counted, and the snapshotter's reconciliation sweep
// catches its aggregate.
//
// A Publisher is safe for concurrent use.
type Publisher struct {
	js     jetstream.JetStream // the publisher's own context on the caller's connection
	cfg    publisherConfig
	tel    *telemetry
	reg    metric.Registration
	closed atomic.Bool

	held     atomic.Int64  // items held (the buffer bound); changed only with mu held
	inflight chan struct{} // one token per unacknowledged publish
	wake     chan struct{} // notices arrived while the sender slept, or a retry was scheduled
	stop     chan struct{} // closed by Close: the sender stops publishing
	done     chan struct{} // closed when the sender has returned

	mu       sync.Mutex
	queue    []*item             // notices waiting for their first attempt, in order
	asleep   bool                // the sender waits for wake: the next Notify sends it
	isShut   bool                // Close has begun: Notify refuses
	room     chan struct{}       // closed when a notice is settled, for Notify calls waiting for room
	epoch    uint64              // incremented by every Flush
	pending  map[uint64]int      // notices held, by the epoch they were enqueued in
	waiters  []*flushWaiter      // Flush calls in progress
	sent     map[*nats.Msg]*item // published, awaiting the ack or error callback
	scratch  traceFields         // absorb's carrier, to see whether a notice is traced
	retries  retryHeap
	stopping bool

	closeOnce sync.Once
	closeErr  error

	stats struct {
		enqueued, published, duplicates, retried atomic.Int64
		bufferFull, invalid, exhausted, rejected atomic.Int64
		closedDrops, coalesced                   atomic.Int64
	}
	tails map[aggregateKey]*item // the sender's, reused by coalesce
}

// item is one notice the publisher holds. Notify fills in the notice
// (n, trace); the sender builds msg from it (build) just before the
// first attempt, after merging (coalesce), so a notice merged into another
// is never encoded and the save's goroutine does no encoding at all. It
// is kept small: Notify allocates one per save it does not merge.
type item struct {
	msg      *nats.Msg // nil until the sender builds it: subject, Nats-Msg-Id, trace headers, JSON body
	epoch    uint64
	enqueued time.Time
	attempts int
	bo       *backoff.ExponentialBackOff // created at the first failure
	due      time.Time                   // when the next retry may go
	index    int                         // in retryHeap

	n      Notice      // after a merge into another item, only n.AggregateType is kept
	types  [4]string   // n.EventTypes' backing array for most saves
	trace  traceFields // what the propagator injected in Notify
	merged []*item     // later notices whose content this message carries
	// absorbed counts the later notices Notify merged into this one while
	// it was the last one queued (absorb); they have no item of their own.
	absorbed int64
}

// traced reports whether the notice carries a trace context (anything
// the propagator injected); such notices are never merged.
func (it *item) traced() bool { return len(it.trace) > 0 }

// traceFields is the [propagation.TextMapCarrier] Notify injects into: key
// and value pairs, nil (no allocation) when the propagator writes nothing,
// which is the case for a save without a valid span context.
type traceFields []string

// Get returns the value of key; "" when absent.
func (f *traceFields) Get(key string) string {
	for i := 0; i+1 < len(*f); i += 2 {
		if (*f)[i] == key {
			return (*f)[i+1]
		}
	}
	return ""
}

// Set replaces the value of key with value.
func (f *traceFields) Set(key, value string) {
	for i := 0; i+1 < len(*f); i += 2 {
		if (*f)[i] == key {
			(*f)[i+1] = value
			return
		}
	}
	*f = append(*f, key, value)
}

// Keys lists the keys set.
func (f *traceFields) Keys() []string {
	keys := make([]string, 0, len(*f)/2)
	for i := 0; i+1 < len(*f); i += 2 {
		keys = append(keys, (*f)[i])
	}
	return keys
}

// count is how many accepted notices it stands for.
func (it *item) count() int64 {
	n := 1 + it.absorbed
	for _, m := range it.merged {
		n += m.count()
	}
	return n
}

type flushWaiter struct {
	epoch   uint64
	dropped int
	done    chan struct{}
}

// NewPublisher returns a Publisher that publishes through js's connection.
//
// It does no I/O: it validates the options, derives its own JetStream
// context on js.Conn() (so its publish window, acknowledgement timeout and
// callbacks never mix with the caller's own async publishes; the reply
// subscription is made on the first publish) and starts one background
// goroutine, which [Publisher.Close] stops and waits for.
//
// The stream must exist (see [EnsureStream]) and capture the subject
// prefix; until it does, publishes fail and are retried.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) (*Publisher, error) {
	if js == nil || js.Conn() == nil {
		return nil, invalidOption("NewPublisher needs a JetStream context with a connection")
	}
	cfg := defaultPublisherConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	cfg.resolve()
	tel, err := newTelemetry(&cfg)
	if err != nil {
		return nil, fmt.Errorf("natsnotice: telemetry: %w", err)
	}
	p := &Publisher{
		cfg:      cfg,
		tel:      tel,
		inflight: make(chan struct{}, cfg.maxInFlight),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		pending:  map[uint64]int{},
		sent:     map[*nats.Msg]*item{},
	}
	p.js, err = jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncMaxPending(cfg.maxInFlight),
		jetstream.WithPublishAsyncTimeout(cfg.publishTimeout),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onErr))
	if err != nil {
		return nil, fmt.Errorf("natsnotice: %w", err)
	}
	p.reg, err = cfg.meterProvider.Meter(InstrumentationName).RegisterCallback(
		func(_ context.Context, o metric.Observer) error {
			o.ObserveInt64(tel.buffered, p.held.Load())
			return nil
		}, tel.buffered)
	if err != nil {
		return nil, fmt.Errorf("natsnotice: telemetry: %w", err)
	}
	go p.run()
	return p, nil
}

// Notify publishes a notice of the committed append a, asynchronously.
//
// It validates a (an aggregate type that is not a NATS subject token is an
// error matching [ErrInvalidAggregateType], and nothing is published),
// builds the notice ([FromAppended]) and captures the trace context of ctx
// through the propagator (the save's span, through a short producer span
// when the save's span is recorded). Then it enqueues it. The background
// sender encodes it into a message to [Subject](prefix, type, id) with
// header Nats-Msg-Id set to [Notice.MsgID] and the trace headers, after
// merging it into an earlier notice of the aggregate where it can
// ([WithCoalescing]); the save's goroutine does no encoding.
//
// Bound: Notify never waits longer than [WithMaxEnqueueWait] (default 0:
// not at all) plus the time to build the notice, a fraction of a
// microsecond. It does no I/O. When the buffer is full it drops the
// notice, counts it (reason buffer_full) and returns an error matching
// [ErrDropped]; ctx ending while it waits for room does the same. After
// Close it returns an error matching [ErrClosed].
//
// A nil error means the notice was accepted, not that it was published: it
// is published, retried, or eventually dropped and counted in the
// background. ctx is used for its trace context and for that wait only;
// a cancelled ctx does not stop the publish (the events are committed).
func (p *Publisher) Notify(ctx context.Context, a eventsource.Appended) error {
	if p.closed.Load() {
		return fmt.Errorf("natsnotice: notify %s %s v%d: %w", a.AggregateType, a.AggregateID, a.LastVersion, ErrClosed)
	}
	if err := validateAppended(a); err != nil {
		p.stats.invalid.Add(1)
		p.tel.drop(ctx, a.AggregateType, DropInvalid, 1)
		return fmt.Errorf("natsnotice: notify %s %s v%d: %w", a.AggregateType, a.AggregateID, a.LastVersion, err)
	}
	if p.cfg.coalesce && p.absorb(ctx, a) {
		return nil
	}
	it := &item{n: Notice{
		Version:       FormatVersion,
		AggregateType: a.AggregateType,
		AggregateID:   a.AggregateID,
		FirstVersion:  a.FirstVersion,
		LastVersion:   a.LastVersion,
		CommittedAt:   a.CommittedAt.UTC(),
	}}
	it.n.EventTypes, it.n.Truncated = appendDistinct(it.types[:0], a.EventTypes)
	return p.send(ctx, it, "notify")
}

// RequestSnapshot publishes a load's request for a snapshot
// ([eventsource.SnapshotRequester], for eventsource.WithLoadTrigger in
// external mode) as a notice with reason [ReasonRead]: the versions the
// load replayed (r.FirstVersion to r.LastVersion), no event types, and
// the request's time as its commit time. Its message id ends in "/read",
// so JetStream never takes it for a duplicate of the append notice of the
// same version, and two requests for the same head within the stream's
// duplicate window are stored once. It is never merged with other
// notices. Otherwise it behaves as Notify: it validates, queues without
// I/O, publishes in the background, and returns an error matching
// [ErrDropped] when the buffer is full and [ErrClosed] after Close.
func (p *Publisher) RequestSnapshot(ctx context.Context, r eventsource.SnapshotRequest) error {
	if p.closed.Load() {
		return fmt.Errorf("natsnotice: request snapshot of %s %s v%d: %w", r.AggregateType, r.AggregateID, r.LastVersion, ErrClosed)
	}
	it := &item{n: Notice{
		Version:       FormatVersion,
		AggregateType: r.AggregateType,
		AggregateID:   r.AggregateID,
		FirstVersion:  r.FirstVersion,
		LastVersion:   r.LastVersion,
		CommittedAt:   r.RequestedAt.UTC(),
		Reason:        ReasonRead,
	}}
	it.n.EventTypes = it.types[:0]
	if err := it.n.Validate(); err != nil {
		p.stats.invalid.Add(1)
		p.tel.drop(ctx, r.AggregateType, DropInvalid, 1)
		return fmt.Errorf("natsnotice: request snapshot of %s %s v%d: %w", r.AggregateType, r.AggregateID, r.LastVersion, err)
	}
	return p.send(ctx, it, "request snapshot of")
}

// send captures the trace context of ctx into it's notice (through a
// short producer span when the caller's span is recorded) and enqueues
// it; what says what the caller was doing, for its error.
func (p *Publisher) send(ctx context.Context, it *item, what string) error {
	it.enqueued = time.Now()
	// The producer span is a child of the caller's span (the save's, or
	// the load's), made only when that span is recorded: an unrecorded
	// save (no SDK, or not sampled) costs Notify no span.
	var span trace.Span
	if trace.SpanFromContext(ctx).IsRecording() {
		ctx, span = p.tel.tracer.Start(ctx, "natsnotice.Notify", producerSpan)
		defer span.End()
		if span.IsRecording() {
			span.SetAttributes(AttrSystem.String("nats"),
				AttrSubject.String(Subject(p.cfg.subjectPrefix, it.n.AggregateType, it.n.AggregateID)),
				AttrMsgID.String(it.n.MsgID()),
				telemetrykeys.AttrAggregateType.String(it.n.AggregateType), telemetrykeys.AttrAggregateID.String(it.n.AggregateID.String()),
				telemetrykeys.AttrVersion.Int64(it.n.LastVersion))
		}
	}
	p.cfg.propagator.Inject(ctx, &it.trace)

	if err := p.enqueue(ctx, it); err != nil {
		if span != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		return fmt.Errorf("natsnotice: %s %s %s v%d: %w", what, it.n.AggregateType, it.n.AggregateID, it.n.LastVersion, err)
	}
	return nil
}

// absorb merges the notice of the valid append a into the last queued
// notice when that one is of the same aggregate, directly precedes it
// (a's first version is its last plus one), was accepted since the last
// Flush, and neither carries a trace context: the propagator writes
// nothing for ctx (it runs under the lock, into a carrier the publisher
// reuses, and only once the rest matches). It reports whether it merged:
// then a costs no allocation, and the sender has one message fewer to
// build and publish. The sender's coalesce merges what this cannot
// (notices of several aggregates interleaved).
func (p *Publisher) absorb(ctx context.Context, a eventsource.Appended) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isShut || len(p.queue) == 0 {
		return false
	}
	tail := p.queue[len(p.queue)-1]
	if tail.epoch != p.epoch || tail.traced() || tail.n.Reason != "" || tail.n.AggregateID != a.AggregateID ||
		tail.n.AggregateType != a.AggregateType || a.FirstVersion != tail.n.LastVersion+1 {
		return false
	}
	p.scratch = p.scratch[:0]
	p.cfg.propagator.Inject(ctx, &p.scratch)
	if len(p.scratch) > 0 {
		clear(p.scratch)
		return false
	}
	tail.n.extend(a.LastVersion, a.EventTypes, false, a.CommittedAt.UTC())
	tail.absorbed++
	p.stats.enqueued.Add(1)
	p.stats.coalesced.Add(1)
	return true
}

// validateAppended reports what is wrong with the notice of a, as
// [Notice.Validate] does, without building the notice's list of distinct
// event types.
func validateAppended(a eventsource.Appended) error {
	n := Notice{Version: FormatVersion, AggregateType: a.AggregateType, AggregateID: a.AggregateID,
		FirstVersion: a.FirstVersion, LastVersion: a.LastVersion, CommittedAt: a.CommittedAt}
	if err := n.Validate(); err != nil {
		return err
	}
	for i, t := range a.EventTypes {
		if t == "" {
			return fmt.Errorf("%w: event type %d is empty", ErrMalformed, i)
		}
	}
	return nil
}

// build makes the message of it: subject and Nats-Msg-Id from one
// formatting of the id, the trace headers Notify captured, and the JSON
// body. The sender calls it once, before the first attempt.
func (p *Publisher) build(it *item) error {
	var idBuf [36]byte
	var verBuf [20]byte
	id := appendUUID(idBuf[:0], it.n.AggregateID)
	typ := it.n.AggregateType
	m := &nats.Msg{Subject: p.cfg.subjectPrefix + "." + typ + "." + string(id), Header: make(nats.Header, 1+len(it.trace)/2)}
	msgID := typ + "/" + string(id) + "/" + string(strconv.AppendInt(verBuf[:0], it.n.LastVersion, 10))
	if it.n.Reason != "" {
		msgID += "/" + it.n.Reason
	}
	m.Header[HeaderMsgID] = []string{msgID}
	for i := 0; i+1 < len(it.trace); i += 2 {
		m.Header[it.trace[i]] = []string{it.trace[i+1]}
	}
	it.msg = m // before encoding: a drop logs the subject
	data, err := it.n.appendJSON(make([]byte, 0, 256))
	if err != nil {
		return err
	}
	m.Data = data
	return nil
}

// enqueue takes room in the buffer for it (waiting at most
// maxEnqueueWait) and queues it for the sender, which it wakes only if the
// sender is asleep: while the sender works, it finds the notice when it
// next takes the queue.
func (p *Publisher) enqueue(ctx context.Context, it *item) error {
	var timer *time.Timer
	for {
		p.mu.Lock()
		if p.isShut {
			p.mu.Unlock()
			return ErrClosed
		}
		if p.held.Load() < int64(p.cfg.bufferSize) {
			p.held.Add(1)
			it.epoch = p.epoch
			p.pending[it.epoch]++
			p.queue = append(p.queue, it)
			wake := p.asleep
			p.asleep = false
			p.stats.enqueued.Add(1)
			p.mu.Unlock()
			if wake {
				p.signal()
			}
			return nil
		}
		full := fmt.Errorf("%w: buffer full (%d notices held)", ErrDropped, p.cfg.bufferSize)
		if p.cfg.maxEnqueueWait <= 0 {
			p.mu.Unlock()
			return p.dropFull(ctx, it, full)
		}
		if p.room == nil {
			p.room = make(chan struct{})
		}
		room := p.room
		p.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(p.cfg.maxEnqueueWait)
			defer timer.Stop()
		}
		select {
		case <-room: // a notice was settled: try again
		case <-timer.C:
			return p.dropFull(ctx, it, full)
		case <-ctx.Done():
			return p.dropFull(ctx, it, fmt.Errorf("%w and %w", full, ctx.Err()))
		}
	}
}

// dropFull counts a notice Notify dropped because the buffer was full.
func (p *Publisher) dropFull(ctx context.Context, it *item, err error) error {
	p.stats.bufferFull.Add(1)
	p.tel.drop(ctx, it.n.AggregateType, DropBufferFull, 1)
	return err
}

// signal wakes the sender if it is not already due to wake.
func (p *Publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run is the sender: it takes every queued notice and due retry at once
// and publishes them, at most maxInFlight unacknowledged at once, until
// Close stops it. After a batch it lingers (WithLinger) before it looks
// again, so that notices arriving meanwhile are queued without waking it
// and go out together. When there is nothing to do it sleeps until a
// Notify (or a failure, Flush or Close) wakes it or the next retry is due.
func (p *Publisher) run() {
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch, retries []*item
	for {
		select {
		case <-p.stop: // checked first: the select below picks at random
			return
		default:
		}
		p.mu.Lock()
		batch, p.queue = p.queue, batch[:0]
		wait := p.dueRetriesLocked(time.Now(), &retries)
		if len(batch)+len(retries) == 0 {
			p.asleep = true
		}
		p.mu.Unlock()
		if p.cfg.coalesce {
			batch = p.coalesce(batch)
		}
		batch = append(batch, retries...)
		clear(retries)
		retries = retries[:0]
		for i, it := range batch {
			if !p.publish(it) {
				p.mu.Lock()
				for _, rest := range batch[i+1:] { // left for Close to drop
					heap.Push(&p.retries, rest)
				}
				p.mu.Unlock()
				return
			}
		}
		if len(batch) > 0 {
			clear(batch)
			if p.cfg.linger > 0 {
				timer.Reset(p.cfg.linger)
				select {
				case <-p.stop:
					return
				case <-p.wake: // Flush or a retry cut the linger short
				case <-timer.C:
				}
				timer.Stop()
			}
			continue
		}
		var timerC <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			timerC = timer.C
		}
		select {
		case <-p.stop:
			return
		case <-p.wake:
		case <-timerC:
		}
		timer.Stop()
		p.mu.Lock()
		p.asleep = false
		p.mu.Unlock()
	}
}

// coalesce merges each notice of batch (notices never attempted, in the
// order Notify accepted them) into the previous notice of the same
// aggregate in batch when it directly follows it (its first version is
// that one's last plus one) and neither carries a trace context: the
// merged notice has the first one's first version and earliest commit
// time, the last one's last version (and so its message id), and the
// distinct event types of both. It returns the notices left, in batch's
// backing array; build encodes them afterwards.
func (p *Publisher) coalesce(batch []*item) []*item {
	if len(batch) < 2 {
		return batch
	}
	if p.tails == nil {
		p.tails = map[aggregateKey]*item{}
	}
	out := batch[:0]
	for _, it := range batch {
		if it.n.Reason != "" { // a load's request goes out as it is
			out = append(out, it)
			continue
		}
		key := aggregateKey{it.n.AggregateType, it.n.AggregateID}
		tail := p.tails[key]
		if tail == nil || tail.traced() || it.traced() || it.n.FirstVersion != tail.n.LastVersion+1 {
			p.tails[key] = it
			out = append(out, it)
			continue
		}
		tail.n.extend(it.n.LastVersion, it.n.EventTypes, it.n.Truncated, it.n.CommittedAt)
		tail.merged = append(tail.merged, it)
		it.n = Notice{AggregateType: it.n.AggregateType} // its content is tail's now
		p.stats.coalesced.Add(1)
	}
	clear(p.tails)
	clear(batch[len(out):])
	return out
}

// aggregateKey identifies an aggregate, for coalesce.
type aggregateKey struct {
	typ string
	id  uuid.UUID
}

// dueRetriesLocked moves the retries that are due into batch and says how
// long until the next one is (-1: none scheduled).
func (p *Publisher) dueRetriesLocked(now time.Time, batch *[]*item) time.Duration {
	for len(p.retries) > 0 {
		if d := p.retries[0].due.Sub(now); d > 0 {
			return d
		}
		*batch = append(*batch, heap.Pop(&p.retries).(*item))
	}
	return -1
}

// publish sends one attempt of it. It reports false when Close stopped the
// sender while it waited for an in-flight slot (it is then left for Close
// to drop).
func (p *Publisher) publish(it *item) bool {
	if it.msg == nil {
		if err := p.build(it); err != nil { // not expected: Notify validated it
			p.dropOne(it, DropInvalid, err)
			return true
		}
	}
	select {
	case p.inflight <- struct{}{}:
	case <-p.stop:
		p.mu.Lock()
		heap.Push(&p.retries, it)
		p.mu.Unlock()
		return false
	}
	it.attempts++
	m := it.msg
	p.mu.Lock()
	p.sent[m] = it // before publishing: the ack may come first
	p.mu.Unlock()
	if _, err := p.js.PublishMsgAsync(m); err != nil {
		if it := p.take(m); it != nil {
			p.failed(it, err)
		}
	}
	return true
}

// take removes the in-flight notice of m and frees its in-flight slot; nil
// when someone else (Close, or another callback) already took it.
func (p *Publisher) take(m *nats.Msg) *item {
	p.mu.Lock()
	it, ok := p.sent[m]
	if ok {
		delete(p.sent, m)
	}
	p.mu.Unlock()
	if !ok {
		return nil
	}
	<-p.inflight
	return it
}

// onAck is the JetStream ack callback. It runs on the connection's
// dispatch goroutine and must not block.
func (p *Publisher) onAck(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	it := p.take(m)
	if it == nil {
		return
	}
	ctx := context.Background()
	n := it.count()
	p.stats.published.Add(n)
	if ack.Duplicate {
		p.stats.duplicates.Add(n)
		p.tel.published.Add(ctx, n, p.tel.pubDup)
	} else {
		p.tel.published.Add(ctx, n, p.tel.pubOrig)
	}
	now := time.Now()
	p.recordDuration(ctx, now, it)
	for _, m := range it.merged {
		p.recordDuration(ctx, now, m)
	}
	p.settle(it, false)
}

// recordDuration records the publish duration of it's notice and of the
// notices it absorbed, which are timed from its own Notify (they came
// later, so theirs is shorter by at most the time the sender took to
// pick the message up).
func (p *Publisher) recordDuration(ctx context.Context, now time.Time, it *item) {
	d := now.Sub(it.enqueued).Seconds()
	for range 1 + it.absorbed {
		p.tel.publishDuration.Record(ctx, d)
	}
}

// onErr is the JetStream error callback (a failed or timed-out publish).
// It can run with the JetStream context's lock held, so it must neither
// block nor call into the context.
func (p *Publisher) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	if it := p.take(m); it != nil {
		p.failed(it, err)
	}
}

// failed schedules a retry of it, or drops it.
func (p *Publisher) failed(it *item, err error) {
	if permanent(err) {
		p.dropOne(it, DropRejected, err)
		return
	}
	now := time.Now()
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		p.dropOne(it, DropClosed, err)
		return
	}
	if it.bo == nil {
		it.bo = backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(p.cfg.retryInitial),
			backoff.WithMaxInterval(p.cfg.retryMaxInterval),
			backoff.WithMaxElapsedTime(p.cfg.retryMaxElapsed))
	}
	d := it.bo.NextBackOff()
	if d == backoff.Stop {
		p.mu.Unlock()
		p.dropOne(it, DropRetriesExhausted, err)
		return
	}
	it.due = now.Add(d)
	subject, msgID, attempts := it.msg.Subject, it.msg.Header.Get(HeaderMsgID), it.attempts // it belongs to the sender once pushed
	heap.Push(&p.retries, it)
	p.mu.Unlock()

	p.stats.retried.Add(1)
	p.tel.retried.Add(context.Background(), 1)
	p.tel.logRetry(subject, msgID, attempts, d, err)
	p.signal() // the sender may sleep until a later retry
}

// permanent reports whether a publish error cannot be fixed by retrying.
func permanent(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) ||
		errors.Is(err, nats.ErrHeadersNotSupported)
}

func (p *Publisher) dropOne(it *item, reason string, err error) {
	n := it.count()
	switch reason {
	case DropRetriesExhausted:
		p.stats.exhausted.Add(n)
	case DropRejected:
		p.stats.rejected.Add(n)
	case DropClosed:
		p.stats.closedDrops.Add(n)
	case DropInvalid:
		p.stats.invalid.Add(n)
	}
	p.tel.drop(context.Background(), it.n.AggregateType, reason, n)
	if reason != DropClosed { // Close logs one summary line instead
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			err = fmt.Errorf("%w (no stream captures subject %s: run `snapshotter migrate` or natsnotice.EnsureStream)", err, it.msg.Subject)
		}
		p.tel.logDrop(reason, it, err)
	}
	p.settle(it, true)
}

// settle forgets it (published or dropped), frees its buffer slot and
// wakes the Flush calls that were waiting for it.
func (p *Publisher) settle(it *item, dropped bool) {
	p.mu.Lock()
	p.settleLocked(it, dropped)
	for _, m := range it.merged {
		p.settleLocked(m, dropped)
	}
	p.mu.Unlock()
}

func (p *Publisher) settleLocked(it *item, dropped bool) {
	p.held.Add(-1) // before waking Flush calls, so that Stats after Flush shows it gone
	if p.room != nil {
		close(p.room)
		p.room = nil
	}
	if dropped {
		for _, w := range p.waiters {
			if w.epoch >= it.epoch {
				w.dropped += int(1 + it.absorbed)
			}
		}
	}
	p.pending[it.epoch]--
	if p.pending[it.epoch] == 0 {
		delete(p.pending, it.epoch)
		p.wakeFlushersLocked()
	}
}

// wakeFlushersLocked releases the waiters whose epochs hold no notice.
func (p *Publisher) wakeFlushersLocked() {
	if len(p.waiters) == 0 {
		return
	}
	low := uint64(1<<64 - 1)
	for e := range p.pending {
		low = min(low, e)
	}
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		if w.epoch < low {
			close(w.done)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

// Flush waits until every notice Notify accepted before the call has been
// acknowledged by JetStream or dropped. It returns nil when they were all
// acknowledged, an error matching [ErrDropped] that says how many were
// dropped, or ctx's error (wrapped, with the count still pending) when ctx
// ends first. Notices accepted during the call are not waited for. After
// Close it returns an error matching [ErrClosed].
func (p *Publisher) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return fmt.Errorf("natsnotice: flush: %w", ErrClosed)
	}
	p.signal() // a lingering sender publishes at once
	dropped, held, err := p.waitFlush(ctx)
	switch {
	case err != nil && dropped > 0:
		return fmt.Errorf("natsnotice: flush: %w: %d notices dropped, %d still pending: %w", ErrDropped, dropped, held, err)
	case err != nil:
		return fmt.Errorf("natsnotice: flush: %d notices still pending: %w", held, err)
	case dropped > 0:
		return fmt.Errorf("natsnotice: flush: %w: %d notices were dropped", ErrDropped, dropped)
	}
	return nil
}

// waitFlush waits for every notice accepted so far to be settled. It
// returns how many of them were dropped meanwhile and, when ctx ends
// first, how many are still held and ctx's error.
func (p *Publisher) waitFlush(ctx context.Context) (dropped, held int, err error) {
	p.mu.Lock()
	w := &flushWaiter{epoch: p.epoch, done: make(chan struct{})}
	p.epoch++
	p.waiters = append(p.waiters, w)
	p.wakeFlushersLocked()
	p.mu.Unlock()

	select {
	case <-w.done:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-w.done:
		return w.dropped, 0, nil
	default:
	}
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	for e, n := range p.pending {
		if e <= w.epoch {
			held += n
		}
	}
	return w.dropped, held, context.Cause(ctx)
}

// Close stops accepting notices (Notify then returns an error matching
// [ErrClosed]), waits until every notice already accepted is acknowledged
// or dropped, or until ctx ends, then drops and counts (reason closed)
// whatever is left, stops its goroutine and waits for it.
//
// It returns nil when every accepted notice was published; otherwise an
// error matching [ErrDropped] saying how many were not (and matching ctx's
// error when ctx ended first). Close does not close the NATS connection,
// which belongs to the caller: close the repository first, then the
// publisher, then the connection. Close is idempotent: later calls wait
// for the first and return its result.
func (p *Publisher) Close(ctx context.Context) error {
	p.closeOnce.Do(func() { p.closeErr = p.close(ctx) })
	return p.closeErr
}

func (p *Publisher) close(ctx context.Context) error {
	p.closed.Store(true)
	p.mu.Lock() // after Notify calls that are enqueueing
	p.isShut = true
	p.mu.Unlock()

	before := p.stats.closedDrops.Load()
	p.signal() // a lingering sender publishes at once
	flushDropped, _, _ := p.waitFlush(ctx)

	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	// Fail what is still waiting for an ack (each goes through onErr and,
	// since we are stopping, is dropped), then sweep what never went out.
	p.js.CleanupPublisher()
	p.mu.Lock()
	var rest []*item
	for m, it := range p.sent {
		delete(p.sent, m)
		rest = append(rest, it)
		<-p.inflight
	}
	rest = append(rest, p.retries...)
	rest = append(rest, p.queue...)
	p.retries, p.queue = nil, nil
	p.mu.Unlock()
	byType := map[string]int64{}
	for _, it := range rest {
		p.stats.closedDrops.Add(it.count())
		byType[it.n.AggregateType] += it.count()
		p.settle(it, true)
	}
	for typ, n := range byType {
		p.tel.drop(context.Background(), typ, DropClosed, n)
	}
	if err := p.reg.Unregister(); err != nil {
		p.tel.logger.Warn("natsnotice: unregistering the buffered-notices gauge failed", telemetrykeys.LogKeyError, err)
	}

	unsent := p.stats.closedDrops.Load() - before
	if unsent > 0 {
		p.tel.logger.Warn("publisher closed with append notices unpublished; the snapshotter's sweep will catch up",
			LogKeyCount, unsent, telemetrykeys.LogKeyReason, DropClosed, telemetrykeys.LogKeyError, context.Cause(ctx))
	}
	switch total := int64(flushDropped) + unsent; {
	case total == 0:
		return nil
	case unsent > 0 && ctx.Err() != nil:
		return fmt.Errorf("natsnotice: close: %w: %d notices not published (%d still pending when the context ended: %w)",
			ErrDropped, total, unsent, context.Cause(ctx))
	default:
		return fmt.Errorf("natsnotice: close: %w: %d notices not published", ErrDropped, total)
	}
}

// Stats is a snapshot of a publisher's counters, for tests, demos and
// health endpoints. The same figures are exported as OpenTelemetry
// metrics.
type Stats struct {
	// Enqueued counts notices Notify accepted.
	Enqueued int64
	// Published counts notices JetStream acknowledged, Duplicates
	// included.
	Published int64
	// Duplicates counts acknowledgements that said JetStream already had
	// the message (same Nats-Msg-Id within the duplicate window).
	Duplicates int64
	// Retries counts failed attempts that were scheduled for a retry.
	Retries int64
	// Dropped counts every notice given up on; the Dropped* fields and
	// Invalid break it down by reason.
	Dropped                 int64
	DroppedBufferFull       int64
	DroppedRetriesExhausted int64
	DroppedRejected         int64
	DroppedClosed           int64
	// Invalid counts Notify calls with an append that cannot make a valid
	// notice.
	Invalid int64
	// Coalesced counts notices that went out inside the message of an
	// earlier notice of the same aggregate ([WithCoalescing]); Published
	// and Dropped count them as well, so Published - Coalesced messages
	// were acknowledged when nothing was dropped.
	Coalesced int64
	// Buffered is how many notices are held now (queued, in flight or
	// waiting to be retried); InFlight how many of them await an ack.
	Buffered int
	InFlight int
}

// Stats returns the publisher's counters. Safe to call at any time,
// including after Close.
func (p *Publisher) Stats() Stats {
	s := Stats{
		Enqueued:                p.stats.enqueued.Load(),
		Published:               p.stats.published.Load(),
		Duplicates:              p.stats.duplicates.Load(),
		Retries:                 p.stats.retried.Load(),
		DroppedBufferFull:       p.stats.bufferFull.Load(),
		DroppedRetriesExhausted: p.stats.exhausted.Load(),
		DroppedRejected:         p.stats.rejected.Load(),
		DroppedClosed:           p.stats.closedDrops.Load(),
		Invalid:                 p.stats.invalid.Load(),
		Coalesced:               p.stats.coalesced.Load(),
		Buffered:                int(p.held.Load()),
		InFlight:                len(p.inflight),
	}
	s.Dropped = s.DroppedBufferFull + s.DroppedRetriesExhausted + s.DroppedRejected + s.DroppedClosed + s.Invalid
	return s
}

// retryHeap orders notices waiting for a retry by due time.
type retryHeap []*item

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *retryHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *retryHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*h = old[:n-1]
	return it
}
