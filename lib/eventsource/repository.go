package eventsource

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/policy"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
)

// AggregatePtr is the constraint tying an aggregate struct T to its pointer
// type, which implements [Aggregate]. Type inference fills it in:
// NewRepository[Account](...) gives a *Repository[Account, *Account].
type AggregatePtr[T any] interface {
	*T
	Aggregate
}

// Repository loads and saves aggregates of one type. Create it with
// [NewRepository]. It is safe for concurrent use; the aggregates it returns
// are not.
type Repository[T any, PT AggregatePtr[T]] struct {
	typ           string
	schemaVersion int

	store     Store
	reg       *Registry
	codec     Codec
	mode      SnapshotMode
	policy    policy.Policy
	notifier  AppendNotifier
	requester SnapshotRequester // the notifier's, when it is one
	trigger   *loadTrigger      // WithLoadTrigger; nil: off
	tel       *telemetry
	bg        *backgroundWriter
	maxState  int
	notifyLog logLimiter
	panicLog  logLimiter
	now       func() time.Time // the log limiters' clock

	closeOnce sync.Once
	mu        sync.RWMutex
	closed    bool
}

// NewRepository returns a repository for aggregates of type T whose
// events and snapshots are in store, with event types decoded by reg. (To
// keep snapshots in another store than the events, pass [Split].) It does
// no I/O. Without options it snapshots in [ModeSync] every 100 events;
// options configure snapshots. Invalid options and invalid combinations (a
// threshold below 1, external mode without a notifier, a threshold with
// snapshots off, an unknown mode) are reported here as errors matching
// [ErrInvalidOption], never after events are committed. So is an aggregate
// whose SchemaVersion is outside 1 to [MaxSchemaVersion] (that error also
// matches [ErrInvalidArgument]).
func NewRepository[T any, PT AggregatePtr[T]](store Store, reg *Registry, opts ...Option) (*Repository[T, PT], error) {
	if store == nil {
		return nil, invalid("nil store")
	}
	if reg == nil {
		return nil, invalid("nil registry")
	}
	probe := PT(new(T))
	typ, sv := probe.AggregateType(), probe.SchemaVersion()
	if typ == "" {
		return nil, invalid("%T.AggregateType() returned an empty name", probe)
	}
	if len(typ) > maxAggregateTypeLen {
		return nil, invalid("%T.AggregateType() returned %.40q…, longer than %d bytes", probe, typ, maxAggregateTypeLen)
	}
	if err := validateSchemaVersion(sv); err != nil {
		// Both an invalid option (a bad setup) and an invalid argument.
		return nil, fmt.Errorf("%w: %T.SchemaVersion(): %w", ErrInvalidOption, probe, err)
	}
	c := &config{}
	for _, o := range opts {
		if o == nil {
			return nil, invalid("nil option")
		}
		if err := o(c); err != nil {
			return nil, fmt.Errorf("new repository for %s: %w", typ, err)
		}
	}
	pol, err := c.resolve()
	if err != nil {
		return nil, fmt.Errorf("new repository for %s: %w", typ, err)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	c.logger = c.logger.With(telemetrykeys.LogKeyAggregateType, typ)
	tel, err := newTelemetry(c, typ)
	if err != nil {
		return nil, fmt.Errorf("new repository for %s: metrics: %w", typ, err)
	}
	r := &Repository[T, PT]{
		typ:           typ,
		schemaVersion: sv,
		store:         store,
		reg:           reg,
		codec:         reg.Codec(),
		mode:          c.mode,
		policy:        pol,
		notifier:      c.notifier,
		tel:           tel,
		maxState:      c.maxState,
		now:           time.Now,
	}
	if c.mode == ModeBackground {
		r.bg = newBackgroundWriter(store, tel, typ, c.bgWorkers, c.bgQueue)
	}
	r.requester, _ = c.notifier.(SnapshotRequester)
	if c.loadTrigger > 0 && c.mode != ModeManual && c.mode != ModeOff {
		r.trigger = newLoadTrigger(c.loadTrigger, c.loadInterval)
	}
	return r, nil
}

// checkID checks an aggregate id argument, as an error matching
// ErrInvalidArgument. (The type is r's, checked by NewRepository.)
func (r *Repository[T, PT]) checkID(id uuid.UUID) error {
	if id == uuid.Nil {
		return fmt.Errorf("%w: nil aggregate id for %s", ErrInvalidArgument, r.typ)
	}
	return nil
}

// AggregateType returns the type name of the aggregates r handles.
func (r *Repository[T, PT]) AggregateType() string { return r.typ }

// Mode returns the snapshot mode.
func (r *Repository[T, PT]) Mode() SnapshotMode { return r.mode }

// New returns a new, empty aggregate with the given id. It does no I/O; the
// aggregate exists in the store once a Save appends its first events.
func (r *Repository[T, PT]) New(id uuid.UUID) PT {
	a := PT(new(T))
	a.rootCore().id = id
	return a
}

// Load returns the aggregate with the given id at its latest version: from
// its snapshot plus the events after it when a usable snapshot exists,
// otherwise by replaying every event. It reads the snapshot of the
// aggregate's own schema version (the store keeps one per schema version;
// the other versions' are never read). One whose state does not decode, a
// stale one, or a snapshot store error (or, from a store that breaks its
// contract, a snapshot of another schema version)
// makes Load log a warning, count a fallback and replay; a snapshot never
// makes Load fail. A snapshot is stale when the stream's event at its
// version is missing (the stream is behind it) or has another id than the
// snapshot's EventID (another history): Load then also removes it with
// [SnapshotStore.DeleteStaleSnapshot], so the next due snapshot replaces
// it. An id with no events and no snapshot gives [ErrAggregateNotFound].
func (r *Repository[T, PT]) Load(ctx context.Context, id uuid.UUID) (PT, error) {
	return r.observeLoad(ctx, id, func(ctx context.Context) (PT, error) { return r.load(ctx, id) })
}

// LoadFrom is Load for a caller that has already read the aggregate's
// snapshot (nil for none) from the store, such as the snapshotter worker,
// which reads it to decide whether a snapshot is due: it skips reading it
// again. The snapshot is checked exactly as Load checks it. (In [ModeOff]
// the snapshot is not used: the load replays every event.)
func (r *Repository[T, PT]) LoadFrom(ctx context.Context, id uuid.UUID, snap *Snapshot) (PT, error) {
	return r.observeLoad(ctx, id, func(ctx context.Context) (PT, error) {
		if snap != nil && (snap.AggregateID != id || snap.AggregateType != r.typ) {
			return nil, fmt.Errorf("load %s %s: %w: the snapshot given belongs to %s %s", r.typ, id, ErrInvalidArgument, snap.AggregateType, snap.AggregateID)
		}
		if err := r.checkID(id); err != nil {
			return nil, err
		}
		return r.loadFrom(ctx, id, snap, nil)
	})
}

// LoadFromEvents is Load for a caller that has already read what a load
// needs with [Store.LoadSnapshotAndEvents]: the aggregate's snapshot (nil
// for none) and the events that follow it, exactly as
// LoadSnapshotAndEvents returns them for this repository's schema version
// (from the snapshot's own version when its schema version matches,
// otherwise from version 1). The snapshotter worker uses it to read a
// backlog aggregate in one round trip and decide from the snapshot before
// replaying. The snapshot is checked exactly as Load checks it; events that
// do not fit it (a snapshot whose state does not decode, or a stale one)
// are set aside and the stream read again in full.
func (r *Repository[T, PT]) LoadFromEvents(ctx context.Context, id uuid.UUID, snap *Snapshot, events iter.Seq2[RecordedEvent, error]) (PT, error) {
	return r.observeLoad(ctx, id, func(ctx context.Context) (PT, error) {
		if snap != nil && (snap.AggregateID != id || snap.AggregateType != r.typ) {
			return nil, fmt.Errorf("load %s %s: %w: the snapshot given belongs to %s %s", r.typ, id, ErrInvalidArgument, snap.AggregateType, snap.AggregateID)
		}
		if events == nil {
			return nil, fmt.Errorf("load %s %s: %w: no events given (use LoadFrom to read them)", r.typ, id, ErrInvalidArgument)
		}
		if err := r.checkID(id); err != nil {
			return nil, err
		}
		return r.loadFrom(ctx, id, snap, events)
	})
}

// observeLoad wraps a load in its span and records its metrics. What
// instrumentation that does not record would drop (the clock reads of a
// duration nobody collects, attributes of a span that is not recorded)
// is not built.
func (r *Repository[T, PT]) observeLoad(ctx context.Context, id uuid.UUID, load func(context.Context) (PT, error)) (PT, error) {
	tel := r.tel
	timed := tel.loadDuration.Enabled(ctx)
	var start time.Time
	if timed {
		start = time.Now()
	}
	ctx, span := tel.start(ctx, "eventsource.Load")
	defer span.End()
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(telemetrykeys.AttrAggregateType.String(r.typ), telemetrykeys.AttrAggregateID.String(id.String()))
	}
	a, err := load(ctx)
	if err != nil {
		failSpan(span, err)
		return nil, err
	}
	c := a.rootCore()
	if recording {
		span.SetAttributes(telemetrykeys.AttrVersion.Int64(c.version), telemetrykeys.AttrEventsReplayed.Int64(c.replayed), telemetrykeys.AttrSnapshotUsed.Bool(c.fromSnapshot))
	}
	used := 0
	if c.fromSnapshot {
		used = 1
	}
	if timed {
		tel.loadDuration.Record(ctx, time.Since(start).Seconds(), tel.loadRecord[used]...)
	}
	if tel.eventsReplayed.Enabled(ctx) {
		tel.eventsReplayed.Add(ctx, c.replayed, tel.loadAdd[used]...)
	}
	r.askIfReplayedEnough(ctx, a)
	return a, nil
}

