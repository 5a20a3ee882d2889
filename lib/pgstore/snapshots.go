package pgstore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
)

// SaveSnapshot implements [eventsource.SnapshotStore] with one
// statement (one round trip, one implicit transaction): it deletes the
// aggregate's rows out of the kept schema versions and upserts s with
// INSERT ... ON CONFLICT ... DO UPDATE ... WHERE, whose condition is
// [eventsource.Snapshot.Supersedes], unless a kept newer schema version
// refuses it. The check and the write of s's row are atomic, so racing
// writers never move a row backwards. stored is whether a row was
// inserted or updated. State that is not JSON is an error matching
// [eventsource.ErrInvalidArgument].
func (s *Store) SaveSnapshot(ctx context.Context, snap eventsource.Snapshot) (stored bool, err error) {
	if err := snap.Validate(); err != nil {
		return false, err
	}
	ctx, span := s.span(ctx, "pgstore.SaveSnapshot", snap.AggregateType, snap.AggregateID,
		telemetrykeys.AttrVersion.Int64(snap.Version), attribute.Int("evsnap.snapshot.schema_version", snap.SchemaVersion))
	defer func() {
		span.SetAttributes(attribute.Bool("evsnap.snapshot.stored", stored))
		endSpan(span, err)
	}()
	tag, err := s.pool.Exec(ctx, s.q.saveSnapshot, pgID(snap.AggregateID), snap.AggregateType, snap.Version,
		int32(snap.SchemaVersion), snap.State, snap.CreatedAt, pgID(snap.EventID))
	if err != nil {
		return false, s.wrap(fmt.Sprintf("save snapshot v%d schema %d of %s %s", snap.Version, snap.SchemaVersion, snap.AggregateType, snap.AggregateID), err)
	}
	return tag.RowsAffected() == 1, nil
}

// SaveSnapshots implements [eventsource.SnapshotStore] with one
// statement, the batch form of SaveSnapshot's: one round trip and one
// commit for the whole batch. Rows go in primary-key order, so concurrent
// batches over the same aggregates lock them in one order and never
// deadlock.
func (s *Store) SaveSnapshots(ctx context.Context, snaps []eventsource.Snapshot) (stored []bool, err error) {
	write, err := storekit.ResolveSnapshotBatch(snaps, s.cfg.kept)
	if err != nil {
		return nil, err
	}
	if len(write) == 0 {
		return make([]bool, len(snaps)), nil
	}
	ctx, span := s.span(ctx, "pgstore.SaveSnapshots", "", uuid.Nil, attribute.Int("evsnap.snapshot.batch", len(snaps)))
	defer func() { endSpan(span, err) }()
	slices.SortFunc(write, func(a, b int) int {
		if c := bytes.Compare(snaps[a].AggregateID[:], snaps[b].AggregateID[:]); c != 0 {
			return c
		}
		if c := strings.Compare(snaps[a].AggregateType, snaps[b].AggregateType); c != 0 {
			return c
		}
		return cmp.Compare(snaps[a].SchemaVersion, snaps[b].SchemaVersion)
	})
	n := len(write)
	ids, types, versions := make([][16]byte, n), make([]string, n), make([]int64, n)
	schemas, states, created := make([]int32, n), make([][]byte, n), make([]time.Time, n)
	eventIDs := make([][16]byte, n)
	index := make(map[snapKey]int, n)
	for j, i := range write {
		sn := &snaps[i]
		ids[j], types[j], versions[j] = sn.AggregateID, sn.AggregateType, sn.Version
		schemas[j], states[j], created[j] = int32(sn.SchemaVersion), sn.State, sn.CreatedAt
		eventIDs[j] = sn.EventID
		index[snapKey{sn.AggregateID, sn.AggregateType, schemas[j]}] = i
	}
	rows, err := s.pool.Query(ctx, s.q.saveSnapshots, ids, types, versions, schemas, states, created, eventIDs)
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("save %d snapshots", n), err)
	}
	stored = make([]bool, len(snaps))
	var k snapKey
	_, err = pgx.ForEachRow(rows, []any{(*[16]byte)(&k.id), &k.typ, &k.schema}, func() error {
		stored[index[k]] = true
		return nil
	})
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("save %d snapshots", n), err)
	}
	written := 0
	for _, ok := range stored {
		if ok {
			written++
		}
	}
	span.SetAttributes(attribute.Int("evsnap.snapshot.stored", written))
	return stored, nil
}

// snapKey names a row of the snapshots table.
type snapKey struct {
	id     uuid.UUID
	typ    string
	schema int32
}

