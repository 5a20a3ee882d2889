package pgstore

import (
	"context"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

// GetSnapshots implements [eventsource.SnapshotStore] with one
// statement: a primary-key lookup of every distinct id (aggregate_id =
// ANY of an array) at the schema version. Each request gets its own *Snapshot, even when an id
// is asked for twice.
func (s *Store) GetSnapshots(ctx context.Context, typ string, schemaVersion int, ids []uuid.UUID) (_ []*eventsource.Snapshot, err error) {
	if err := storekit.ValidateGetSnapshots(typ, schemaVersion, ids); err != nil {
		return nil, err
	}
	ctx, span := s.span(ctx, "pgstore.GetSnapshots", typ, uuid.Nil, attribute.Int("evsnap.read.batch", len(ids)))
	defer func() { endSpan(span, err) }()
	// [16]byte elements take pgx's binary path; uuid.UUID ones would go
	// through its reflective one (see pgID).
	distinct := storekit.DistinctIDs(ids)
	keys := make([][16]byte, len(distinct))
	for i, id := range distinct {
		keys[i] = id
	}
	rows, err := s.pool.Query(ctx, s.q.getSnapshots, typ, keys, int32(schemaVersion))
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("get %d snapshots of %s", len(distinct), typ), err)
	}
	found := make(map[uuid.UUID]*eventsource.Snapshot, len(distinct))
	var (
		id, eventID [16]byte
		schema      int32
	)
	for rows.Next() {
		sn := &eventsource.Snapshot{AggregateType: typ}
		if err := rows.Scan(&id, &sn.Version, &schema, &sn.State, &sn.CreatedAt, &eventID); err != nil {
			rows.Close()
			return nil, s.wrap(fmt.Sprintf("get %d snapshots of %s", len(distinct), typ), err)
		}
		sn.AggregateID, sn.SchemaVersion, sn.CreatedAt, sn.EventID = id, int(schema), sn.CreatedAt.UTC(), eventID
		found[sn.AggregateID] = sn
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(fmt.Sprintf("get %d snapshots of %s", len(distinct), typ), err)
	}
	span.SetAttributes(attribute.Int("evsnap.read.found", len(found)))
	return storekit.SnapshotsInOrder(ids, found), nil
}