// load reads the snapshot and the events a load needs with the store's
// LoadSnapshotAndEvents (in ModeOff, only the events). A failed read is a
// logged, counted fallback to a full replay: the events alone are read
// again, and only their failure fails the load.
func (r *Repository[T, PT]) load(ctx context.Context, id uuid.UUID) (PT, error) {
	if err := r.checkID(id); err != nil {
		return nil, err
	}
	if r.mode == ModeOff {
		return r.loadFrom(ctx, id, nil, nil)
	}
	sctx, span := r.tel.startChild(ctx, "eventsource.LoadSnapshotAndEvents")
	snap, events, err := r.store.LoadSnapshotAndEvents(sctx, r.typ, id, r.schemaVersion)
	if err != nil {
		failSpan(span, err)
		span.End()
		r.tel.logger.WarnContext(ctx, "snapshot and events read failed; replaying all events",
			telemetrykeys.LogKeyAggregateID, id, telemetrykeys.LogKeyReason, telemetrykeys.FallbackStoreError, telemetrykeys.LogKeyError, err)
		r.tel.fallback(ctx, r.typ, telemetrykeys.FallbackStoreError)
		return r.loadFrom(ctx, id, nil, nil)
	}
	span.End()
	return r.loadFrom(ctx, id, snap, events)
}

