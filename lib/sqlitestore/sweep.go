package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

var _ eventsource.SweepStore = (*Store)(nil)

// ScanAggregates implements [eventsource.SweepStore] with one statement
// (one read transaction): a range of the change index (change order) or
// of the primary key (id order), at most opts.Examine rows, and a
// primary-key lookup of each one's snapshot. SQLite commits one write
// transaction at a time and each takes its change position inside it, so
// every change a page sees is final, and its Horizon is the type's
// highest position. Streams stored before migration 0004 have no change
// position until their next append: only a scan in id order examines
// them.
func (s *Store) ScanAggregates(ctx context.Context, typ string, opts eventsource.ScanOptions) (page eventsource.ScanPage, err error) {
	ctx, span := s.startSpan(ctx, "ScanAggregates", typ, uuid.Nil)
	defer func() { endSpan(span, err) }()
	if err := storekit.ValidateScan(typ, opts); err != nil {
		return page, fmt.Errorf("sqlitestore: %w", err)
	}
	fail := func(e error) (eventsource.ScanPage, error) {
		return eventsource.ScanPage{}, fmt.Errorf("sqlitestore: scan aggregates of %s: %w", typ, s.mapErr(e))
	}
	q, after := s.q.scanChanges, opts.After.ID
	if opts.ByID {
		q, after = s.q.scanByID, opts.AfterID
	}
	st, err := s.stmt(ctx, false, q)
	if err != nil {
		return fail(err)
	}
	rows, err := st.QueryContext(ctx, typ, opts.SchemaVersion, opts.MinBehind, opts.After.Seq, after.String(), opts.Examine)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	sawTail, examined := false, 0
	var last eventsource.ChangePosition
	for rows.Next() {
		var (
			id           sql.NullString
			head, n, seq int64
			tail         bool
			a            eventsource.ScannedAggregate
			parsedID     uuid.UUID
			errParse     error
		)
		if err := rows.Scan(&id, &head, &n, &seq, &tail); err != nil {
			return fail(err)
		}
		if id.Valid {
			if parsedID, errParse = uuid.Parse(id.String); errParse != nil {
				return fail(fmt.Errorf("stored aggregate id %q: %w", id.String, errParse))
			}
		}
		if tail {
			sawTail = true
			examined, page.Horizon = int(head), storekit.NextPosition(n)
			last = eventsource.ChangePosition{Seq: seq, ID: parsedID}
			continue
		}
		a.AggregateID, a.HeadVersion, a.SnapshotVersion = parsedID, head, n
		a.Changed = eventsource.ChangePosition{Seq: seq, ID: parsedID}
		if n > 0 {
			a.SnapshotSchemaVersion = opts.SchemaVersion
		}
		page.Behind = append(page.Behind, a)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	if !sawTail {
		return fail(errors.New("the page has no tail row"))
	}
	storekit.FinishScanPage(&page, opts, examined, last)
	return page, nil
}

// GetSweepMark implements [eventsource.SweepStore]: one primary-key
// lookup.
func (s *Store) GetSweepMark(ctx context.Context, key eventsource.SweepMarkKey) (m eventsource.SweepMark, err error) {
	ctx, span := s.startSpan(ctx, "GetSweepMark", key.AggregateType, uuid.Nil)
	defer func() { endSpan(span, err) }()
	if err := storekit.ValidateSweepMarkKey(key); err != nil {
		return m, fmt.Errorf("sqlitestore: %w", err)
	}
	fail := func(e error) (eventsource.SweepMark, error) {
		return eventsource.SweepMark{}, fmt.Errorf("sqlitestore: get sweep mark %s of %s schema %d: %w", key.Name, key.AggregateType, key.SchemaVersion, s.mapErr(e))
	}
	st, err := s.stmt(ctx, false, s.q.getSweepMark)
	if err != nil {
		return fail(err)
	}
	var fullAfter, afterID string
	err = st.QueryRowContext(ctx, key.AggregateType, key.SchemaVersion, key.Name).
		Scan(&m.Generation, &m.Threshold, &m.Changes, &fullAfter, &m.After.Seq, &afterID)
	if errors.Is(err, sql.ErrNoRows) {
		return eventsource.SweepMark{}, nil
	}
	if err != nil {
		return fail(err)
	}
	if m.FullAfter, err = uuid.Parse(fullAfter); err != nil {
		return fail(fmt.Errorf("stored full_after %q: %w", fullAfter, err))
	}
	if m.After.ID, err = uuid.Parse(afterID); err != nil {
		return fail(fmt.Errorf("stored after_id %q: %w", afterID, err))
	}
	return m, nil
}

// PutSweepMark implements [eventsource.SweepStore]: one conditional
// INSERT (generation 0) or UPDATE (the generation read), whose WHERE is
// the compare.
func (s *Store) PutSweepMark(ctx context.Context, key eventsource.SweepMarkKey, m eventsource.SweepMark) (gen int64, err error) {
	ctx, span := s.startSpan(ctx, "PutSweepMark", key.AggregateType, uuid.Nil)
	defer func() { endSpan(span, err) }()
	if err := storekit.ValidateSweepMark(key, m); err != nil {
		return 0, fmt.Errorf("sqlitestore: %w", err)
	}
	gen = storekit.NewSweepGeneration()
	args := []any{key.AggregateType, key.SchemaVersion, key.Name, gen, m.Threshold, m.Changes, m.FullAfter.String(), m.After.Seq, m.After.ID.String(), time.Now().UnixMicro()}
	q := s.q.insertMark
	if m.Generation != 0 {
		q, args = s.q.updateMark, append(args, m.Generation)
	}
	n, err := s.exec(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: put sweep mark %s of %s schema %d: %w", key.Name, key.AggregateType, key.SchemaVersion, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: sweep mark %s of %s schema %d is no longer at generation %d", eventsource.ErrSweepMarkMoved,
			key.Name, key.AggregateType, key.SchemaVersion, m.Generation)
	}
	return gen, nil
}

// execThen runs the single-statement write query and then (always, or
// only when query changed a row) in one write transaction; it returns
// how many rows query changed. A removal of snapshots moves the stream,
// or removes the sweep marks, with it (see [eventsource.SweepStore]).
func (s *Store) execThen(ctx context.Context, query string, args []any, then string, thenArgs []any, always bool) (int64, error) {
	first, err := s.stmt(ctx, true, query)
	if err != nil {
		return 0, err
	}
	second, err := s.stmt(ctx, true, then)
	if err != nil {
		return 0, err
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.mapErr(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	res, err := tx.StmtContext(ctx, first).ExecContext(ctx, args...)
	if err != nil {
		return 0, s.mapErr(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if always || n > 0 {
		if _, err := tx.StmtContext(ctx, second).ExecContext(ctx, thenArgs...); err != nil {
			return 0, s.mapErr(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, s.mapErr(err)
	}
	return n, nil
}
