package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

// SaveSnapshot implements [eventsource.SnapshotStore] with one write
// transaction of two statements: one deletes the aggregate's rows out of
// the kept schema versions, one upserts s unless a kept newer schema
// version refuses it, whose DO UPDATE ... WHERE clause is
// [eventsource.Snapshot.Supersedes]. The store's single write connection
// and SQLite's write lock make the transaction atomic against every other
// writer. State must be valid JSON (an error matching
// [eventsource.ErrInvalidArgument] otherwise).
func (s *Store) SaveSnapshot(ctx context.Context, snap eventsource.Snapshot) (stored bool, err error) {
	ctx, span := s.startSpan(ctx, "SaveSnapshot", snap.AggregateType, snap.AggregateID)
	defer func() {
		if span.IsRecording() {
			span.SetAttributes(telemetrykeys.AttrVersion.Int64(snap.Version), attribute.Int("evsnap.snapshot.schema_version", snap.SchemaVersion),
				attribute.Bool("evsnap.snapshot.stored", stored))
		}
		endSpan(span, err)
	}()
	if err := snap.Validate(); err != nil { // checks the state is JSON too
		return false, err
	}
	written, err := s.writeSnapshots(ctx, []eventsource.Snapshot{snap}, []int{0})
	if err != nil {
		return false, fmt.Errorf("sqlitestore: save snapshot of %s %s v%d schema %d: %w", snap.AggregateType, snap.AggregateID, snap.Version, snap.SchemaVersion, err)
	}
	return written[0], nil
}

// SaveSnapshots implements [eventsource.SnapshotStore]: SaveSnapshot's
// statements for each snapshot, in one write transaction, so the batch
// costs one commit (one sync of the WAL).
func (s *Store) SaveSnapshots(ctx context.Context, snaps []eventsource.Snapshot) (stored []bool, err error) {
	ctx, span := s.startSpan(ctx, "SaveSnapshots", "", uuid.Nil)
	defer func() { endSpan(span, err) }()
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("evsnap.snapshot.batch", len(snaps)))
	}
	write, err := storekit.ResolveSnapshotBatch(snaps, s.cfg.kept)
	if err != nil {
		return nil, err
	}
	if len(write) == 0 {
		return make([]bool, len(snaps)), nil
	}
	stored, err = s.writeSnapshots(ctx, snaps, write)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: save %d snapshots: %w", len(write), err)
	}
	return stored, nil
}