// loadFrom builds the aggregate from snap (nil for none) and its events.
// events, when not nil, are what LoadSnapshotAndEvents returned: from the
// snapshot's version if the snapshot has this aggregate's schema version,
// else from version 1. Otherwise the events are read here. The tail is
// read from the snapshot's own version, so that the stream's event there
// is checked against the snapshot's EventID: a stale snapshot (the stream
// does not reach it, or it was built from another history) is replaced by
// a replay and removed from the store.
func (r *Repository[T, PT]) loadFrom(ctx context.Context, id uuid.UUID, snap *Snapshot, events iter.Seq2[RecordedEvent, error]) (PT, error) {
	if r.mode == ModeOff {
		snap, events = nil, nil // events from a snapshot's version would be too few
	}
	a := r.New(id)
	c := a.rootCore()
	r.useSnapshot(ctx, a, snap)
	if c.fromSnapshot {
		if events == nil {
			events = r.store.ReadEvents(ctx, r.typ, id, c.version-1)
		}
		stale, err := applyEvents(r.reg, a, events, true)
		if err != nil {
			return nil, err
		}
		if stale == "" {
			return a, nil
		}
		r.tel.logger.WarnContext(ctx, "snapshot is stale: "+stale+"; replaying all events and removing it",
			telemetrykeys.LogKeyAggregateID, id, telemetrykeys.LogKeySnapshotVer, snap.Version, telemetrykeys.LogKeyReason, telemetrykeys.FallbackStale)
		r.tel.fallback(ctx, r.typ, telemetrykeys.FallbackStale)
		r.deleteStale(ctx, snap)
		a, events = r.New(id), nil // snapshotVersion 0: the next due save replaces it
		c = a.rootCore()
	} else if snap != nil && snap.SchemaVersion == r.schemaVersion {
		events = nil // they start at a snapshot whose state did not decode
	}
	if events == nil {
		events = r.store.ReadEvents(ctx, r.typ, id, 0)
	}
	if _, err := applyEvents(r.reg, a, events, false); err != nil {
		return nil, err
	}
	if c.version == 0 {
		return nil, fmt.Errorf("load %s %s: %w", r.typ, id, ErrAggregateNotFound)
	}
	return a, nil
}

// applyEvents applies events to a, checking that versions are contiguous.
// With fromSnapshot, a holds a snapshot's state and the first event must
// be the stream's event at a's current version (the snapshot's) with the
// id the snapshot recorded (c.lastEventID); it is not applied. When it is
// not, stale says why (and nothing is applied); "" means the snapshot is
// tied to the stream.
func applyEvents(reg *Registry, a Aggregate, events iter.Seq2[RecordedEvent, error], fromSnapshot bool) (stale string, err error) {
	p := &replay{reg: reg, a: a, c: a.rootCore(), checked: !fromSnapshot}
	events(p.yield)
	switch {
	case p.err != nil:
		return "", p.err
	case p.stale != "":
		return p.stale, nil
	case !p.checked:
		return fmt.Sprintf("the stream has no event at v%d", p.c.version), nil
	}
	return "", nil
}

// replay is applyEvents' state, and its yield the function it gives the
// events' iterator. (A range loop over the iterator would put each
// variable the loop changes on the heap by itself: five allocations per
// load instead of two.)
type replay struct {
	reg     *Registry
	a       Aggregate
	c       *core
	checked bool   // the snapshot's event was found, or there is no snapshot
	stale   string // why the snapshot is stale; "" if it is not
	err     error
}

