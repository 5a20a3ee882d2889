// Package eventsource is evsnap's core: events and their registry, the
// aggregate root, the [Repository] that loads and saves aggregates with
// snapshots, and the [Store] interface that the backends implement (an
// [EventStore] and a [SnapshotStore] together; [Split] joins two kept
// apart), with the optional capabilities a store may add for
// administration at scale ([AggregateCounter], [SnapshotPruner]). It
// imports no database or messaging driver.
//
// # Events
//
// An event is a Go value whose EventType method returns an explicit, stable
// name. A [Registry] instance (never a global) maps names to Go types and
// decodes stored payloads; fill it with [Register]:
//
//	reg := eventsource.NewRegistry()
//	eventsource.MustRegister[MoneyDeposited](reg)
//
// An unregistered type is an [*UnknownEventTypeError] naming it. Payloads and
// snapshot state are encoded by the registry's [Codec] (encoding/json unless
// [WithCodec] says otherwise); the output must be JSON.
//
// # Aggregates
//
// An aggregate embeds [Root] over its state type. The state type's Apply
// method evolves it by one event (a type switch; no reflection):
//
//	type Account struct{ eventsource.Root[AccountState] }
//	func (*Account) AggregateType() string { return "Account" }
//	func (*Account) SchemaVersion() int    { return 1 }
//
// Commands validate and then call Raise, which applies the event and records
// it for the next Save.
//
// # Loading and saving
//
// [Repository.Load] reads the latest snapshot of the aggregate's schema
// version and replays only the events after it, streamed from the store.
// A store keeps a snapshot per aggregate and schema version, for the
// newest two schema versions of each aggregate by default (see
// [SnapshotStore]), so versions of an application with different state
// schemas running side by side, or one rolled back to the previous schema,
// each load from their own snapshots. A snapshot whose state does not
// decode, a stale one, and a snapshot store error each log a warning,
// count a fallback (metric evsnap.snapshot.fallbacks, by reason) and
// replay every event: loading never fails because of a snapshot.
//
// A snapshot is tied to the history it was built from: [Snapshot.EventID]
// is the id of the stream's event at the snapshot's version, and every
// store refuses a snapshot without one. A load reads the tail from that
// event and checks it; if the stream has no event there (the events were
// restored from an older backup than the snapshots) or it has another id
// (the aggregate was created anew over a left-over snapshot), the snapshot
// is stale: the load replays, counts a fallback with reason "stale", and
// removes it with [SnapshotStore.DeleteStaleSnapshot], a compare-and-delete
// that never removes a snapshot written since (metric
// evsnap.snapshot.stale_deletes, by result). The next due snapshot then
// replaces it. The snapshotter's verify reports it as stale.
//
// [Repository.Save] appends with an optimistic concurrency check. A conflict
// is a [*ConflictError] (errors.Is [ErrConcurrencyConflict]) carrying the
// expected and actual versions, and commits nothing.
//
// # Snapshot modes and policy
//
// One policy serves every mode: a threshold ("at least N events since the
// last stored snapshot", so a save that jumps past N still snapshots) and
// milestones ("this save appended one of these event types"), either of
// which makes a snapshot due. The modes:
//
//   - [ModeSync]: the snapshot is stored before Save returns.
//   - [ModeBackground]: the state is encoded when Save runs (later changes
//     to the aggregate can never leak into it) and written by a bounded pool
//     of goroutines; [Repository.AwaitPendingSnapshots] waits for them.
//   - [ModeManual]: only [Repository.CreateSnapshot] snapshots.
//   - [ModeExternal]: Save hands an [Appended] notice to an [AppendNotifier]
//     (natsnotice publishes it to NATS JetStream) and the out-of-process
//     snapshotter worker decides and writes.
//   - [ModeOff]: no snapshots are read or written; every load replays.
//
// [ModeSync] with a threshold of 100 is the default, and [ModeExternal]
// when a notifier is given.
//
// A snapshot or notice failure after a committed append, including a panic
// in the notifier, the codec or the snapshot store, is logged and counted
// (evsnap.snapshot.failures, reason "panic" for a panic) and never returned
// from Save or let through to its caller.
//
// # Load trigger
//
// A load that replays many events is a sign that the aggregate's snapshot
// is missing or far behind: its notices were lost, its snapshots pruned,
// or it predates the snapshotter, and an aggregate that is read often but
// written rarely would stay that way. With [WithLoadTrigger](n) (off by
// default) a load that replayed at least n events asks for a snapshot
// after it has built the aggregate: [ModeSync] stores it before Load
// returns, [ModeBackground] queues it, [ModeExternal] hands a
// [SnapshotRequest] to the notifier's [SnapshotRequester] (natsnotice
// publishes a notice with reason "read", which the snapshotter acts on),
// and [ModeManual] and [ModeOff] do nothing. Each aggregate asks at most
// once per [WithLoadTriggerInterval] (one minute by default); the
// repository remembers at most 4,096 aggregates per interval, in memory.
// Asking never fails the load: its failures, even panics, are logged and
// counted (evsnap.load.snapshot_requests by result, and
// evsnap.snapshot.failures). A trigger that does not fire costs a load one
// comparison and no allocation.
//
// # Stores
//
// Backends live in their own packages: memstore, pgstore, sqlitestore. Each
// is a [Store] and a [SweepStore] (its streams in change order, so the
// snapshotter's reconciliation sweep examines what changed), and all run
// the one conformance suite, storetest.Run. A snapshot store never lets a
// snapshot move backwards: a write with a lower version or an older schema
// version than the stored one is a no-op ([Snapshot.Supersedes]). A
// snapshot proven stale is removed by a load instead, never overwritten by
// loosening that rule.
//
// Every store behaves the same at its limits. An event id already stored,
// or repeated within one append, is a [*DuplicateEventIDError] (errors.Is
// [ErrDuplicateEventID] and [ErrInvalidArgument]). Schema versions run
// from 1 to [MaxSchemaVersion] (PostgreSQL keeps them in 32 bits); others
// are refused with [ErrInvalidArgument] when a snapshot is saved, a
// repository created or snapshots deleted by type. Versions are int64
// everywhere.
//
// # Observability
//
// Spans (eventsource.Load, eventsource.Save,
// eventsource.LoadSnapshotAndEvents,
// eventsource.SaveSnapshot, eventsource.CreateSnapshot,
// eventsource.DeleteStaleSnapshot) and metrics (evsnap.load.duration,
// evsnap.load.events_replayed, evsnap.load.snapshot_requests,
// evsnap.snapshot.written,
// evsnap.snapshot.superseded, evsnap.snapshot.fallbacks,
// evsnap.snapshot.failures, evsnap.snapshot.stale_deletes) use the
// OpenTelemetry API only, through the providers given with
// [WithTracerProvider] and [WithMeterProvider] (the global ones by default).
// Logs go to the [log/slog] logger given with [WithLogger]. docs/metrics.md
// lists every metric with its attributes and their values; the README's
// section "Observability" the spans and the log keys.
//
// Telemetry costs nothing when it is off. With OpenTelemetry's no-op
// providers, or the global ones while the program has installed no SDK,
// a repository starts no span (the context it passes on keeps the
// caller's span), builds no attribute and reads no clock for a metric:
// a load or a save allocates nothing for its instrumentation. The global
// provider is followed, so an SDK installed after the repository was made
// is used from then on. With an SDK installed, attributes are set on
// spans that record (after they start, so a sampler does not see them),
// and the spans a load or a save starts inside its own
// (eventsource.LoadSnapshotAndEvents, eventsource.SaveSnapshot,
// eventsource.DeleteStaleSnapshot) are started only under a recording one.
// With no SDK, eBPF auto-instrumentation (go.opentelemetry.io/auto) sees
// none of these spans.
//
// Event ids are time-ordered UUIDs (version 7, from the time the event
// was raised), so stores' unique indexes on them grow at one end; see
// docs/decisions/0035-time-ordered-event-ids.md for what their order
// promises (nothing) and what they reveal (when the event was raised).
package eventsource
