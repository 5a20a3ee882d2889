package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/evsnap/evsnap/internal/consumer"
	"github.com/evsnap/evsnap/internal/logattr"
	"github.com/evsnap/evsnap/internal/natsurl"
	"github.com/evsnap/evsnap/internal/policy"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationName is the OpenTelemetry scope of the worker's spans and
// metrics.
const InstrumentationName = "github.com/evsnap/evsnap/lib/snapshotter"

// ErrUnknownAggregateType: a notice or command named an aggregate type the
// worker was not given. Notices of it are terminated on their first
// delivery.
var ErrUnknownAggregateType = errors.New("snapshotter: unknown aggregate type")

// Type is an aggregate type the worker snapshots. Build one with [For].
type Type struct {
	name          string
	schemaVersion int
	policy        eventsource.Policy
	build         func(w *Worker) (rebuilder, error)
}

// WithPolicy returns t with another policy (e.g. one parsed from flags).
func (t Type) WithPolicy(p eventsource.Policy) Type {
	t.policy = p
	return t
}

// rebuilder loads one aggregate (snapshot + tail) and stores its snapshot
// at the head.
type rebuilder interface {
	rebuild(ctx context.Context, id uuid.UUID) (*eventsource.Snapshot, error)
	rebuildFrom(ctx context.Context, id uuid.UUID, snap *eventsource.Snapshot) (*eventsource.Snapshot, error)
	rebuildWith(ctx context.Context, id uuid.UUID, snap *eventsource.Snapshot, events iter.Seq2[eventsource.RecordedEvent, error]) (*eventsource.Snapshot, error)
	verify(ctx context.Context, id uuid.UUID) (VerifyResult, error)
	close(ctx context.Context) error
}

type repoRebuilder[T any, PT eventsource.AggregatePtr[T]] struct {
	repo *eventsource.Repository[T, PT]
	// For verify: the registry, and the store as it is (not through the
	// worker's batching).
	reg   *eventsource.Registry
	store eventsource.Store
}