func (p *replay) yield(rec RecordedEvent, err error) bool {
	c := p.c
	if err != nil {
		p.err = fmt.Errorf("load %s %s: read events after v%d: %w", p.a.AggregateType(), c.id, c.version, err)
		return false
	}
	if !p.checked {
		if rec.Version != c.version {
			p.stale = fmt.Sprintf("the stream has no event at v%d", c.version)
			return false
		}
		if rec.ID != c.lastEventID {
			p.stale = fmt.Sprintf("the stream's event at v%d is %s, not the snapshot's %s", c.version, rec.ID, c.lastEventID)
			return false
		}
		p.checked = true
		return true
	}
	if rec.Version != c.version+1 {
		p.err = fmt.Errorf("load %s %s: %w: got v%d after v%d", p.a.AggregateType(), c.id, ErrCorruptStream, rec.Version, c.version)
		return false
	}
	e, err := p.reg.DecodeRecorded(&rec)
	if err != nil {
		p.err = fmt.Errorf("load %s %s: %w", p.a.AggregateType(), c.id, err)
		return false
	}
	p.a.applyEvent(e)
	c.lastEventID = rec.ID
	c.replayed++
	return true
}

// deleteStale removes the stale snapshot snap from the store, unless it
// has changed since it was read. Failing to is logged and counted, never
// an error: the load goes on from the events, and the next load tries
// again.
func (r *Repository[T, PT]) deleteStale(ctx context.Context, snap *Snapshot) {
	ctx, span := r.tel.startChild(ctx, "eventsource.DeleteStaleSnapshot")
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(telemetrykeys.AttrAggregateType.String(snap.AggregateType), telemetrykeys.AttrAggregateID.String(snap.AggregateID.String()),
			telemetrykeys.AttrVersion.Int64(snap.Version))
	}
	deleted, err := r.store.DeleteStaleSnapshot(ctx, *snap)
	result := telemetrykeys.StaleDeleted
	switch {
	case err != nil:
		failSpan(span, err)
		r.tel.logger.WarnContext(ctx, "stale snapshot not removed; the next load tries again",
			telemetrykeys.LogKeyAggregateID, snap.AggregateID, telemetrykeys.LogKeySnapshotVer, snap.Version, telemetrykeys.LogKeyError, err)
		result = telemetrykeys.StaleDeleteFailed
	case !deleted:
		result = telemetrykeys.StaleAlreadyReplaced
	}
	span.SetAttributes(attribute.String("evsnap.snapshot.stale_delete", result))
	r.tel.staleDelete(ctx, r.typ, result)
}

// useSnapshot restores a from snap if it is usable (nil is "none").
func (r *Repository[T, PT]) useSnapshot(ctx context.Context, a PT, snap *Snapshot) {
	c := a.rootCore()
	log := r.tel.logger
	switch {
	case snap == nil:
		return
	case snap.SchemaVersion != r.schemaVersion:
		log.WarnContext(ctx, "snapshot schema version differs from the aggregate's; replaying all events",
			telemetrykeys.LogKeyAggregateID, c.id, telemetrykeys.LogKeySnapshotVer, snap.Version, telemetrykeys.LogKeySchemaVersion, snap.SchemaVersion,
			"want_schema_version", r.schemaVersion, telemetrykeys.LogKeyReason, telemetrykeys.FallbackSchemaMismatch)
		r.tel.fallback(ctx, r.typ, telemetrykeys.FallbackSchemaMismatch)
		return
	case snap.Version < 1:
		log.WarnContext(ctx, "snapshot has an invalid version; replaying all events",
			telemetrykeys.LogKeyAggregateID, c.id, telemetrykeys.LogKeySnapshotVer, snap.Version, telemetrykeys.LogKeyReason, telemetrykeys.FallbackDecodeError)
		r.tel.fallback(ctx, r.typ, telemetrykeys.FallbackDecodeError)
		return
	}
	if err := a.restoreState(r.codec, snap.State); err != nil {
		a.resetState()
		log.WarnContext(ctx, "snapshot state does not decode; replaying all events",
			telemetrykeys.LogKeyAggregateID, c.id, telemetrykeys.LogKeySnapshotVer, snap.Version, telemetrykeys.LogKeyReason, telemetrykeys.FallbackDecodeError, telemetrykeys.LogKeyError, err)
		r.tel.fallback(ctx, r.typ, telemetrykeys.FallbackDecodeError)
		return
	}
	c.version = snap.Version
	c.lastEventID = snap.EventID
	c.snapshotVersion = snap.Version
	c.fromSnapshot = true
}

