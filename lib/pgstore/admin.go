package pgstore

import (
	"context"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

var (
	_ eventsource.AggregateCounter = (*Store)(nil)
	_ eventsource.SnapshotPruner   = (*Store)(nil)
)

// adminQueries are the statements of CountAggregates and PruneSnapshots.
type adminQueries struct {
	countUpTo, count, estimate, prune string
}

func buildAdminQueries(s *Store) adminQueries {
	st, sn := s.streams.String(), s.snapshots.String()
	return adminQueries{
		// At most $2 of the type's entries of the streams primary key
		// (aggregate_type, aggregate_id). The ORDER BY keeps the planner
		// on that index: a sequential scan with a LIMIT, which it picks
		// for a type that fills the table, reads the whole table to find
		// $2 rows of a rare type.
		countUpTo: `SELECT count(*) FROM (SELECT 1 FROM ` + st + ` WHERE aggregate_type = $1 ORDER BY aggregate_id LIMIT $2) c`,
		count:     `SELECT count(*) FROM ` + st + ` WHERE aggregate_type = $1`,
		// The planner's estimate of the type's rows: the table's size now
		// (pages) times its row density and the type's frequency in the
		// statistics autovacuum's ANALYZE keeps (pg_class.reltuples,
		// pg_stats.most_common_vals). Planning only; nothing is read.
		estimate: `EXPLAIN (FORMAT JSON) SELECT 1 FROM ` + st + ` WHERE aggregate_type = $1`,
		// One batch: the $4 lowest aggregate ids above $3 that have a
		// snapshot of any type (a walk of the snapshots primary key
		// (aggregate_id, aggregate_type, schema_version), which
		// PostgreSQL can read without the table), then the type's rows
		// below the schema version ($2; 0: all) in that id range, every
		// condition on the same key, so the rows it locks are the ones it
		// deletes. It returns how many ids the range holds, its highest
		// and how many rows it deleted. A batch that deleted a snapshot
		// removes the sweep marks of the schema versions it prunes, as
		// DeleteSnapshotsByType does (eventsource.SweepStore): their
		// sweeps start over with a full pass, whichever batch a stopped
		// prune ended at.
		prune: `WITH ids AS (
	SELECT DISTINCT aggregate_id FROM ` + sn + ` WHERE aggregate_id > $3 ORDER BY aggregate_id LIMIT $4
), bound AS (
	SELECT (SELECT count(*) FROM ids) AS n, (SELECT aggregate_id FROM ids ORDER BY aggregate_id DESC LIMIT 1) AS last
), del AS (
	DELETE FROM ` + sn + ` d USING bound
	WHERE d.aggregate_id > $3 AND d.aggregate_id <= bound.last AND d.aggregate_type = $1 AND ($2::int = 0 OR d.schema_version < $2::int)
	RETURNING 1
), marks AS (
	DELETE FROM ` + s.marks.String() + ` WHERE aggregate_type = $1 AND ($2::int = 0 OR schema_version < $2::int)
		AND EXISTS (SELECT 1 FROM del)
)
SELECT n, last, (SELECT count(*) FROM del) FROM bound`,
	}
}

// CountAggregates implements [eventsource.AggregateCounter]. It counts up
// to 10,000 aggregates of the type exactly (a bounded walk of the streams
// primary key); beyond that, unless exact is set, it answers with the
// planner's estimate of the type's rows in the streams table, which costs
// planning only, and is as current as the table's statistics: autovacuum
// analyzes the table after about a tenth of it changed, and the estimate
// scales with the table's size in pages meanwhile. An exact count reads
// every aggregate of the type (a parallel scan: about 0.2 s per million).
func (s *Store) CountAggregates(ctx context.Context, typ string, exact bool) (c eventsource.AggregateCount, err error) {
	if err := storekit.ValidateCount(typ); err != nil {
		return c, err
	}
	ctx, span := s.span(ctx, "pgstore.CountAggregates", typ, uuid.Nil, attribute.Bool("evsnap.count.exact", exact))
	defer func() {
		span.SetAttributes(attribute.Int64("evsnap.count.aggregates", c.N), attribute.Bool("evsnap.count.estimated", c.Estimated))
		endSpan(span, err)
	}()
	fail := func(err error) (eventsource.AggregateCount, error) {
		return eventsource.AggregateCount{}, s.wrap("count aggregates of type "+typ, err)
	}
	if exact {
		if err := s.pool.QueryRow(ctx, s.aq.count, typ).Scan(&c.N); err != nil {
			return fail(err)
		}
		return c, nil
	}
	if err := s.pool.QueryRow(ctx, s.aq.countUpTo, typ, eventsource.CountExactUpTo+1).Scan(&c.N); err != nil {
		return fail(err)
	}
	if c.N <= eventsource.CountExactUpTo {
		return c, nil
	}
	var plan []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		}
	}
	if err := s.pool.QueryRow(ctx, s.aq.estimate, typ).Scan(&plan); err != nil {
		return fail(err)
	}
	if len(plan) != 1 {
		return fail(fmt.Errorf("EXPLAIN returned %d plans", len(plan)))
	}
	// Statistics older than the type's growth past the exact bound (or
	// none yet) can put it below: it has more than that.
	return eventsource.AggregateCount{N: max(int64(plan[0].Plan.Rows), eventsource.CountExactUpTo+1), Estimated: true}, nil
}

// PruneSnapshots implements [eventsource.SnapshotPruner] with one
// statement per call: the limit lowest aggregate ids above after among
// the snapshots of every type, from the primary key, then the type's
// matching rows in that id range. Each statement reads about limit index
// entries (times the schema versions kept) and locks only the rows it
// deletes; a prune that deletes nothing locks none.
func (s *Store) PruneSnapshots(ctx context.Context, typ string, schemaVersionBelow int, after uuid.UUID, limit int) (b eventsource.PruneBatch, err error) {
	if err := storekit.ValidatePrune(typ, schemaVersionBelow, limit); err != nil {
		return b, err
	}
	ctx, span := s.span(ctx, "pgstore.PruneSnapshots", typ, uuid.Nil,
		attribute.Int("evsnap.snapshot.schema_version_below", schemaVersionBelow), attribute.Int("evsnap.prune.limit", limit))
	defer func() {
		span.SetAttributes(attribute.Int64("evsnap.snapshot.deleted", b.Deleted))
		endSpan(span, err)
	}()
	var n int64
	var last *[16]byte
	if err := s.pool.QueryRow(ctx, s.aq.prune, typ, int32(schemaVersionBelow), pgID(after), limit).Scan(&n, &last, &b.Deleted); err != nil {
		return eventsource.PruneBatch{}, s.wrap(fmt.Sprintf("prune snapshots of type %s (schema below %d) after %s", typ, schemaVersionBelow, after), err)
	}
	b.Done = n < int64(limit)
	if last != nil {
		b.Last = *last
	}
	return b, nil
}
