package pgstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

var _ eventsource.SnapshotBatchGetter = (*Store)(nil)

// GetSnapshots implements [eventsource.SnapshotBatchGetter] with one
// statement: a primary-key lookup of every distinct id (aggregate_id =
// ANY of an array). Each request gets its own *Snapshot, even when an id
// is asked for twice.
func (s *Store) GetSnapshots(ctx context.Context, typ string, ids []uuid.UUID) (_ []*eventsource.Snapshot, err error) {
	if err := eventsource.ValidateGetSnapshots(typ, ids); err != nil {
		return nil, err
	}
	ctx, span := s.span(ctx, "pgstore.GetSnapshots", typ, uuid.Nil, attribute.Int("evsnap.read.batch", len(ids)))
	defer func() { endSpan(span, err) }()
	distinct := make([][16]byte, 0, len(ids))
	unclaimed := make(map[uuid.UUID]struct{}, len(ids)) // ids whose row no request has taken yet
	for _, id := range ids {
		if _, dup := unclaimed[id]; !dup {
			unclaimed[id] = struct{}{}
			distinct = append(distinct, id)
		}
	}
	rows, err := s.pool.Query(ctx, s.q.getSnapshots, typ, distinct)
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("get %d snapshots of %s", len(distinct), typ), err)
	}
	found := make(map[uuid.UUID]*eventsource.Snapshot, len(distinct))
	var (
		id     [16]byte
		schema int32
	)
	for rows.Next() {
		sn := &eventsource.Snapshot{AggregateType: typ}
		if err := rows.Scan(&id, &sn.Version, &schema, &sn.State, &sn.CreatedAt); err != nil {
			rows.Close()
			return nil, s.wrap(fmt.Sprintf("get %d snapshots of %s", len(distinct), typ), err)
		}
		sn.AggregateID, sn.SchemaVersion, sn.CreatedAt = id, int(schema), sn.CreatedAt.UTC()
		found[sn.AggregateID] = sn
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(fmt.Sprintf("get %d snapshots of %s", len(distinct), typ), err)
	}
	out := make([]*eventsource.Snapshot, len(ids))
	for i, id := range ids {
		sn := found[id]
		if sn == nil {
			continue
		}
		if _, ok := unclaimed[id]; !ok {
			// A second request for id gets its own copy.
			c := *sn
			c.State = slices.Clone(sn.State)
			sn = &c
		}
		delete(unclaimed, id)
		out[i] = sn
	}
	span.SetAttributes(attribute.Int("evsnap.read.found", len(found)))
	return out, nil
}
