package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
)

// scanKey names a rendered ScanAggregates statement: its order and the
// page size written into it.
type scanKey struct {
	byID    bool
	examine int
}

// scanSQL returns the statement of a ScanAggregates page: one statement,
// so one snapshot, reads the horizon, the page of streams and their
// snapshots. The page size is a constant in the text, not a parameter:
// a generic plan cannot see a parameter's value (for "LIMIT $n" it
// assumes a tenth of the rows), and could then prefer to join every
// snapshot of the type. A statement per page size is kept (the
// snapshotter uses one); TestScanAggregatesPlans checks the generic
// plans.
//
// $1 type, $2 schema version, $3 min behind; in change order $4 and $5
// the position after which to start (seq, id), in id order $4 the id.
// Rows: the aggregates at least $3 behind (id, head, snapshot version,
// change seq, false), then one tail row (last id examined, how many were
// examined, the horizon, the last change seq, true).
//
// The page walks streams_change_idx (change order) or the primary key
// (id order) from the start position, and only to the horizon, the xmin
// of the statement's snapshot, in change order: a transaction below it
// has ended, so no later commit can add a row before the page's end.
// Each snapshot is one primary-key lookup (LATERAL ... LIMIT 1, which
// the planner cannot turn into a join over the whole snapshots table),
// made only for a stream whose head is at least $3: no other can be that
// far behind (most aggregates of a store are short).
func (s *Store) scanSQL(byID bool, examine int) string {
	k := scanKey{byID, examine}
	if q, ok := s.scanStmts.Load(k); ok {
		return q.(string)
	}
	st, sn := s.streams.String(), s.snapshots.String()
	page := `SELECT st.aggregate_id, st.version, st.change_xid FROM ` + st + ` st
	WHERE st.aggregate_type = $1 AND st.change_xid >= $4::bigint::text::xid8
		AND (st.change_xid, st.aggregate_id) > ($4::bigint::text::xid8, $5::uuid)
		AND st.change_xid < (SELECT x FROM h)
	ORDER BY st.change_xid, st.aggregate_id`
	last := `ORDER BY change_xid DESC, aggregate_id DESC`
	if byID {
		page = `SELECT st.aggregate_id, st.version, st.change_xid FROM ` + st + ` st
	WHERE st.aggregate_type = $1 AND st.aggregate_id > $4::uuid
	ORDER BY st.aggregate_id`
		last = `ORDER BY aggregate_id DESC`
	}
	q := `WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x),
page AS MATERIALIZED (
	` + page + `
	LIMIT ` + strconv.Itoa(examine) + `
)
SELECT p.aggregate_id, p.version, coalesce(sn.version, 0), coalesce(p.change_xid::text::bigint, 0), false
FROM page p
LEFT JOIN LATERAL (
	SELECT x.version FROM ` + sn + ` x
	WHERE p.version >= $3 AND x.aggregate_id = p.aggregate_id AND x.aggregate_type = $1 AND x.schema_version = $2::int
	LIMIT 1
) sn ON true
WHERE greatest(p.version - coalesce(sn.version, 0), 0) >= $3
UNION ALL
SELECT coalesce(l.aggregate_id, '00000000-0000-0000-0000-000000000000'), (SELECT count(*) FROM page),
	(SELECT x FROM h)::text::bigint, coalesce(l.change_xid::text::bigint, 0), true
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT aggregate_id, change_xid FROM page ` + last + ` LIMIT 1) l ON true`
	s.scanStmts.Store(k, q)
	return q
}

// ScanAggregates implements [eventsource.SweepStore] with one statement
// (see scanSQL): an index range scan of at most opts.Examine streams and
// a primary-key lookup of each one's snapshot. Change positions are
// (change_xid, aggregate_id); streams stored before migration 5 have no
// change_xid (until their next append) and only a scan in id order
// examines them.
func (s *Store) ScanAggregates(ctx context.Context, typ string, opts eventsource.ScanOptions) (page eventsource.ScanPage, err error) {
	if err := storekit.ValidateScan(typ, opts); err != nil {
		return page, fmt.Errorf("pgstore: %w", err)
	}
	ctx, span := s.span(ctx, "pgstore.ScanAggregates", typ, uuid.Nil,
		attribute.Bool("evsnap.scan.by_id", opts.ByID), attribute.Int("evsnap.scan.examine", opts.Examine))
	defer func() {
		span.SetAttributes(attribute.Int("evsnap.scan.examined", page.Examined), attribute.Int("evsnap.scan.behind", len(page.Behind)))
		endSpan(span, err)
	}()
	args := []any{typ, int32(opts.SchemaVersion), opts.MinBehind, opts.After.Seq, pgID(opts.After.ID)}
	if opts.ByID {
		args = []any{typ, int32(opts.SchemaVersion), opts.MinBehind, pgID(opts.AfterID)}
	}
	rows, err := s.pool.Query(ctx, s.scanSQL(opts.ByID, opts.Examine), args...)
	if err != nil {
		return page, s.wrap("scan aggregates of type "+typ, err)
	}
	var (
		a        eventsource.ScannedAggregate
		n, seq   int64
		tail     bool
		sawEnd   bool
		examined int
		last     eventsource.ChangePosition
	)
	_, err = pgx.ForEachRow(rows, []any{(*[16]byte)(&a.AggregateID), &a.HeadVersion, &n, &seq, &tail}, func() error {
		if tail {
			sawEnd = true
			examined, page.Horizon = int(a.HeadVersion), eventsource.ChangePosition{Seq: n}
			last = eventsource.ChangePosition{Seq: seq, ID: a.AggregateID}
			return nil
		}
		a.SnapshotVersion, a.SnapshotSchemaVersion, a.Changed = n, 0, eventsource.ChangePosition{Seq: seq, ID: a.AggregateID}
		if a.SnapshotVersion > 0 {
			a.SnapshotSchemaVersion = opts.SchemaVersion
		}
		page.Behind = append(page.Behind, a)
		return nil
	})
	if err != nil {
		return page, s.wrap("scan aggregates of type "+typ, err)
	}
	if !sawEnd {
		return page, fmt.Errorf("pgstore: scan aggregates of type %s: the page has no tail row", typ)
	}
	storekit.FinishScanPage(&page, opts, examined, last)
	return page, nil
}