// Save appends the aggregate's raised events with an optimistic
// concurrency check against the version it was loaded at. If another save
// got there first, Save returns a *ConflictError (errors.Is
// ErrConcurrencyConflict) and commits nothing; reload and retry. With no
// raised events Save does nothing.
//
// After the append, depending on the mode, Save writes a snapshot (sync),
// queues one (background) or notifies (external). Failures there are
// logged and counted and never returned: the events are committed.
func (r *Repository[T, PT]) Save(ctx context.Context, a PT) error {
	if due, err := r.saveDue(a); !due {
		return err
	}
	c := a.rootCore()
	ctx, span := r.tel.start(ctx, "eventsource.Save")
	defer span.End()
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(telemetrykeys.AttrAggregateType.String(r.typ), telemetrykeys.AttrAggregateID.String(c.id.String()),
			telemetrykeys.AttrEventsAppended.Int(len(c.pending)))
	}
	res, err := r.commit(ctx, a)
	if err != nil {
		failSpan(span, err)
		return err
	}
	if recording {
		span.SetAttributes(telemetrykeys.AttrVersion.Int64(res.LastVersion))
	}
	return nil
}

// saveDue reports whether Save has events of a to append; when it has
// none, or must refuse (a nil aggregate, a closed repository), err says
// what Save returns.
func (r *Repository[T, PT]) saveDue(a PT) (bool, error) {
	if a == nil {
		return false, fmt.Errorf("save %s: %w: nil aggregate", r.typ, ErrInvalidArgument)
	}
	c := a.rootCore()
	if len(c.pending) == 0 {
		return false, nil
	}
	r.mu.RLock()
	closed := r.closed
	r.mu.RUnlock()
	if closed {
		return false, fmt.Errorf("save %s %s: %w", r.typ, c.id, ErrClosed)
	}
	return true, nil
}

// commit appends a's pending events and does what follows a committed
// append (afterCommit): Save without its instrumentation.
func (r *Repository[T, PT]) commit(ctx context.Context, a PT) (AppendResult, error) {
	res, types, err := r.append(ctx, a)
	if err != nil {
		return res, err
	}
	r.afterCommit(ctx, a, res, types)
	return res, nil
}

// afterCommit does what follows a committed append: the snapshot a due
// policy asks for (sync, background) or the notice (external). Nothing it
// meets reaches the caller, not even a panic in a notifier, a codec or a
// snapshot store: the events are committed, and a caller who saw a failure
// might retry the command and append it twice. Failures are logged (at
// most one line per interval for each kind) and counted.
func (r *Repository[T, PT]) afterCommit(ctx context.Context, a PT, res AppendResult, types []string) {
	c := a.rootCore()
	defer func() {
		if p := recover(); p != nil {
			r.recovered(ctx, p, "panicked after a committed save; the save succeeded", c.id, res.LastVersion)
		}
	}()
	switch r.mode {
	case ModeSync, ModeBackground:
		in := policy.Input{AggregateType: r.typ, HeadVersion: c.version, SnapshotVersion: c.snapshotVersion, Appended: types}
		if r.policy.Due(in) {
			r.takeSnapshot(ctx, a, "a committed save")
		}
	case ModeExternal:
		err := r.notifier.Notify(ctx, Appended{
			AggregateType: r.typ, AggregateID: c.id,
			FirstVersion: res.FirstVersion, LastVersion: res.LastVersion,
			EventTypes: types, CommittedAt: res.CommittedAt,
		})
		if err != nil {
			// During an outage every save fails to notify: log the first
			// failure and then one line per interval with the count.
			if suppressed, ok := r.notifyLog.allow(r.now()); ok {
				r.tel.logger.WarnContext(ctx, "append notice not sent; the snapshotter's sweep will catch up",
					telemetrykeys.LogKeyAggregateID, c.id, telemetrykeys.LogKeyVersion, res.LastVersion, telemetrykeys.LogKeyError, err, "suppressed_since_last", suppressed)
			}
			r.tel.failure(ctx, r.typ, r.mode, telemetrykeys.FailureNotify)
		}
	}
}

// recovered logs (at most one line per interval, with the stack) and
// counts p, a panic recovered after a committed save or a load, which
// succeeded: msg says so.
func (r *Repository[T, PT]) recovered(ctx context.Context, p any, msg string, id uuid.UUID, version int64) {
	if suppressed, ok := r.panicLog.allow(r.now()); ok {
		r.tel.logger.ErrorContext(ctx, msg,
			telemetrykeys.LogKeyAggregateID, id, telemetrykeys.LogKeyVersion, version, telemetrykeys.LogKeyMode, r.mode,
			telemetrykeys.LogKeyError, fmt.Sprint(p), "stack", string(debug.Stack()), "suppressed_since_last", suppressed)
	}
	r.tel.failure(ctx, r.typ, r.mode, telemetrykeys.FailurePanic)
}

