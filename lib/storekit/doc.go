// Package storekit is for authors of an [eventsource.Store]: the argument
// checks and helpers the backends in this module share, so that every
// store refuses the same input with the same error. Applications never
// need it.
//
// # The contract in short
//
// A store holds event streams and the latest snapshot of each aggregate
// and schema version (for the newest [DefaultKeptSchemaVersions] schema
// versions of each aggregate, or as many as its option says), and is safe
// for concurrent use by many goroutines and processes. The
// method comments of [eventsource.EventStore], [eventsource.SnapshotStore]
// and [eventsource.Store] are the contract; in short:
//
//   - Append is atomic and checks the expected version: a mismatch is an
//     [*eventsource.ConflictError] and commits nothing, an event id
//     already stored or repeated is an [*eventsource.DuplicateEventIDError].
//   - ReadEvents streams (its cost depends on the events after `after`,
//     not on the stream's length), yields an error once and last, holds
//     nothing across yields that other calls of the store need, and hands
//     out events the caller owns.
//   - A snapshot row (aggregate and schema version) never moves
//     backwards: a write with a lower version is a no-op
//     ([eventsource.Snapshot.Supersedes]); a save removes the aggregate's
//     rows out of the kept window and is refused when a kept newer schema
//     version puts it out ([SchemaKept]); checked and written atomically,
//     alone or in a batch (SaveSnapshots, one transaction).
//     DeleteStaleSnapshot is a compare-and-delete of one row.
//   - GetSnapshot, GetSnapshots and LoadSnapshotAndEvents read the row of
//     one schema version; GetSnapshots answers for many ids with one
//     round trip; LoadSnapshotAndEvents returns a snapshot and the events
//     from its version (or from 1 when there is none) with one where it can;
//     ListAggregates lists heads and snapshot versions without reading
//     events, or yields one error matching [errors.ErrUnsupported].
//   - Optional: [eventsource.AggregateCounter] (a count of a type's
//     aggregates, an estimate where the store has a cheap one;
//     [ValidateCount]) and [eventsource.SnapshotPruner] (old snapshots
//     deleted in bounded batches of aggregate ids; [ValidatePrune]).
//   - A store that is an [eventsource.SweepStore] keeps its streams in
//     change order: every append moves its stream after every position a
//     scan handed out before it committed; a scan examines one bounded
//     page; sweep marks are compare-and-set on a generation; removing a
//     snapshot moves its stream, and DeleteSnapshotsByType removes the
//     marks of the schema versions it prunes.
//   - Bad arguments are errors matching [eventsource.ErrInvalidArgument]
//     that name what was wrong; aggregate types are at most
//     [MaxAggregateTypeLen] bytes and schema versions run from 1 to
//     [eventsource.MaxSchemaVersion].
//
// # Writing one
//
// Call the Validate function of each method first ([ValidateAppend],
// [ValidateStream], [ValidateGetSnapshots], [ValidateDeleteByType],
// [ValidateSchemaVersion], [ValidateList], [ValidateScan],
// [ValidateSweepMarkKey], [ValidateSweepMark];
// [eventsource.Snapshot.Validate] for a snapshot,
// [ValidateKeptSchemaVersions] for the store's option), and
// [ResolveSnapshotBatch] before writing a batch. [FinishScanPage]
// completes a scan's page, [NextPosition] is the horizon of a store whose
// changes commit in order, and [NewSweepGeneration] a mark's generation.
// [DistinctIDs] and [SnapshotsInOrder] shape a batch read, [FilterAndSort]
// is the reference semantics of [eventsource.ListOptions] for a store that
// lists in memory, and [ErrorSeq] reports an error from a method that
// returns a sequence. Assert the interface at compile time:
//
//	var _ eventsource.Store = (*Store)(nil)
//
// Then run the conformance suite, which checks every rule above and more:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventsource.Store { return New() })
//	}
//
// An application that keeps events and snapshots in different systems
// need not write a Store: [eventsource.Split] joins an EventStore and a
// SnapshotStore.
package storekit
