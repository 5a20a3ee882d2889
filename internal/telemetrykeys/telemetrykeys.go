// Package telemetrykeys holds the log keys, span and metric attribute
// keys, and attribute values that lib/eventsource and the packages around
// it (the stores, natsnotice, the snapshotter) share. They are not API:
// users see them as the names in logs and metrics, which docs/metrics.md
// and the README's section "Observability" list, not as Go identifiers.
package telemetrykeys

import "go.opentelemetry.io/otel/attribute"

// Log keys, constant so logs can be queried.
const (
	LogKeyAggregateType = "aggregate_type"
	LogKeyAggregateID   = "aggregate_id"
	LogKeyVersion       = "version"
	LogKeySnapshotVer   = "snapshot_version"
	LogKeySchemaVersion = "schema_version"
	LogKeyMode          = "mode"
	LogKeyReason        = "reason"
	LogKeyError         = "error"
)

// Span attribute keys.
const (
	AttrAggregateType  = attribute.Key("evsnap.aggregate.type")
	AttrAggregateID    = attribute.Key("evsnap.aggregate.id")
	AttrVersion        = attribute.Key("evsnap.aggregate.version")
	AttrEventsReplayed = attribute.Key("evsnap.load.events_replayed")
	AttrSnapshotUsed   = attribute.Key("evsnap.load.snapshot_used")
	AttrEventsAppended = attribute.Key("evsnap.save.events_appended")
	AttrMode           = attribute.Key("evsnap.snapshot.mode")
	AttrReason         = attribute.Key("evsnap.reason")
	AttrResult         = attribute.Key("evsnap.result")
)

// Reasons a load ignored a snapshot (the "reason" attribute of the
// evsnap.snapshot.fallbacks metric).
const (
	FallbackSchemaMismatch = "schema_mismatch"
	FallbackDecodeError    = "decode_error"
	FallbackStoreError     = "store_error"
	// FallbackStale: the snapshot is not tied to the stream's history
	// (the stream has no event at its version, or that event's id is not
	// the snapshot's EventID); the load also removes it.
	FallbackStale = "stale"
)

// Outcomes of removing a stale snapshot (the "result" attribute of
// evsnap.snapshot.stale_deletes).
const (
	// StaleDeleted: the stale snapshot was removed.
	StaleDeleted = "deleted"
	// StaleAlreadyReplaced: the store no longer held that snapshot (another
	// load removed it, or a snapshot was written since); nothing removed.
	StaleAlreadyReplaced = "already_replaced"
	// StaleDeleteFailed: the snapshot store returned an error (logged).
	StaleDeleteFailed = "error"
)

// Reasons a snapshot was not written after a successful save (the "reason"
// attribute of evsnap.snapshot.failures).
const (
	FailureEncode     = "encode"
	FailureStore      = "store"
	FailureQueueFull  = "queue_full"
	FailureNotify     = "notify"
	FailureRepoClosed = "closed"
	// FailurePanic: a notifier, codec or snapshot store panicked after the
	// append committed; the mode attribute says which path it was.
	FailurePanic = "panic"
)

// Results of a load that replayed enough events to ask for a snapshot
// (the "result" attribute of evsnap.load.snapshot_requests).
const (
	// RequestAsked: the snapshot was stored (sync), queued (background),
	// or the request handed to the notifier (external).
	RequestAsked = "asked"
	// RequestFailed: asking failed (the reason is counted in
	// evsnap.snapshot.failures and logged).
	RequestFailed = "failed"
	// RequestRateLimited: the aggregate asked less than an interval ago,
	// or the repository already remembers as many aggregates as it may
	// for this interval; the load did not ask.
	RequestRateLimited = "rate_limited"
)
