package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

// LoadSnapshotAndEvents implements [eventsource.Store]: the snapshot of
// schemaVersion's row (a primary-key lookup) and the first page of events
// from its version are read by one statement, in one round trip, and seen
// at one moment, so the events always start where the snapshot says; later
// pages (streams longer than a page past the snapshot) are read like
// ReadEvents. The first page is read before returning, so no connection is
// held while the caller decodes.
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
	rows, err := s.pool.Query(ctx, s.q.loadSnapshotAndEvents, typ, pgID(id), int32(schemaVersion))
	if err != nil {
		return nil, nil, s.wrap(fmt.Sprintf("load snapshot and events of %s %s", typ, id), err)
	}
	pp := pagePool.Get().(*[]eventsource.RecordedEvent)
	page := (*pp)[:0]
	var snap *eventsource.Snapshot
	sc := newEventScanner(typ, id)
	for rows.Next() {
		var (
			rec eventsource.RecordedEvent
			sn  *eventsource.Snapshot
		)
		rec, sn, err = sc.scanLoad(rows)
		if err != nil {
			break
		}
		if sn != nil {
			snap = sn
			continue
		}
		page = append(page, rec)
	}
	rows.Close()
	if err == nil {
		err = rows.Err()
	}
	if err != nil {
		putPage(pp, page)
		var de *eventsource.DecodeError
		if errors.As(err, &de) {
			return nil, nil, err
		}
		return nil, nil, s.wrap(fmt.Sprintf("load snapshot and events of %s %s", typ, id), err)
	}
	// The events' subquery is ordered and PostgreSQL appends the union's
	// branches in turn, so this holds; the check costs one pass, and an
	// executor that interleaved them would cost a sort, not a wrong load.
	if !slices.IsSortedFunc(page, byVersion) {
		slices.SortFunc(page, byVersion)
	}
	start := int64(1)
	if snap != nil {
		start = snap.Version
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

func byVersion(a, b eventsource.RecordedEvent) int { return cmp.Compare(a.Version, b.Version) }

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