// writeSnapshots writes snaps[i] for each i of write, in one write
// transaction, and reports which were stored.
func (s *Store) writeSnapshots(ctx context.Context, snaps []eventsource.Snapshot, write []int) ([]bool, error) {
	// Prepared before the transaction: preparing needs a connection, and
	// the transaction holds the only write connection.
	trim, err := s.stmt(ctx, true, s.q.trimSnapshots)
	if err != nil {
		return nil, err
	}
	upsert, err := s.stmt(ctx, true, s.q.saveSnapshot)
	if err != nil {
		return nil, err
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	trim, upsert = tx.StmtContext(ctx, trim), tx.StmtContext(ctx, upsert)
	stored := make([]bool, len(snaps))
	for _, i := range write {
		sn := &snaps[i]
		id := sn.AggregateID.String()
		fail := func(err error) ([]bool, error) {
			return nil, fmt.Errorf("snapshot %d of %d (%s %s v%d schema %d): %w", i, len(snaps), sn.AggregateType, sn.AggregateID, sn.Version, sn.SchemaVersion, s.mapErr(err))
		}
		if _, err := trim.ExecContext(ctx, id, sn.AggregateType, nil, sn.SchemaVersion); err != nil {
			return fail(err)
		}
		res, err := upsert.ExecContext(ctx, id, sn.AggregateType, sn.Version, sn.SchemaVersion,
			string(sn.State), sn.CreatedAt.UnixMicro(), sn.EventID.String())
		if err != nil {
			return fail(err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fail(err)
		}
		stored[i] = n > 0
	}
	if err := tx.Commit(); err != nil {
		return nil, s.mapErr(err)
	}
	return stored, nil
}

// GetSnapshot implements [eventsource.SnapshotStore]: one primary-key
// lookup.
func (s *Store) GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (_ *eventsource.Snapshot, err error) {
	ctx, span := s.startSpan(ctx, "GetSnapshot", typ, id)
	defer func() { endSpan(span, err) }()
	if err := storekit.ValidateStream(typ, id); err != nil {
		return nil, err
	}
	if err := storekit.ValidateSchemaVersion(schemaVersion); err != nil {
		return nil, err
	}
	st, err := s.stmt(ctx, false, s.q.getSnapshot)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: get snapshot of %s %s: %w", typ, id, err)
	}
	snap, err := scanSnapshot(st.QueryRowContext(ctx, id.String(), typ, schemaVersion), typ)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("sqlitestore: get snapshot of %s %s schema %d: %w", typ, id, schemaVersion, s.mapErr(err))
	}
	snap.AggregateID = id
	return snap, nil
}

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// scanSnapshot scans a snapshot of typ from row, whose columns are those of
// lead followed by version, schema_version, state, created_at and
// event_id. The caller sets AggregateID.
func scanSnapshot(row rowScanner, typ string, lead ...any) (*eventsource.Snapshot, error) {
	snap := &eventsource.Snapshot{AggregateType: typ}
	var (
		created int64
		eventID []byte
	)
	if err := row.Scan(append(lead, &snap.Version, &snap.SchemaVersion, &snap.State, &created, &eventID)...); err != nil {
		return nil, err
	}
	var err error
	if snap.EventID, err = uuid.ParseBytes(eventID); err != nil {
		return nil, fmt.Errorf("stored event id %q of the snapshot: %w", eventID, err)
	}
	snap.CreatedAt = time.UnixMicro(created).UTC()
	return snap, nil
}

// GetSnapshots implements [eventsource.SnapshotStore] with one query
// whatever the number of ids: the distinct ids go as one JSON array
// parameter, which SQLite walks, looking each id up by primary key, so
// there is no variable limit to chunk for and one prepared statement
// serves every batch size. Each request gets its own copy of its snapshot,
// even when an id is asked for twice.
func (s *Store) GetSnapshots(ctx context.Context, typ string, schemaVersion int, ids []uuid.UUID) (snaps []*eventsource.Snapshot, err error) {
	ctx, span := s.startSpan(ctx, "GetSnapshots", typ, uuid.Nil)
	defer func() { endSpan(span, err) }()
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("evsnap.snapshot.batch", len(ids)))
	}
	if err := storekit.ValidateGetSnapshots(typ, schemaVersion, ids); err != nil {
		return nil, err
	}
	found, err := s.getSnapshots(ctx, typ, schemaVersion, ids)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: get %d snapshots of %s: %w", len(ids), typ, s.mapErr(err))
	}
	return storekit.SnapshotsInOrder(ids, found), nil
}

// getSnapshots runs the getSnapshots query for the distinct ids of ids and
// returns the snapshots it found by id.
func (s *Store) getSnapshots(ctx context.Context, typ string, schemaVersion int, ids []uuid.UUID) (_ map[uuid.UUID]*eventsource.Snapshot, err error) {
	distinct := storekit.DistinctIDs(ids)
	// uuid.UUID marshals as its canonical lowercase string: the stored form.
	idsJSON, err := json.Marshal(distinct)
	if err != nil {
		return nil, err
	}
	st, err := s.stmt(ctx, false, s.q.getSnapshots)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, typ, string(idsJSON), schemaVersion)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}()
	found := make(map[uuid.UUID]*eventsource.Snapshot, len(distinct))
	var idBytes sql.RawBytes
	for rows.Next() {
		snap, err := scanSnapshot(rows, typ, &idBytes)
		if err != nil {
			return nil, err
		}
		if snap.AggregateID, err = uuid.ParseBytes(idBytes); err != nil {
			return nil, fmt.Errorf("stored aggregate id %q: %w", idBytes, err)
		}
		found[snap.AggregateID] = snap
	}
	return found, rows.Err()
}

