package pgstore

import (
	"context"
	"fmt"
	"iter"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

// listPageSize is how many aggregates one query of a ByID listing reads.
const listPageSize = 1000

// ListAggregates implements [eventsource.Store] from the streams
// table LEFT JOIN the snapshots table (for each aggregate, the row of
// opts.SchemaVersion or of its newest schema version): it never reads an
// event.
//
// A listing in id order pages through the streams primary key
// (aggregate_type, aggregate_id) a thousand aggregates per query, reading
// each page into memory (40 bytes an aggregate) before yielding it, so no
// query or connection stays open while the caller works on the aggregates.
// A MostBehindFirst listing computes every aggregate's lag in one
// query and sorts it (O(aggregates of the type)); its rows are streamed.
// Both yield an error once, last.
func (s *Store) ListAggregates(ctx context.Context, typ string, opts eventsource.ListOptions) iter.Seq2[eventsource.AggregateInfo, error] {
	if err := storekit.ValidateList(typ, opts); err != nil {
		return func(yield func(eventsource.AggregateInfo, error) bool) {
			yield(eventsource.AggregateInfo{}, fmt.Errorf("pgstore: %w", err))
		}
	}
	// As in storekit.FilterAndSort: a MinBehind below 1 keeps every
	// aggregate, a Limit below 1 lists them all.
	opts.MinBehind = max(opts.MinBehind, 0)
	opts.Limit = max(opts.Limit, 0)
	return func(yield func(eventsource.AggregateInfo, error) bool) {
		ctx, span := s.span(ctx, "pgstore.ListAggregates", typ, uuid.Nil,
			attribute.Int64("evsnap.list.min_behind", opts.MinBehind), attribute.Int("evsnap.list.limit", opts.Limit),
			attribute.Bool("evsnap.list.most_behind", opts.MostBehindFirst))
		var (
			err    error
			listed int
		)
		defer func() {
			span.SetAttributes(attribute.Int("evsnap.list.listed", listed))
			endSpan(span, err)
		}()
		if opts.MostBehindFirst {
			listed, err = s.listMostBehind(ctx, typ, opts, yield)
		} else {
			listed, err = s.listByID(ctx, typ, opts, yield)
		}
		if err != nil {
			yield(eventsource.AggregateInfo{}, s.wrap("list aggregates of type "+typ, err))
		}
	}
}

func (s *Store) listByID(ctx context.Context, typ string, opts eventsource.ListOptions, yield func(eventsource.AggregateInfo, error) bool) (int, error) {
	after, listed := opts.AfterID, 0
	page := make([]eventsource.AggregateInfo, 0, listPageSize)
	for {
		n := listPageSize
		if opts.Limit > 0 {
			n = min(n, opts.Limit-listed)
		}
		q := s.q.listByID
		if opts.SchemaVersion > 0 {
			q = s.q.listByIDOf
		}
		rows, err := s.pool.Query(ctx, q, typ, int32(opts.SchemaVersion), opts.MinBehind, pgID(after), n)
		if err != nil {
			return listed, err
		}
		page = page[:0]
		for rows.Next() {
			var in eventsource.AggregateInfo
			var schema int32
			var behind int64
			if err := rows.Scan((*[16]byte)(&in.AggregateID), &in.HeadVersion, &in.SnapshotVersion, &schema, &behind); err != nil {
				rows.Close()
				return listed, err
			}
			in.SnapshotSchemaVersion = int(schema)
			page = append(page, in)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return listed, err
		}
		for _, in := range page {
			listed++
			if !yield(in, nil) {
				return listed, nil
			}
		}
		if len(page) < n || (opts.Limit > 0 && listed >= opts.Limit) {
			return listed, nil
		}
		after = page[len(page)-1].AggregateID
	}
}

func (s *Store) listMostBehind(ctx context.Context, typ string, opts eventsource.ListOptions, yield func(eventsource.AggregateInfo, error) bool) (int, error) {
	var limit *int64
	if opts.Limit > 0 {
		l := int64(opts.Limit)
		limit = &l
	}
	q := s.q.listMostBehind
	if opts.SchemaVersion > 0 {
		q = s.q.listMostBehindOf
	}
	rows, err := s.pool.Query(ctx, q, typ, int32(opts.SchemaVersion), opts.MinBehind, limit)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	listed := 0
	for rows.Next() {
		var in eventsource.AggregateInfo
		var schema int32
		var behind int64
		if err := rows.Scan((*[16]byte)(&in.AggregateID), &in.HeadVersion, &in.SnapshotVersion, &schema, &behind); err != nil {
			return listed, err
		}
		in.SnapshotSchemaVersion = int(schema)
		listed++
		if !yield(in, nil) {
			return listed, nil
		}
	}
	return listed, rows.Err()
}