func (r *repoRebuilder[T, PT]) rebuild(ctx context.Context, id uuid.UUID) (*eventsource.Snapshot, error) {
	a, err := r.repo.Load(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.repo.CreateSnapshot(ctx, a)
}

func (r *repoRebuilder[T, PT]) rebuildFrom(ctx context.Context, id uuid.UUID, snap *eventsource.Snapshot) (*eventsource.Snapshot, error) {
	a, err := r.repo.LoadFrom(ctx, id, snap)
	if err != nil {
		return nil, err
	}
	return r.repo.CreateSnapshot(ctx, a)
}

func (r *repoRebuilder[T, PT]) rebuildWith(ctx context.Context, id uuid.UUID, snap *eventsource.Snapshot, events iter.Seq2[eventsource.RecordedEvent, error]) (*eventsource.Snapshot, error) {
	a, err := r.repo.LoadFromEvents(ctx, id, snap, events)
	if err != nil {
		return nil, err
	}
	return r.repo.CreateSnapshot(ctx, a)
}

func (r *repoRebuilder[T, PT]) close(ctx context.Context) error { return r.repo.Close(ctx) }

// For returns the worker's description of aggregate type T, whose events
// reg decodes, snapshotted by p. The worker rebuilds T exactly as the
// application's repository loads it (latest snapshot of T's schema version
// plus the events after it) and stores a snapshot at the head.
func For[T any, PT eventsource.AggregatePtr[T]](reg *eventsource.Registry, p eventsource.Policy) Type {
	probe := PT(new(T))
	return Type{
		name:          probe.AggregateType(),
		schemaVersion: probe.SchemaVersion(),
		policy:        p,
		build: func(w *Worker) (rebuilder, error) {
			repo, err := eventsource.NewRepository[T, PT](w.store, reg,
				eventsource.WithSnapshotMode(eventsource.ModeManual),
				// The worker writes the snapshots of applications in
				// external mode: its writes count as such, not as manual.
				eventsource.WithReportedMode(eventsource.ModeExternal),
				eventsource.WithLogger(w.log),
				eventsource.WithTracerProvider(w.cfg.TracerProvider),
				eventsource.WithMeterProvider(w.cfg.MeterProvider),
				eventsource.WithMaxSnapshotBytes(w.cfg.MaxSnapshotBytes),
			)
			if err != nil {
				return nil, err
			}
			return &repoRebuilder[T, PT]{repo: repo, reg: reg, store: w.cfg.Store}, nil
		},
	}
}

type target struct {
	name          string
	schemaVersion int
	spec          eventsource.Policy
	policy        policy.Policy
	rb            rebuilder
	// behind is how many aggregates the last sweep found at least the
	// threshold behind (-1: no sweep has looked at this type yet).
	behind atomic.Int64
	// sweep is where this replica's marked sweep of the type stands (on a
	// store that is an eventsource.SweepStore); guarded by
	// Worker.sweepMu.
	sweep sweepState
	// attrs are the type's metric attribute sets, built once rather than
	// on every notice.
	attrs targetAttrs
}

// targetAttrs are an aggregate type's metric attribute sets.
type targetAttrs struct {
	typ       attribute.Set
	decisions map[string]metric.AddOption // by decision
	written   map[string]metric.AddOption // by source
}

func newTargetAttrs(typ string) targetAttrs {
	a := targetAttrs{typ: attribute.NewSet(attrType.String(typ)), decisions: map[string]metric.AddOption{}, written: map[string]metric.AddOption{}}
	for _, d := range []string{"due", "not_due"} {
		a.decisions[d] = metric.WithAttributeSet(attribute.NewSet(attrType.String(typ), attrDecision.String(d)))
	}
	for _, src := range []string{SourceNotice, SourceRead, SourceSweep, SourceRebuild} {
		a.written[src] = metric.WithAttributeSet(attribute.NewSet(attrType.String(typ), attrSource.String(src)))
	}
	return a
}

// decision counts a policy decision on t.
func (w *Worker) decision(ctx context.Context, t *target, decision string) {
	opt, ok := t.attrs.decisions[decision]
	if !ok {
		opt = metric.WithAttributes(attrType.String(t.name), attrDecision.String(decision))
	}
	w.m.decisions.Add(ctx, 1, opt)
}

// Worker consumes "events appended" notices and keeps snapshots current.
// Many replicas share one durable consumer; each processes its share. A
// Worker is safe for concurrent use; Run may be called once.
type Worker struct {
	cfg     Config
	log     *slog.Logger
	tracer  trace.Tracer
	targets map[string]*target
	m       workerMetrics

	// store is what the worker and its per-type repositories use:
	// cfg.Store, with its snapshot writes and reads batched (see
	// newWorkerStore).
	store eventsource.Store

	// ready: the durable consumer is bound and its loop runs (or, without
	// JetStream, Run runs). loop is the pull loop, once Run made it.
	ready atomic.Bool
	loop  atomic.Pointer[consumer.Loop]
	// lease lets one replica sweep at a time (nil: every replica sweeps).
	lease *sweepLease
	// sweepMu serializes sweep passes (the loop's and Sweep's).
	sweepMu sync.Mutex
	backlog backlog
	gauges  metric.Registration
	sum     summary
	running atomic.Bool
	closeMu sync.Mutex
	closed  bool
}

type workerMetrics struct {
	written   metric.Int64Counter
	decisions metric.Int64Counter
	rebuild   metric.Float64Histogram
	lag       metric.Float64Histogram
	swept     metric.Int64Counter
	writes    metric.Int64Histogram
	reads     metric.Int64Histogram
}

// New validates cfg and returns a worker for the given aggregate types. It
// does no I/O.
func New(cfg Config, types ...Type) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(types) == 0 {
		return nil, invalid("no aggregate types: pass snapshotter.For[YourAggregate](registry, policy)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	w := &Worker{
		cfg:     cfg,
		log:     cfg.Logger,
		tracer:  cfg.TracerProvider.Tracer(InstrumentationName),
		targets: map[string]*target{},
	}
	if err := w.initMetrics(); err != nil {
		return nil, fmt.Errorf("snapshotter: metrics: %w", err)
	}
	w.store = newWorkerStore(&w.cfg, w.m.writes, w.m.reads)
	policies := map[string]eventsource.Policy{}
	for _, t := range types {
		if t.build == nil {
			return nil, invalid("a Type must be built with snapshotter.For")
		}
		if _, dup := w.targets[t.name]; dup {
			return nil, invalid("aggregate type %s given twice", t.name)
		}
		if err := natsnotice.ValidateAggregateType(t.name); err != nil {
			return nil, invalid("%v", err)
		}
		if err := t.policy.Validate(); err != nil {
			return nil, fmt.Errorf("%w: policy for %s: %w", ErrInvalidConfig, t.name, err)
		}
		rb, err := t.build(w)
		if err != nil {
			return nil, fmt.Errorf("snapshotter: %s: %w", t.name, err)
		}
		tg := &target{name: t.name, schemaVersion: t.schemaVersion, spec: t.policy, policy: policy.Of(int64(t.policy.Threshold), t.policy.Milestones), rb: rb, attrs: newTargetAttrs(t.name)}
		tg.behind.Store(-1)
		tg.sweep.gen = -1
		w.targets[t.name] = tg
		policies[t.name] = t.policy
	}
	if cfg.JetStream != nil && cfg.SweepInterval > 0 && cfg.SweepLeaseTTL > 0 {
		w.lease = newSweepLease(cfg.JetStream, cfg.LeaseBucket, leaseKey(cfg.Consumer, w.targets), cfg.SweepLeaseTTL, w.log)
	}
	if err := w.initGauges(w.cfg.MeterProvider.Meter(InstrumentationName)); err != nil {
		return nil, fmt.Errorf("snapshotter: metrics: %w", err)
	}
	w.log.Debug("snapshotter configured", "policies", formatPolicies(policies))
	return w, nil
}

func (w *Worker) initMetrics() error {
	m := w.cfg.MeterProvider.Meter(InstrumentationName)
	var err error
	if w.m.written, err = m.Int64Counter("evsnap.worker.snapshot.written",
		metric.WithUnit("{snapshot}"), metric.WithDescription("Snapshots the worker stored, by source (notice, sweep, rebuild).")); err != nil {
		return err
	}
	if w.m.decisions, err = m.Int64Counter("evsnap.worker.decisions",
		metric.WithUnit("{aggregate}"), metric.WithDescription("Policy decisions on coalesced notices: due, not_due.")); err != nil {
		return err
	}
	if w.m.rebuild, err = m.Float64Histogram("evsnap.worker.rebuild.duration",
		metric.WithUnit("s"), metric.WithDescription("Time to load an aggregate and store its snapshot."),
		metric.WithExplicitBucketBoundaries(rebuildBuckets...)); err != nil {
		return err
	}
	if w.m.lag, err = m.Float64Histogram("evsnap.worker.snapshot.lag",
		metric.WithUnit("s"), metric.WithDescription("Time from the commit of the oldest coalesced save to its snapshot being stored."),
		metric.WithExplicitBucketBoundaries(lagBuckets...)); err != nil {
		return err
	}
	if w.m.swept, err = m.Int64Counter("evsnap.worker.sweep.aggregates",
		metric.WithUnit("{aggregate}"), metric.WithDescription("Aggregates the reconciliation sweep found behind and snapshotted.")); err != nil {
		return err
	}
	if w.m.writes, err = m.Int64Histogram("evsnap.worker.write.batch.size",
		metric.WithUnit("{snapshot}"), metric.WithDescription("Snapshots per batched write (one statement, one commit).")); err != nil {
		return err
	}
	if w.m.reads, err = m.Int64Histogram("evsnap.worker.read.batch.size",
		metric.WithUnit("{aggregate}"), metric.WithDescription("Aggregates whose snapshots one batched decision read (one statement) fetched.")); err != nil {
		return err
	}
	return nil
}

// Types returns the aggregate type names the worker handles.
func (w *Worker) Types() []string {
	out := make([]string, 0, len(w.targets))
	for n := range w.targets {
		out = append(out, n)
	}
	return out
}

var (
	attrType     = telemetrykeys.AttrAggregateType
	attrID       = telemetrykeys.AttrAggregateID
	attrSource   = attribute.Key("evsnap.source")
	attrDecision = attribute.Key("evsnap.decision")
)

// Sources of snapshots, the "source" attribute of evsnap.worker.snapshot.written.
const (
	SourceNotice = "notice"
	// SourceRead: the notices that led to the snapshot were all loads'
	// requests (notices with reason read: eventsource.WithLoadTrigger),
	// none an append's.
	SourceRead    = "read"
	SourceSweep   = "sweep"
	SourceRebuild = "rebuild"
)

// Run consumes notices until ctx ends, then drains: it stops pulling,
// finishes and settles what it already holds, and returns nil. It binds
// (creating or updating) the durable consumer first, retrying with backoff
// while NATS or the stream is unavailable, and rebinds after failures. The
// reconciliation sweep runs alongside when configured. Run closes the
// worker when it returns.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("snapshotter: Run called twice")
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = w.Close(cctx)
	}()
	var wg sync.WaitGroup
	if w.cfg.SummaryInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.summaryLoop(ctx)
		}()
	}
	if w.cfg.SweepInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.sweepLoop(ctx)
		}()
	}
	if w.lease != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.lease.run(ctx, w.logLease)
		}()
	}
	defer wg.Wait()
	if w.cfg.JetStream == nil {
		w.log.Info("no JetStream configured; only sweeping")
		w.ready.Store(true)
		<-ctx.Done()
		w.ready.Store(false)
		return nil
	}
	loop, err := consumer.New(consumer.Config{
		BatchSize:       w.cfg.BatchSize,
		Concurrency:     w.cfg.Concurrency,
		Linger:          w.cfg.Linger,
		MaxDeliveries:   w.cfg.MaxDeliveries,
		InProgressEvery: w.cfg.AckWait / 3,
		DrainTimeout:    w.cfg.DrainTimeout,
		Permanent:       permanent,
		SubjectPrefix:   w.cfg.SubjectPrefix,
		Connected:       func() bool { return w.cfg.JetStream.Conn().IsConnected() },
		Logger:          w.log,
		Meter:           w.cfg.MeterProvider.Meter(InstrumentationName),
	}, w.handle)
	if err != nil {
		return err
	}
	w.loop.Store(loop)
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 250 * time.Millisecond
	bo.MaxInterval = 10 * time.Second
	bo.MaxElapsedTime = 0
	nc := w.cfg.JetStream.Conn()
	for ctx.Err() == nil {
		var err error
		if !nc.IsConnected() {
			// Binding would only wait out its timeout.
			err = fmt.Errorf("not connected (%s)", nc.Status())
		} else if cons, berr := w.bindConsumer(ctx); berr != nil {
			err = berr
		} else {
			err = w.consume(ctx, loop, cons)
			if ctx.Err() != nil {
				break // drained
			}
			bo.Reset()
		}
		if ctx.Err() != nil {
			break
		}
		wait := bo.NextBackOff()
		if !nc.IsConnected() {
			w.log.Warn("NATS server unreachable; retrying", "nats", natsServers(nc), "status", nc.Status().String(),
				"stream", w.cfg.Stream, "consumer", w.cfg.Consumer, logattr.Seconds("retry_in", wait), "error", err)
		} else {
			w.log.Warn("notices unavailable; retrying", "nats", natsServers(nc), "stream", w.cfg.Stream, "consumer", w.cfg.Consumer,
				logattr.Seconds("retry_in", wait), "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// consume runs loop on the bound consumer cons, with the backlog sampler
// alongside, until the loop returns. The error is never nil while ctx is
// live.
func (w *Worker) consume(ctx context.Context, loop *consumer.Loop, cons jetstream.Consumer) error {
	var wg sync.WaitGroup
	if w.cfg.BacklogInterval > 0 {
		sctx, stop := context.WithCancel(ctx)
		defer func() { stop(); wg.Wait() }()
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.sampleBacklog(sctx, cons)
		}()
	}
	w.ready.Store(true)
	defer w.ready.Store(false)
	w.log.Info("consuming notices", "stream", w.cfg.Stream, "consumer", w.cfg.Consumer)
	if err := loop.Run(ctx, cons); err != nil {
		return err
	}
	return errors.New("message iterator closed")
}

// natsServers names the servers nc knows, credentials redacted.
func natsServers(nc *nats.Conn) string {
	if u := nc.ConnectedUrl(); u != "" {
		return natsurl.Redact(u)
	}
	servers := nc.Servers()
	for i, s := range servers {
		servers[i] = natsurl.Redact(s)
	}
	return strings.Join(servers, ",")
}

// ConsumerConfig returns the durable consumer's configuration.
func (w *Worker) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       w.cfg.Consumer,
		Description:   "evsnap snapshotter workers (shared by every replica)",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    w.cfg.MaxDeliveries + 5, // backstop; the worker terminates at MaxDeliveries, these cover deliveries it never settled (crashes)
		FilterSubject: w.cfg.SubjectPrefix + ".>",
		MaxAckPending: max(1000, 4*w.cfg.BatchSize*w.cfg.Concurrency),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

func (w *Worker) bindConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := w.cfg.JetStream.CreateOrUpdateConsumer(cctx, w.cfg.Stream, w.ConsumerConfig())
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("stream %s does not exist: run `snapshotter migrate` (natsnotice.EnsureStream): %w", w.cfg.Stream, err)
		}
		return nil, fmt.Errorf("bind consumer %s on stream %s: %w", w.cfg.Consumer, w.cfg.Stream, err)
	}
	return cons, nil
}

