package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"iter"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

// ListAggregates implements [eventsource.Store] with one query over
// the streams table LEFT JOIN the snapshots table (one primary-key lookup
// per aggregate, of opts.SchemaVersion's row or of the newest one); it
// reads no events.
//
// Id order walks the streams primary key (aggregate_type, aggregate_id)
// from AfterID: ids are stored as canonical lowercase UUID strings, which
// order like the UUIDs' bytes, so paging with AfterID and Limit costs
// O(page). MostBehindFirst sorts every aggregate of the type (a top-Limit sort
// when Limit is set).
//
// A file store streams the rows while the caller iterates, holding one read
// connection (WAL lets writes proceed meanwhile). A store on a single
// connection (":memory:") collects the listing first and then yields it,
// leaving the connection free for calls the caller makes in the loop.
func (s *Store) ListAggregates(ctx context.Context, typ string, opts eventsource.ListOptions) iter.Seq2[eventsource.AggregateInfo, error] {
	if err := storekit.ValidateList(typ, opts); err != nil {
		err = fmt.Errorf("sqlitestore: %w", err)
		return func(yield func(eventsource.AggregateInfo, error) bool) { yield(eventsource.AggregateInfo{}, err) }
	}
	return func(yield func(eventsource.AggregateInfo, error) bool) {
		ctx, span := s.startSpan(ctx, "ListAggregates", typ, uuid.Nil)
		var err error
		defer func() { endSpan(span, err) }()
		fail := func(e error) {
			err = fmt.Errorf("sqlitestore: list aggregates of %s: %w", typ, s.mapErr(e))
			yield(eventsource.AggregateInfo{}, err)
		}
		query, after := s.q.listByID, ""
		if opts.MostBehindFirst {
			query = s.q.listMostBehind
		} else if opts.AfterID != uuid.Nil {
			after = opts.AfterID.String()
		}
		limit := int64(-1) // SQLite: no limit
		if opts.Limit > 0 {
			limit = int64(opts.Limit)
		}
		st, e := s.stmt(ctx, false, query)
		if e != nil {
			fail(e)
			return
		}
		rows, e := st.QueryContext(ctx, typ, after, max(opts.MinBehind, 0), limit, opts.SchemaVersion)
		if e != nil {
			fail(e)
			return
		}
		defer rows.Close()
		var collected []eventsource.AggregateInfo
		var idBytes sql.RawBytes
		for rows.Next() {
			var in eventsource.AggregateInfo
			if e := rows.Scan(&idBytes, &in.HeadVersion, &in.SnapshotVersion, &in.SnapshotSchemaVersion); e != nil {
				fail(e)
				return
			}
			if in.AggregateID, e = uuid.ParseBytes(idBytes); e != nil {
				fail(fmt.Errorf("stored aggregate id %q: %w", idBytes, e))
				return
			}
			if s.singleConn {
				collected = append(collected, in)
				continue
			}
			if !yield(in, nil) {
				return
			}
		}
		if e := rows.Err(); e != nil {
			fail(e)
			return
		}
		if e := rows.Close(); e != nil {
			fail(e)
			return
		}
		for _, in := range collected {
			if !yield(in, nil) {
				return
			}
		}
	}
}
