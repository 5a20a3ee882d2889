// Package snapshotter is the out-of-process snapshot worker: the public API
// a program's main runs with its own aggregate types. cmd/snapshotter is
// this package wired to the example domain.
//
// # How it works
//
// Applications save through an eventsource.Repository in ModeExternal: each
// committed save publishes an "events appended" notice (package natsnotice)
// to the JetStream stream EVSNAP_APPENDED. Any number of worker replicas
// share one durable pull consumer. Each replica takes notices in batches,
// coalesces them per aggregate, asks the type's [eventsource.Policy] whether a snapshot
// is due (threshold since the stored snapshot, or a milestone event type),
// and if so loads the aggregate exactly as the application would (latest
// snapshot plus the events after it, streamed) and stores a snapshot at the
// head. Snapshot stores never move backwards, so racing replicas are safe.
// A worker reads, decides on and writes the snapshot of its registered
// type's schema version only (a store keeps one per schema version,
// decision 28): replicas of two releases of an application with different
// schema versions may share the stream and the durable consumer, each
// refreshing its own schema's snapshot for the notices it takes, and each
// release's reconciliation sweep catching up its own snapshots.
// The load checks the snapshot is tied to the stream's history (see
// eventsource.Snapshot.EventID): a stale one is never built on, it is
// removed and the worker writes one from a full replay.
//
// The snapshots of the aggregates a replica rebuilds at the same time are
// written together with the store's SaveSnapshots: one statement and one
// commit per batch (Config.WriteBatch, up to 64; Config.Concurrency, 16,
// rebuilds at once). A write never waits for a batch to fill: a snapshot
// that finds no write in flight goes at once, and those that arrive during
// a write go in the next one.
//
// The decision reads are batched the same way with the store's
// GetSnapshots: the snapshots the policy decides on are read for many
// notices with one statement (Config.ReadBatch, up to 64). Most notices
// are not due, and this read is all they cost the database. A rebuild's
// events are read per aggregate, streamed. When the notices announce so
// many events that the aggregate is due whatever its snapshot (a backlog,
// or a milestone), the snapshot and the events after it are read together
// with the store's LoadSnapshotAndEvents (one round trip on PostgreSQL),
// and the decision is made from the snapshot read.
//
// A notice with reason "read" (natsnotice.ReasonRead) is a load's request:
// an application whose repository has eventsource.WithLoadTrigger loaded
// the aggregate by replaying many events. Such a notice is due whatever
// the policy says, unless a snapshot at or past the first version the load
// replayed is stored by then (a later notice, or another replica, got
// there first), so an aggregate read often but written rarely heals from
// its reads. Its snapshot and events are read in one round trip; the
// snapshot is counted with source "read" when no append notice came with
// the request, and its commit lag is not recorded (a request is no
// commit).
//
// The worker takes one eventsource.Store (Config.Store). On a store made
// by eventsource.Split, whose halves cannot be listed together, notices
// are handled and single aggregates rebuilt as anywhere, but the
// reconciliation sweep, Stats, Verify and Rebuild of a whole type fail
// with [ErrCannotList] (the sweep logs it and stops).
//
// A notice is acked only after the snapshot is stored or the policy said
// no. Transient failures (a database or NATS outage) are naked with a
// growing delay, up to Config.MaxDeliveries deliveries. Failures that can
// never succeed (a malformed notice, an unknown aggregate type, an
// aggregate that does not exist, events that do not decode) are
// terminated on their first delivery and logged once at warn with the
// notice's stream sequence, message id and the reason; they never hold up
// other notices. Long rebuilds tell JetStream they are in progress.
//
// Notices are hints, not the source of truth: an application can crash
// between commit and publish, and JetStream can lose acknowledged messages.
// The reconciliation sweep (Config.SweepInterval, rate-limited by
// Config.SweepRate, at most Config.SweepBatch aggregates per type and
// pass) finds aggregates whose snapshot is at least the threshold behind
// and snapshots them without notices. On a store that keeps its streams
// in change order ([eventsource.SweepStore]: memstore, sqlitestore,
// pgstore) a pass costs what changed: it examines the aggregates whose
// streams changed since the last pass, from a mark the store keeps per
// consumer, type and schema version, after one full pass over every
// aggregate (paged, in id order) when there is no mark yet, after a prune
// removed it, or after the threshold was lowered; an aggregate whose
// rebuild fails is retried and the mark never moves past it
// (decision 0037). On another store a pass lists the aggregates most
// behind first. One replica of a fleet sweeps at a time: the replicas sharing a durable
// consumer hold a lease in a JetStream key-value bucket
// (Config.SweepLeaseTTL, Config.LeaseBucket; decision 0032), and another
// takes over within about 4/3 of the TTL when the holder dies.
//
// # Running it
//
//	w, err := snapshotter.New(cfg,
//		snapshotter.For[Account](reg, eventsource.Policy{Threshold: 100}),
//		snapshotter.For[Order](reg, eventsource.Policy{Threshold: 100, Milestones: []string{"OrderShipped"}}),
//	)
//	...
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	err = w.Run(ctx) // returns nil after draining on SIGTERM
//
// [Worker.HealthHandler] serves /healthz and /readyz: ready means
// connected to NATS, bound to the durable consumer, and the pull answered
// within [ReadyWithin]. Metrics and spans go through the OpenTelemetry API
// (Config.MeterProvider, Config.TracerProvider); a worker's span links to
// the span of the save that published the notice. Besides counters and
// histograms (durations in seconds, with buckets that fit each) the worker
// exports gauges of the consumer's backlog (sampled every
// Config.BacklogInterval) and of the aggregates the last sweep found
// behind, and logs a summary line of its work every
// Config.SummaryInterval. Durations in its logs are numbers of seconds
// under keys ending in "_seconds".
//
// # Administration
//
// [Worker.Rebuild] regenerates the snapshots of a type (rate-limited, with
// progress, in id order, resumable after the last id it handled),
// [Worker.Stats] summarises how far the snapshots of the worker's schema
// version are behind and how many aggregates have their newest snapshot
// at each schema version (estimated from random samples and the store's
// count unless StatsOptions.Exact), [Worker.Verify] compares randomly
// picked snapshots with a full replay, [Worker.Prune] deletes snapshots
// of old schema versions (in bounded, resumable batches on a store that
// is an [eventsource.SnapshotPruner]), and [Worker.Sweep] runs one
// reconciliation pass. They need no JetStream, and none reads every
// aggregate unless asked to (Exact, a Verify sample of 0, a Rebuild of a
// whole type).
package snapshotter