// GetSnapshot implements [eventsource.SnapshotStore]: one primary-key
// lookup.
func (s *Store) GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (_ *eventsource.Snapshot, err error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return nil, err
	}
	if err := storekit.ValidateSchemaVersion(schemaVersion); err != nil {
		return nil, err
	}
	ctx, span := s.span(ctx, "pgstore.GetSnapshot", typ, id, attribute.Int("evsnap.snapshot.schema_version", schemaVersion))
	defer func() { endSpan(span, err) }()
	snap := &eventsource.Snapshot{AggregateID: id, AggregateType: typ}
	var (
		schema  int32
		eventID [16]byte // see pgID
	)
	err = s.pool.QueryRow(ctx, s.q.getSnapshot, pgID(id), typ, int32(schemaVersion)).Scan(&snap.Version, &schema, &snap.State, &snap.CreatedAt, &eventID)
	if errors.Is(err, pgx.ErrNoRows) {
		span.SetAttributes(attribute.Bool("evsnap.snapshot.found", false))
		return nil, nil
	}
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("get snapshot of %s %s schema %d", typ, id, schemaVersion), err)
	}
	snap.SchemaVersion, snap.EventID = int(schema), eventID
	snap.CreatedAt = snap.CreatedAt.UTC()
	span.SetAttributes(attribute.Bool("evsnap.snapshot.found", true), telemetrykeys.AttrVersion.Int64(snap.Version))
	return snap, nil
}

// DeleteSnapshot implements [eventsource.SnapshotStore]: it removes the
// rows of every schema version and, when it removed one, moves the
// aggregate's stream to the end of the change order, in one statement.
func (s *Store) DeleteSnapshot(ctx context.Context, typ string, id uuid.UUID) (_ bool, err error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return false, err
	}
	ctx, span := s.span(ctx, "pgstore.DeleteSnapshot", typ, id)
	defer func() { endSpan(span, err) }()
	var n int64
	if err := s.pool.QueryRow(ctx, s.q.deleteSnapshot, pgID(id), typ).Scan(&n); err != nil {
		return false, s.wrap(fmt.Sprintf("delete snapshot of %s %s", typ, id), err)
	}
	return n > 0, nil
}

// DeleteStaleSnapshot implements [eventsource.SnapshotStore] with one
// DELETE by primary key (snap's row) whose WHERE clause is the
// comparison, so the compare and the delete are atomic; when it removed
// the snapshot, the same statement moves the aggregate's stream to the
// end of the change order.
func (s *Store) DeleteStaleSnapshot(ctx context.Context, snap eventsource.Snapshot) (_ bool, err error) {
	if err := storekit.ValidateStream(snap.AggregateType, snap.AggregateID); err != nil {
		return false, err
	}
	if err := storekit.ValidateSchemaVersion(snap.SchemaVersion); err != nil {
		return false, err
	}
	ctx, span := s.span(ctx, "pgstore.DeleteStaleSnapshot", snap.AggregateType, snap.AggregateID, telemetrykeys.AttrVersion.Int64(snap.Version))
	defer func() { endSpan(span, err) }()
	var n int64
	if err := s.pool.QueryRow(ctx, s.q.deleteStaleSnapshot, pgID(snap.AggregateID), snap.AggregateType, snap.Version,
		int32(snap.SchemaVersion), pgID(snap.EventID)).Scan(&n); err != nil {
		return false, s.wrap(fmt.Sprintf("delete stale snapshot v%d of %s %s", snap.Version, snap.AggregateType, snap.AggregateID), err)
	}
	return n > 0, nil
}

// DeleteSnapshotsByType implements [eventsource.SnapshotStore] and returns
// the number of rows deleted. It scans the snapshots table (a row per
// aggregate and kept schema version): an administrative bulk delete, for
// which the table keeps no index of its own (see migration 2). The same
// statement removes the sweep marks of the schema versions it deletes
// the snapshots of.
func (s *Store) DeleteSnapshotsByType(ctx context.Context, typ string, schemaVersionBelow int) (n int64, err error) {
	if err := storekit.ValidateDeleteByType(typ, schemaVersionBelow); err != nil {
		return 0, err
	}
	ctx, span := s.span(ctx, "pgstore.DeleteSnapshotsByType", typ, uuid.Nil,
		attribute.Int("evsnap.snapshot.schema_version_below", schemaVersionBelow))
	defer func() {
		span.SetAttributes(attribute.Int64("evsnap.snapshot.deleted", n))
		endSpan(span, err)
	}()
	sql, args := s.q.deleteSnapshotsByType, []any{typ}
	if schemaVersionBelow > 0 {
		sql, args = s.q.deleteSnapshotsBelow, []any{typ, int32(schemaVersionBelow)}
	}
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return 0, s.wrap(fmt.Sprintf("delete snapshots of type %s", typ), err)
	}
	return tag.RowsAffected(), nil
}