// GetSweepMark implements [eventsource.SweepStore]: one primary-key
// lookup. A mark written on another cluster (another system identifier)
// comes back with its generation only.
func (s *Store) GetSweepMark(ctx context.Context, key eventsource.SweepMarkKey) (m eventsource.SweepMark, err error) {
	if err := storekit.ValidateSweepMarkKey(key); err != nil {
		return m, fmt.Errorf("pgstore: %w", err)
	}
	ctx, span := s.span(ctx, "pgstore.GetSweepMark", key.AggregateType, uuid.Nil)
	defer func() { endSpan(span, err) }()
	var (
		sameOrigin         bool
		fullAfter, afterID [16]byte
	)
	err = s.pool.QueryRow(ctx, `SELECT generation, origin = (SELECT system_identifier FROM pg_control_system()),
	threshold, changes, full_after, after_seq, after_id FROM `+s.marks.String()+`
WHERE aggregate_type = $1 AND schema_version = $2 AND name = $3`, key.AggregateType, int32(key.SchemaVersion), key.Name).
		Scan(&m.Generation, &sameOrigin, &m.Threshold, &m.Changes, &fullAfter, &m.After.Seq, &afterID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return eventsource.SweepMark{}, nil
	case err != nil:
		return m, s.wrap(fmt.Sprintf("get sweep mark %s of %s schema %d", key.Name, key.AggregateType, key.SchemaVersion), err)
	case !sameOrigin:
		s.logger.WarnContext(ctx, "pgstore: the sweep mark was written on another PostgreSQL cluster (the data was restored here?); the sweep starts over",
			"sweep_mark", key.Name, "aggregate_type", key.AggregateType, "schema_version", key.SchemaVersion)
		return eventsource.SweepMark{Generation: m.Generation}, nil
	}
	m.FullAfter, m.After.ID = fullAfter, afterID
	return m, nil
}

// PutSweepMark implements [eventsource.SweepStore]: one conditional
// INSERT (generation 0) or UPDATE (the generation read), whose WHERE is
// the compare.
func (s *Store) PutSweepMark(ctx context.Context, key eventsource.SweepMarkKey, m eventsource.SweepMark) (gen int64, err error) {
	if err := storekit.ValidateSweepMark(key, m); err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	ctx, span := s.span(ctx, "pgstore.PutSweepMark", key.AggregateType, uuid.Nil)
	defer func() { endSpan(span, err) }()
	gen = storekit.NewSweepGeneration()
	args := []any{key.AggregateType, int32(key.SchemaVersion), key.Name, gen, m.Threshold, m.Changes, pgID(m.FullAfter), m.After.Seq, pgID(m.After.ID)}
	sql := `INSERT INTO ` + s.marks.String() + ` (aggregate_type, schema_version, name, generation, origin, threshold, changes, full_after, after_seq, after_id)
VALUES ($1, $2, $3, $4, (SELECT system_identifier FROM pg_control_system()), $5, $6, $7, $8, $9)
ON CONFLICT DO NOTHING`
	if m.Generation != 0 {
		sql = `UPDATE ` + s.marks.String() + ` SET generation = $4, origin = (SELECT system_identifier FROM pg_control_system()),
	threshold = $5, changes = $6, full_after = $7, after_seq = $8, after_id = $9, updated_at = now()
WHERE aggregate_type = $1 AND schema_version = $2 AND name = $3 AND generation = $10`
		args = append(args, m.Generation)
	}
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return 0, s.wrap(fmt.Sprintf("put sweep mark %s of %s schema %d", key.Name, key.AggregateType, key.SchemaVersion), err)
	}
	if tag.RowsAffected() == 0 {
		return 0, fmt.Errorf("%w: sweep mark %s of %s schema %d is no longer at generation %d", eventsource.ErrSweepMarkMoved,
			key.Name, key.AggregateType, key.SchemaVersion, m.Generation)
	}
	return gen, nil
}
