package pgstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

var (
	_ eventsource.SnapshotBatchGetter = (*Store)(nil)
	_ eventsource.EventTailReader     = (*Store)(nil)
)

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

// ReadTails implements [eventsource.EventTailReader] with one statement:
// the streams to read are unnested from arrays, and each is read by a
// lateral walk of the (aggregate_type, aggregate_id, version) index that
// stops at the limit, so the cost is the events returned, whatever the
// streams' lengths, and nothing is sorted. The limit is written into the
// statement as a constant: a caller should use few distinct limits, each
// of which is one prepared statement per connection.
func (s *Store) ReadTails(ctx context.Context, typ string, reads []eventsource.TailRead, limit int) (_ [][]eventsource.RecordedEvent, err error) {
	if err := eventsource.ValidateReadTails(typ, reads, limit); err != nil {
		return nil, err
	}
	ctx, span := s.span(ctx, "pgstore.ReadTails", typ, uuid.Nil,
		attribute.Int("evsnap.read.batch", len(reads)), attribute.Int("evsnap.read.limit", limit))
	var read int
	defer func() {
		span.SetAttributes(attribute.Int("evsnap.read.events", read))
		endSpan(span, err)
	}()
	ids, afters := make([][16]byte, len(reads)), make([]int64, len(reads))
	for i, r := range reads {
		ids[i], afters[i] = r.AggregateID, r.After
	}
	what := fmt.Sprintf("read the tails of %d streams of %s", len(reads), typ)
	rows, err := s.pool.Query(ctx, s.q.readTailsSQL(limit), typ, ids, afters)
	if err != nil {
		return nil, s.wrap(what, err)
	}
	defer rows.Close()
	tails := make([][]eventsource.RecordedEvent, len(reads))
	var (
		ord      int64
		metadata []byte
		rec      eventsource.RecordedEvent
	)
	dest := []any{&ord, (*[16]byte)(&rec.ID), &rec.Version, &rec.Type, &rec.Payload, &metadata, &rec.OccurredAt}
	for rows.Next() {
		rec = eventsource.RecordedEvent{AggregateType: typ}
		if err := rows.Scan(dest...); err != nil {
			return nil, s.wrap(what, err)
		}
		i := int(ord) - 1
		if i < 0 || i >= len(reads) {
			return nil, fmt.Errorf("pgstore: %s: row for read %d of %d", what, ord, len(reads))
		}
		rec.AggregateID = reads[i].AggregateID
		if err := finishEvent(&rec, metadata); err != nil {
			return nil, err
		}
		tails[i] = append(tails[i], rec)
		read++
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(what, err)
	}
	// The nested loop yields each stream in version order; should a plan
	// ever not, put it right here instead of handing out a wrong order.
	for _, tail := range tails {
		if !slices.IsSortedFunc(tail, byVersion) {
			slices.SortFunc(tail, byVersion)
		}
	}
	return tails, nil
}

func byVersion(a, b eventsource.RecordedEvent) int { return cmp.Compare(a.Version, b.Version) }