// DeleteSnapshot implements [eventsource.SnapshotStore]: it removes the
// rows of every schema version and, when it removed one, moves the
// aggregate's stream to the end of its type's change order, in one write
// transaction.
func (s *Store) DeleteSnapshot(ctx context.Context, typ string, id uuid.UUID) (_ bool, err error) {
	ctx, span := s.startSpan(ctx, "DeleteSnapshot", typ, id)
	defer func() { endSpan(span, err) }()
	if err := storekit.ValidateStream(typ, id); err != nil {
		return false, err
	}
	n, err := s.execThen(ctx, s.q.deleteSnapshot, []any{id.String(), typ}, s.q.moveStream, []any{typ, id.String()}, false)
	if err != nil {
		return false, fmt.Errorf("sqlitestore: delete snapshot of %s %s: %w", typ, id, err)
	}
	return n > 0, nil
}

// DeleteStaleSnapshot implements [eventsource.SnapshotStore] with one
// DELETE of the row of snap's schema version whose WHERE clause is the
// comparison, so the compare and the delete are atomic; when it removed
// the snapshot, the same write transaction moves the aggregate's stream
// to the end of its type's change order.
func (s *Store) DeleteStaleSnapshot(ctx context.Context, snap eventsource.Snapshot) (_ bool, err error) {
	ctx, span := s.startSpan(ctx, "DeleteStaleSnapshot", snap.AggregateType, snap.AggregateID)
	defer func() { endSpan(span, err) }()
	if err := storekit.ValidateStream(snap.AggregateType, snap.AggregateID); err != nil {
		return false, err
	}
	if err := storekit.ValidateSchemaVersion(snap.SchemaVersion); err != nil {
		return false, err
	}
	n, err := s.execThen(ctx, s.q.deleteStale, []any{snap.AggregateID.String(), snap.AggregateType, snap.Version, snap.SchemaVersion, snap.EventID.String()},
		s.q.moveStream, []any{snap.AggregateType, snap.AggregateID.String()}, false)
	if err != nil {
		return false, fmt.Errorf("sqlitestore: delete stale snapshot v%d of %s %s: %w", snap.Version, snap.AggregateType, snap.AggregateID, err)
	}
	return n > 0, nil
}

// DeleteSnapshotsByType implements [eventsource.SnapshotStore]. It uses the
// (aggregate_type, schema_version) index, and removes the sweep marks of
// the schema versions it removes the snapshots of in the same write
// transaction.
func (s *Store) DeleteSnapshotsByType(ctx context.Context, typ string, schemaVersionBelow int) (n int64, err error) {
	ctx, span := s.startSpan(ctx, "DeleteSnapshotsByType", typ, uuid.Nil)
	defer func() {
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("evsnap.schema_version_below", schemaVersionBelow), attribute.Int64("evsnap.snapshots_deleted", n))
		}
		endSpan(span, err)
	}()
	if err := storekit.ValidateDeleteByType(typ, schemaVersionBelow); err != nil {
		return 0, err
	}
	if schemaVersionBelow == 0 {
		n, err = s.execThen(ctx, s.q.deleteByType, []any{typ}, s.q.deleteMarks, []any{typ}, true)
	} else {
		n, err = s.execThen(ctx, s.q.deleteByTypeLt, []any{typ, schemaVersionBelow}, s.q.deleteMarksLt, []any{typ, schemaVersionBelow}, true)
	}
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: delete snapshots of %s (schema below %d): %w", typ, schemaVersionBelow, err)
	}
	return n, nil
}

// exec runs a single-statement write and returns how many rows it changed.
func (s *Store) exec(ctx context.Context, query string, args ...any) (int64, error) {
	st, err := s.stmt(ctx, true, query)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return 0, s.mapErr(err)
	}
	return res.RowsAffected()
}