func permanent(err error) bool {
	return eventsource.IsPermanent(err) ||
		errors.Is(err, ErrUnknownAggregateType) ||
		errors.Is(err, eventsource.ErrAggregateNotFound) ||
		errors.Is(err, natsnotice.ErrMalformed)
}

// handle processes one aggregate's coalesced notices.
func (w *Worker) handle(ctx context.Context, g *consumer.Group) error {
	t, err := w.target(g.AggregateType)
	if err != nil {
		return err
	}
	ctx, span := w.tracer.Start(ctx, "snapshotter.Process", trace.WithLinks(g.Links...), trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	if span.IsRecording() { // the attributes cost nothing when tracing is off
		span.SetAttributes(attrType.String(g.AggregateType), attrID.String(g.AggregateID.String()),
			attribute.Int64("evsnap.notice.head_hint", g.HeadHint), attribute.Int("evsnap.notice.coalesced", g.Size()),
			attribute.Int("evsnap.notice.reads", g.Reads))
	}
	source := SourceNotice
	if g.Reads == g.Size() {
		source = SourceRead
	}
	written, err := w.process(ctx, t, g.AggregateID, hints{head: g.HeadHint, first: g.FirstHint, appended: g.EventTypes, readFirst: g.ReadFirst}, source)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	if written && !g.FirstCommit.IsZero() { // a load's request has no commit to lag behind
		lag := time.Since(g.FirstCommit).Seconds()
		w.m.lag.Record(ctx, lag, metric.WithAttributeSet(t.attrs.typ))
		w.sum.lag.record(lag)
	}
	return nil
}

// hints is what notices say about an aggregate: its head, the first
// version they announce and the event types appended, and readFirst, the
// highest first version among loads' requests (0: none). The zero value
// (the sweep's) knows nothing.
type hints struct {
	head, first int64
	appended    []string
	readFirst   int64
}

// process decides by the policy and, when due, rebuilds and stores the
// snapshot. A zero head hint means "ask the store".
//
// When the notices announce so many events that the aggregate is due even
// if its snapshot covers every version before them (a backlog, or a
// milestone), the snapshot and the events after it are read with the
// store's LoadSnapshotAndEvents (one round trip on a store that holds
// both) before the decision; the decision is then made exactly as below,
// and the events are dropped if it says no. When the notices announce so
// few events that the aggregate is not due even with no snapshot, nothing
// is read. Otherwise the snapshot is read for the decision (batched with
// other notices' where the store can), and the events only when a
// snapshot is due: most notices are not due.
//
// A load's request (h.readFirst > 0) is due whatever the policy says
// unless a snapshot at or past readFirst is stored by then (another
// worker, or an append's notice, got there first): the load that asked
// replayed from the snapshot before readFirst, and the application's
// load trigger, not the policy, judged that too many. Its snapshot and
// events are read in one round trip, as a backlog's: it is likely due.
func (w *Worker) process(ctx context.Context, t *target, id uuid.UUID, h hints, source string) (bool, error) {
	if h.readFirst == 0 && h.head > 0 && !t.policy.Due(policy.Input{AggregateType: t.name, HeadVersion: h.head, Appended: h.appended}) {
		// Not due even with no snapshot at all, and a policy only grows
		// more due as the snapshot falls further behind: no read can
		// change the answer. (Aggregates below their threshold, most of
		// them where few reach it, cost the store nothing.)
		w.decision(ctx, t, "not_due")
		return false, nil
	}
	if h.first > 0 && h.head >= h.first && (h.readFirst > 0 ||
		t.policy.Due(policy.Input{AggregateType: t.name, HeadVersion: h.head, SnapshotVersion: h.first - 1, Appended: h.appended})) {
		snap, events, err := w.store.LoadSnapshotAndEvents(ctx, t.name, id, t.schemaVersion)
		if err != nil {
			return false, fmt.Errorf("read snapshot and events of %s %s: %w", t.name, id, err)
		}
		if !w.due(ctx, t, snap, h) {
			return false, nil
		}
		_, err = w.observeRebuild(ctx, t, id, source, func() (*eventsource.Snapshot, error) { return t.rb.rebuildWith(ctx, id, snap, events) })
		return err == nil, err
	}
	snap, err := w.store.GetSnapshot(ctx, t.name, id, t.schemaVersion)
	if err != nil {
		return false, fmt.Errorf("read snapshot of %s %s: %w", t.name, id, err)
	}
	if h.head == 0 {
		if h.head, err = w.store.StreamVersion(ctx, t.name, id); err != nil {
			return false, fmt.Errorf("read head of %s %s: %w", t.name, id, err)
		}
	}
	if !w.due(ctx, t, snap, h) {
		return false, nil
	}
	_, err = w.observeRebuild(ctx, t, id, source, func() (*eventsource.Snapshot, error) { return t.rb.rebuildFrom(ctx, id, snap) })
	return err == nil, err
}

// due asks t's policy whether the aggregate, whose stored snapshot of t's
// schema version is snap (nil: none), needs a snapshot at h.head, and
// counts the decision. A load's request (h.readFirst) makes it due too
// while that snapshot is older than readFirst. Snapshots of other schema
// versions play no part: they are other versions of the application's to
// keep.
func (w *Worker) due(ctx context.Context, t *target, snap *eventsource.Snapshot, h hints) bool {
	var snapVersion int64
	if snap != nil {
		snapVersion = snap.Version
	}
	due := snapVersion < h.readFirst ||
		t.policy.Due(policy.Input{AggregateType: t.name, HeadVersion: h.head, SnapshotVersion: snapVersion, Appended: h.appended})
	if due {
		w.decision(ctx, t, "due")
	} else {
		w.decision(ctx, t, "not_due")
	}
	return due
}

// rebuild stores t's aggregate id's snapshot at its head, whatever the
// policy says.
func (w *Worker) rebuild(ctx context.Context, t *target, id uuid.UUID, source string) (*eventsource.Snapshot, error) {
	return w.observeRebuild(ctx, t, id, source, func() (*eventsource.Snapshot, error) { return t.rb.rebuild(ctx, id) })
}

// observeRebuild runs a rebuild and records its duration, the snapshot
// written and a debug line.
func (w *Worker) observeRebuild(ctx context.Context, t *target, id uuid.UUID, source string, do func() (*eventsource.Snapshot, error)) (*eventsource.Snapshot, error) {
	start := time.Now()
	s, err := do()
	if err != nil {
		return nil, err
	}
	w.m.rebuild.Record(ctx, time.Since(start).Seconds(), metric.WithAttributeSet(t.attrs.typ))
	opt, ok := t.attrs.written[source]
	if !ok {
		opt = metric.WithAttributes(attrType.String(t.name), attrSource.String(source))
	}
	w.m.written.Add(ctx, 1, opt)
	w.sum.written.Add(1)
	w.log.Debug("snapshot stored", telemetrykeys.LogKeyAggregateType, t.name, telemetrykeys.LogKeyAggregateID, id,
		telemetrykeys.LogKeyVersion, s.Version, "source", source)
	return s, nil
}

// SnapshotAggregate snapshots one aggregate at its head now, whatever the
// policy says, and returns the snapshot. Use it for repairs.
func (w *Worker) SnapshotAggregate(ctx context.Context, typ string, id uuid.UUID) (*eventsource.Snapshot, error) {
	t, err := w.target(typ)
	if err != nil {
		return nil, err
	}
	return w.rebuild(ctx, t, id, SourceRebuild)
}

// ReadyWithin is how recent the worker's last answered pull must be for it
// to be ready: three times the 5s pull expiry. An idle worker's pull is
// answered by the server's heartbeats and checked every 10s.
const ReadyWithin = consumer.FreshFetch

// Ready reports whether the worker is consuming notices: connected to
// NATS, bound to the durable consumer, and its pull answered (notices,
// or the server's heartbeats) within ReadyWithin, or busy with notices it
// fetched. Without JetStream it reports whether Run runs.
func (w *Worker) Ready() bool {
	ok, _ := w.readiness()
	return ok
}

// readiness is Ready with the reason when not.
func (w *Worker) readiness() (bool, string) {
	if !w.ready.Load() {
		if w.cfg.JetStream != nil && !w.cfg.JetStream.Conn().IsConnected() {
			return false, "NATS server unreachable"
		}
		return false, "not consuming notices: the durable consumer is not bound"
	}
	if w.cfg.JetStream == nil {
		return true, ""
	}
	if !w.cfg.JetStream.Conn().IsConnected() {
		return false, "NATS server unreachable"
	}
	if l := w.loop.Load(); l == nil || !l.Fetching(time.Now()) {
		return false, fmt.Sprintf("no pull from the consumer answered within %v", ReadyWithin)
	}
	return true, ""
}

// HealthHandler serves /healthz (the process is alive: always 200) and
// /readyz (200 while [Worker.Ready], 503 with the reason otherwise).
func (w *Worker) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ok, why := w.readiness(); !ok {
			rw.WriteHeader(http.StatusServiceUnavailable)
			_, _ = rw.Write([]byte("not ready: " + why + "\n"))
			return
		}
		_, _ = rw.Write([]byte("ready\n"))
	})
	return mux
}

// Close releases the per-type repositories. Run calls it; call it yourself
// when you only used the admin methods. It is idempotent.
func (w *Worker) Close(ctx context.Context) error {
	w.closeMu.Lock()
	defer w.closeMu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	var errs []error
	if w.gauges != nil {
		if err := w.gauges.Unregister(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range w.targets {
		if err := t.rb.close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