func (r *Repository[T, PT]) append(ctx context.Context, a PT) (AppendResult, []string, error) {
	c := a.rootCore()
	expected := c.version - int64(len(c.pending))
	md := MetadataFromContext(ctx)
	batch := make([]NewEvent, len(c.pending))
	types := make([]string, len(c.pending))
	for i, p := range c.pending {
		payload, err := r.reg.Encode(p.event)
		if err != nil {
			return AppendResult{}, nil, fmt.Errorf("save %s %s: %w", r.typ, c.id, err)
		}
		types[i] = p.event.EventType()
		batch[i] = NewEvent{
			ID: p.id, Type: types[i], Payload: payload, Event: p.event,
			Metadata: md.Clone(), OccurredAt: p.occurredAt,
		}
	}
	res, err := r.store.Append(ctx, r.typ, c.id, ExpectedVersion(expected), batch)
	if err != nil {
		return AppendResult{}, nil, fmt.Errorf("save %s %s: %w", r.typ, c.id, err)
	}
	if res.LastVersion != c.version {
		// The store assigned versions other than the ones the aggregate
		// counted: a broken store. The events are committed, so report it
		// loudly rather than pretend.
		return res, nil, fmt.Errorf("save %s %s: %w: store committed v%d-v%d, aggregate expected v%d-v%d",
			r.typ, c.id, ErrCorruptStream, res.FirstVersion, res.LastVersion, expected+1, c.version)
	}
	c.lastEventID = batch[len(batch)-1].ID
	c.pending = c.pending[:0]
	return res, types, nil
}

// takeSnapshot takes the snapshot of a that a due policy (after a save)
// or a load trigger (after a load) asked for: it stores it in ModeSync
// and queues it in ModeBackground, and reports whether it did. It never
// returns an error: the save or the load already succeeded; after says
// which, in the log lines of its failures.
func (r *Repository[T, PT]) takeSnapshot(ctx context.Context, a PT, after string) bool {
	c := a.rootCore()
	snap, err := r.buildSnapshot(a)
	if err != nil {
		r.tel.logger.ErrorContext(ctx, "snapshot not taken after "+after+": state does not encode",
			telemetrykeys.LogKeyAggregateID, c.id, telemetrykeys.LogKeyVersion, c.version, telemetrykeys.LogKeyMode, r.mode, telemetrykeys.LogKeyError, err)
		r.tel.failure(ctx, r.typ, r.mode, telemetrykeys.FailureEncode)
		return false
	}
	switch r.mode {
	case ModeSync:
		if _, err := r.writeSnapshot(ctx, snap); err != nil {
			r.tel.logger.WarnContext(ctx, "snapshot not stored after "+after,
				telemetrykeys.LogKeyAggregateID, c.id, telemetrykeys.LogKeyVersion, c.version, telemetrykeys.LogKeyMode, r.mode, telemetrykeys.LogKeyError, err)
			r.tel.failure(ctx, r.typ, r.mode, telemetrykeys.FailureStore)
			return false
		}
	case ModeBackground:
		if !r.bg.enqueue(ctx, snap) {
			return false
		}
	}
	c.snapshotVersion = snap.Version
	return true
}

// buildSnapshot captures a's state now, as bytes: nothing a caller does to
// the aggregate later can leak into it. The encoded state must decode back
// into the state type, so a snapshot that cannot be read is never stored.
func (r *Repository[T, PT]) buildSnapshot(a PT) (Snapshot, error) {
	c := a.rootCore()
	state, err := a.exportState(r.codec)
	if err != nil {
		return Snapshot{}, fmt.Errorf("encode state of %s %s v%d: %w", r.typ, c.id, c.version, err)
	}
	if c.lastEventID == uuid.Nil {
		return Snapshot{}, fmt.Errorf("%w: %s %s v%d has no stored event id at its version to tie a snapshot to (built with LoadFromHistory?)",
			ErrInvalidArgument, r.typ, c.id, c.version)
	}
	if len(state) == 0 {
		return Snapshot{}, fmt.Errorf("encode state of %s %s v%d: codec returned no bytes", r.typ, c.id, c.version)
	}
	if len(state) > r.maxState {
		return Snapshot{}, fmt.Errorf("%w: state of %s %s v%d is %d bytes, above the %d-byte maximum (WithMaxSnapshotBytes)",
			ErrSnapshotTooLarge, r.typ, c.id, c.version, len(state), r.maxState)
	}
	if err := PT(new(T)).restoreState(r.codec, state); err != nil {
		return Snapshot{}, fmt.Errorf("encoded state of %s %s v%d does not decode back: %w", r.typ, c.id, c.version, err)
	}
	return Snapshot{
		AggregateID:   c.id,
		AggregateType: r.typ,
		Version:       c.version,
		SchemaVersion: r.schemaVersion,
		EventID:       c.lastEventID,
		State:         state,
		CreatedAt:     nowMicro(),
	}, nil
}

func (r *Repository[T, PT]) writeSnapshot(ctx context.Context, s Snapshot) (bool, error) {
	return saveSnapshotTraced(ctx, r.tel, r.store, r.mode, s)
}

