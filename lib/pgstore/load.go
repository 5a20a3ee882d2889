package pgstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
)

// LoadSnapshotAndEvents implements [eventsource.Store]: the
// snapshot of schemaVersion's row and the first page of events from it
// go in one pgx.Batch, one round trip (each a primary-key lookup of the
// snapshot); later pages (streams longer than a page past the snapshot)
// are read like ReadEvents. The first page is read before returning, so no
// connection is held while the caller decodes. When a snapshot write
// between the two statements makes the page start elsewhere than the
// snapshot returned says, the events are read again from the right
// version.
//
// The first page's slice is recycled (see pagePool) once an iteration of
// the events has finished with it; iterating them again reads them
// afresh, from the store, as ReadEvents does.
func (s *Store) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (_ *eventsource.Snapshot, _ iter.Seq2[eventsource.RecordedEvent, error], err error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return nil, nil, err
	}
	if err := storekit.ValidateSchemaVersion(schemaVersion); err != nil {
		return nil, nil, err
	}
	ctx, span := s.span(ctx, "pgstore.LoadSnapshotAndEvents", typ, id)
	defer func() { endSpan(span, err) }()
	batch := &pgx.Batch{}
	batch.Queue(s.q.getSnapshot, pgID(id), typ, int32(schemaVersion))
	batch.Queue(s.q.loadEvents, typ, pgID(id), int32(schemaVersion))
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()

	snap := &eventsource.Snapshot{AggregateID: id, AggregateType: typ}
	var (
		schema  int32
		eventID [16]byte // see pgID
	)
	switch err := br.QueryRow().Scan(&snap.Version, &schema, &snap.State, &snap.CreatedAt, &eventID); {
	case errors.Is(err, pgx.ErrNoRows):
		snap = nil
	case err != nil:
		return nil, nil, s.wrap(fmt.Sprintf("load snapshot of %s %s", typ, id), err)
	default:
		snap.SchemaVersion, snap.EventID = int(schema), eventID
		snap.CreatedAt = snap.CreatedAt.UTC()
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, s.wrap(fmt.Sprintf("load events of %s %s", typ, id), err)
	}
	pp := pagePool.Get().(*[]eventsource.RecordedEvent)
	page := (*pp)[:0]
	sc := newEventScanner(typ, id)
	for rows.Next() {
		rec, err := sc.scan(rows)
		if err != nil {
			rows.Close()
			putPage(pp, page)
			var de *eventsource.DecodeError
			if errors.As(err, &de) {
				return nil, nil, err
			}
			return nil, nil, s.wrap(fmt.Sprintf("load events of %s %s", typ, id), err)
		}
		page = append(page, rec)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		putPage(pp, page)
		return nil, nil, s.wrap(fmt.Sprintf("load events of %s %s", typ, id), err)
	}
	// The two statements each see the database at their own moment, so a
	// snapshot written or deleted between them makes the events start at
	// another version than the snapshot returned asks for. Then the page
	// is dropped and the events read again from where they should start
	// (one more round trip, only after such a race).
	start := int64(1)
	if snap != nil {
		start = snap.Version
	}
	if len(page) > 0 && page[0].Version != start {
		putPage(pp, page)
		span.SetAttributes(attribute.Bool("evsnap.load.reread", true))
		return snap, s.ReadEvents(ctx, typ, id, start-1), nil
	}
	full := len(page) == s.cfg.readPageSize
	var taken atomic.Bool // the first iteration takes the page
	events := func(yield func(eventsource.RecordedEvent, error) bool) {
		if taken.Swap(true) { // iterated before: the page went back to the pool
			s.ReadEvents(ctx, typ, id, start-1)(yield)
			return
		}
		defer putPage(pp, page)
		for _, rec := range page {
			if !yield(rec, nil) {
				return
			}
		}
		if full {
			s.ReadEvents(ctx, typ, id, page[len(page)-1].Version)(yield)
		}
	}
	return snap, events, nil
}

// pagePool recycles the first pages of LoadSnapshotAndEvents. A page is
// most of what a load allocates (about 37 KB for 100 events, grown by
// append), and the snapshotter worker makes one per aggregate it rebuilds;
// its events are yielded by value, so once an iteration is over nothing
// refers to the slice.
var pagePool = sync.Pool{New: func() any { return new([]eventsource.RecordedEvent) }}

// maxPooledPage bounds the pages kept (a full page of the default 1,000
// events grows to 1,024); larger ones are left to the collector.
const maxPooledPage = 1024

// putPage clears page (so the pool pins no payloads) and puts it back
// into pp and pagePool.
func putPage(pp *[]eventsource.RecordedEvent, page []eventsource.RecordedEvent) {
	if cap(page) > maxPooledPage {
		return
	}
	clear(page)
	*pp = page[:0]
	pagePool.Put(pp)
}
