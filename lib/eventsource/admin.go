package eventsource

import (
	"context"

	"github.com/google/uuid"
)

// The optional capabilities below serve administration at scale (the
// snapshotter's stats, rebuild and prune commands over millions of
// aggregates). A [Store] has them or not; callers find out by a type
// assertion and fall back to [Store.ListAggregates] and
// [SnapshotStore.DeleteSnapshotsByType] when it has not. The backends
// (memstore, sqlitestore, pgstore) have both, and
// github.com/evsnap/evsnap/lib/storetest checks them on any store that
// has them.

// CountExactUpTo is the number of aggregates of a type up to which
// [AggregateCounter.CountAggregates] always counts exactly.
const CountExactUpTo = 10_000

// AggregateCount is what [AggregateCounter.CountAggregates] answers.
type AggregateCount struct {
	// N is the number of aggregates (streams) of the type.
	N int64
	// Estimated reports that N is an estimate (from the database's
	// statistics), not a count.
	Estimated bool
}

// AggregateCounter is a [Store] that can say how many aggregates of a type
// it holds without reading every one of them.
type AggregateCounter interface {
	// CountAggregates returns the number of aggregates of typ: the ones
	// [Store.ListAggregates] would list. With exact false the store may
	// answer with an estimate (Estimated set) that costs no more than a
	// bounded read, whatever the number of aggregates; it counts exactly
	// a type of at most [CountExactUpTo] aggregates, and may count
	// larger ones exactly where that is as cheap (a store in memory).
	// With exact true it counts, which may read every aggregate of the
	// type. An empty typ is an error matching ErrInvalidArgument. Safe
	// for concurrent use.
	CountAggregates(ctx context.Context, typ string, exact bool) (AggregateCount, error)
}

// PruneBatch is what one [SnapshotPruner.PruneSnapshots] call did.
type PruneBatch struct {
	// Deleted counts the snapshot rows the call removed.
	Deleted int64
	// Last is the highest aggregate id the call covered: every snapshot
	// it was asked to remove of an aggregate with an id above the call's
	// after and up to Last is gone. Pass it as the next call's after.
	// uuid.Nil when the call found no aggregate above after.
	Last uuid.UUID
	// Done reports that the call covered every aggregate above after:
	// there is nothing left to remove beyond Last.
	Done bool
}

// SnapshotPruner is a [Store] that can remove the snapshots of a type in
// bounded batches, in ascending aggregate id order: each call is one short
// statement or transaction that locks the rows of at most limit aggregates,
// and a run stopped between calls resumes from the last call's Last.
type SnapshotPruner interface {
	// PruneSnapshots removes the snapshots of typ with a schema version
	// below schemaVersionBelow (every schema version when it is 0), as
	// [SnapshotStore.DeleteSnapshotsByType] does, but only of the
	// aggregates with ids above after (in the byte order of the ids, which
	// is the order of their canonical strings), and of at most limit of
	// them: the call covers the limit lowest ids above after among the
	// aggregates that have a snapshot (of any type: a store may walk an
	// index of every type's snapshots), and reports the highest as Last.
	// Calling it from uuid.Nil, then from each Last, until Done removes
	// what one DeleteSnapshotsByType would, with each call's work
	// bounded by limit; calling it again from uuid.Nil removes nothing
	// more (it is idempotent, so a stopped run may also simply start
	// over). Snapshots saved during a run above its Last are removed by a
	// later call if they match. An empty typ, a schemaVersionBelow
	// DeleteSnapshotsByType would refuse, or a limit below 1 is an error
	// matching ErrInvalidArgument. Safe for concurrent use.
	PruneSnapshots(ctx context.Context, typ string, schemaVersionBelow int, after uuid.UUID, limit int) (PruneBatch, error)
}