func saveSnapshotTraced(ctx context.Context, tel *telemetry, store SnapshotStore, mode SnapshotMode, s Snapshot) (bool, error) {
	mode = tel.writeMode(mode)
	ctx, span := tel.startChild(ctx, "eventsource.SaveSnapshot")
	defer span.End()
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(telemetrykeys.AttrAggregateType.String(s.AggregateType), telemetrykeys.AttrAggregateID.String(s.AggregateID.String()),
			telemetrykeys.AttrVersion.Int64(s.Version), telemetrykeys.AttrMode.String(string(mode)))
	}
	stored, err := store.SaveSnapshot(ctx, s)
	if err != nil {
		failSpan(span, err)
		return false, err
	}
	counter := tel.snapshotsSkipped
	if stored {
		counter = tel.snapshotsWritten
	}
	if counter.Enabled(ctx) {
		counter.Add(ctx, 1, metric.WithAttributes(telemetrykeys.AttrAggregateType.String(s.AggregateType), telemetrykeys.AttrMode.String(string(mode))))
	}
	if recording {
		span.SetAttributes(attribute.Bool("evsnap.snapshot.stored", stored))
	}
	return stored, nil
}

// CreateSnapshot snapshots the aggregate at its current, saved version, in
// every mode but ModeOff (it is how ModeManual snapshots), and returns the
// snapshot. An
// aggregate with unsaved events is refused: a snapshot must never contain
// events that are not committed. If the store already holds a newer
// snapshot it keeps it; CreateSnapshot still returns the one it built.
// Unlike snapshots taken by Save, its errors are returned.
func (r *Repository[T, PT]) CreateSnapshot(ctx context.Context, a PT) (*Snapshot, error) {
	if a == nil {
		return nil, fmt.Errorf("create snapshot of %s: %w: nil aggregate", r.typ, ErrInvalidArgument)
	}
	c := a.rootCore()
	ctx, span := r.tel.start(ctx, "eventsource.CreateSnapshot")
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(telemetrykeys.AttrAggregateType.String(r.typ), telemetrykeys.AttrAggregateID.String(c.id.String()), telemetrykeys.AttrVersion.Int64(c.version))
	}
	fail := func(err error) (*Snapshot, error) {
		failSpan(span, err)
		return nil, err
	}
	switch {
	case r.mode == ModeOff:
		return fail(fmt.Errorf("create snapshot of %s %s: %w: the repository's snapshot mode is %q", r.typ, c.id, ErrInvalidArgument, ModeOff))
	case len(c.pending) > 0:
		return fail(fmt.Errorf("create snapshot of %s %s: %w: %d unsaved events; save first", r.typ, c.id, ErrInvalidArgument, len(c.pending)))
	case c.version == 0:
		return fail(fmt.Errorf("create snapshot of %s %s: %w: the aggregate has no events", r.typ, c.id, ErrInvalidArgument))
	}
	snap, err := r.buildSnapshot(a)
	if err != nil {
		return fail(fmt.Errorf("create snapshot: %w", err))
	}
	if _, err := r.writeSnapshot(ctx, snap); err != nil {
		return fail(fmt.Errorf("create snapshot of %s %s v%d: %w", r.typ, c.id, c.version, err))
	}
	c.snapshotVersion = snap.Version
	return &snap, nil
}

// Exists reports whether the aggregate has any stored events.
func (r *Repository[T, PT]) Exists(ctx context.Context, id uuid.UUID) (bool, error) {
	if err := r.checkID(id); err != nil {
		return false, err
	}
	v, err := r.store.StreamVersion(ctx, r.typ, id)
	if err != nil {
		return false, fmt.Errorf("exists %s %s: %w", r.typ, id, err)
	}
	return v > 0, nil
}

// AwaitPendingSnapshots waits until every background snapshot queued so far
// (and any queued while it waits) is written or has failed, and returns how
// many were pending when it was called. It returns ctx's error if ctx ends
// first. In ModeExternal it calls the notifier's Flush instead and returns
// 0. In the other modes it returns 0 at once.
func (r *Repository[T, PT]) AwaitPendingSnapshots(ctx context.Context) (int, error) {
	if r.mode == ModeExternal {
		return 0, r.notifier.Flush(ctx)
	}
	if r.bg == nil {
		return 0, nil
	}
	return r.bg.await(ctx)
}

// Close stops the repository: later saves fail with [ErrClosed], and
// queued background snapshots are written until ctx ends, after which the
// ones still in flight are cancelled. Close waits for every goroutine the
// repository started and is idempotent. It does not close the stores or
// the notifier, which the caller owns: close the repository first, then
// the notifier (natsnotice.Publisher.Close flushes), then the connection.
func (r *Repository[T, PT]) Close(ctx context.Context) error {
	var err error
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		if r.bg != nil {
			err = r.bg.close(ctx)
		}
	})
	return err
}

// backgroundWriter writes snapshots from a bounded pool of goroutines.
type backgroundWriter struct {
	store SnapshotStore
	tel   *telemetry
	typ   string
	jobs  chan bgJob

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	pending  int
	idle     chan struct{} // closed while pending == 0
	panicLog logLimiter
}

type bgJob struct {
	snap Snapshot
	link trace.Link
}

func newBackgroundWriter(store SnapshotStore, tel *telemetry, typ string, workers, queue int) *backgroundWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &backgroundWriter{
		store: store, tel: tel, typ: typ,
		jobs: make(chan bgJob, queue),
		ctx:  ctx, cancel: cancel,
		idle: make(chan struct{}),
	}
	close(w.idle)
	w.wg.Add(workers)
	for range workers {
		go w.run()
	}
	return w
}

// enqueue queues s without blocking and reports whether it was queued.
func (w *backgroundWriter) enqueue(ctx context.Context, s Snapshot) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	reason := ""
	if w.closed {
		reason = telemetrykeys.FailureRepoClosed
	} else {
		select {
		case w.jobs <- bgJob{snap: s, link: trace.LinkFromContext(ctx)}:
			if w.pending == 0 {
				w.idle = make(chan struct{})
			}
			w.pending++
			return true
		default:
			reason = telemetrykeys.FailureQueueFull
		}
	}
	w.tel.logger.WarnContext(ctx, "background snapshot dropped; the next due save (or load trigger) takes one",
		telemetrykeys.LogKeyAggregateID, s.AggregateID, telemetrykeys.LogKeyVersion, s.Version, telemetrykeys.LogKeyReason, reason)
	w.tel.failure(ctx, w.typ, ModeBackground, reason)
	return false
}

func (w *backgroundWriter) run() {
	defer w.wg.Done()
	for job := range w.jobs {
		w.write(job)
		w.mu.Lock()
		w.pending--
		if w.pending == 0 {
			close(w.idle)
		}
		w.mu.Unlock()
	}
}

func (w *backgroundWriter) write(job bgJob) {
	ctx, span := w.tel.start(w.ctx, "eventsource.BackgroundSnapshot", trace.WithLinks(job.link))
	defer span.End()
	s := job.snap
	defer func() {
		// A panicking store must not take the process down with it.
		if p := recover(); p != nil {
			if suppressed, ok := w.panicLog.allow(time.Now()); ok {
				w.tel.logger.ErrorContext(ctx, "background snapshot store panicked; the events are committed",
					telemetrykeys.LogKeyAggregateID, s.AggregateID, telemetrykeys.LogKeyVersion, s.Version, telemetrykeys.LogKeyError, fmt.Sprint(p),
					"stack", string(debug.Stack()), "suppressed_since_last", suppressed)
			}
			w.tel.failure(ctx, w.typ, ModeBackground, telemetrykeys.FailurePanic)
		}
	}()
	if _, err := saveSnapshotTraced(ctx, w.tel, w.store, ModeBackground, s); err != nil {
		reason := telemetrykeys.FailureStore
		if errors.Is(err, context.Canceled) && w.ctx.Err() != nil {
			reason = telemetrykeys.FailureRepoClosed
		}
		w.tel.logger.WarnContext(ctx, "background snapshot not stored; the events are committed",
			telemetrykeys.LogKeyAggregateID, s.AggregateID, telemetrykeys.LogKeyVersion, s.Version, telemetrykeys.LogKeyError, err)
		w.tel.failure(ctx, w.typ, ModeBackground, reason)
	}
}

func (w *backgroundWriter) await(ctx context.Context) (int, error) {
	w.mu.Lock()
	n, idle := w.pending, w.idle
	w.mu.Unlock()
	for {
		select {
		case <-idle:
		case <-ctx.Done():
			return n, fmt.Errorf("await pending snapshots: %w", ctx.Err())
		}
		// More may have been queued since; wait for the newest idle point.
		w.mu.Lock()
		next, pending := w.idle, w.pending
		w.mu.Unlock()
		if pending == 0 {
			return n, nil
		}
		idle = next
	}
}

func (w *backgroundWriter) close(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	close(w.jobs)
	w.mu.Unlock()

	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		w.cancel()
		return nil
	case <-ctx.Done():
		w.cancel() // abort writes in flight; the snapshots are optional
		<-done
		return fmt.Errorf("close %s repository: background snapshots cancelled: %w", w.typ, ctx.Err())
	}
}

// logLimiter lets one log line through per interval and counts the rest.
// Its zero value is ready; the limiter is made on first use.
type logLimiter struct {
	once       sync.Once
	lim        *rate.Limiter
	suppressed atomic.Int64
}

const logInterval = 10 * time.Second

// allow reports whether to log at now (the caller's clock, so tests control
// time), and how many were suppressed since the last line.
func (l *logLimiter) allow(now time.Time) (int, bool) {
	l.once.Do(func() { l.lim = rate.NewLimiter(rate.Every(logInterval), 1) })
	if !l.lim.AllowN(now, 1) {
		l.suppressed.Add(1)
		return 0, false
	}
	return int(l.suppressed.Swap(0)), true
}
