package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"sync/atomic"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

// LoadSnapshotAndEvents implements [eventsource.Store]: the snapshot and
// the first window of events from it are read in one read transaction on
// one connection, so they are one view of the database (a snapshot
// written meanwhile by another connection is seen by neither or both).
// The transaction ends before it returns; the events after the first
// window, when the tail is longer, are read like ReadEvents, holding no
// connection between windows. Iterating the events a second time reads
// them again.
func (s *Store) LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (_ *eventsource.Snapshot, _ iter.Seq2[eventsource.RecordedEvent, error], err error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return nil, nil, err
	}
	if err := storekit.ValidateSchemaVersion(schemaVersion); err != nil {
		return nil, nil, err
	}
	readCtx := ctx
	ctx, span := s.startSpan(ctx, "LoadSnapshotAndEvents", typ, id)
	defer func() { endSpan(span, err) }()
	snap, page, err := s.loadFirst(ctx, typ, id, schemaVersion)
	if err != nil {
		var de *eventsource.DecodeError
		if errors.As(err, &de) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("sqlitestore: load snapshot and events of %s %s: %w", typ, id, s.mapErr(err))
	}
	from := int64(1)
	if snap != nil {
		from = snap.Version
	}
	full := len(page) == s.window
	var taken atomic.Bool // the first iteration yields the page read here
	events := func(yield func(eventsource.RecordedEvent, error) bool) {
		if taken.Swap(true) {
			s.ReadEvents(readCtx, typ, id, from-1)(yield)
			return
		}
		for i := range page {
			if !yield(page[i], nil) {
				return
			}
		}
		if full {
			s.ReadEvents(readCtx, typ, id, page[len(page)-1].Version)(yield)
		}
	}
	return snap, events, nil
}

// loadFirst reads the snapshot of typ/id of schemaVersion and the first
// window of the events from it, in one read-only transaction.
func (s *Store) loadFirst(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (_ *eventsource.Snapshot, _ []eventsource.RecordedEvent, err error) {
	getSnapshot, err := s.stmt(ctx, false, s.q.getSnapshot)
	if err != nil {
		return nil, nil, err
	}
	readEvents, err := s.stmt(ctx, false, s.q.readEvents)
	if err != nil {
		return nil, nil, err
	}
	// Read-only: a deferred BEGIN whatever the DSN's _txlock says, so the
	// read takes no write lock.
	tx, err := s.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if cerr := tx.Commit(); err == nil {
			err = cerr
		}
	}()
	idStr := id.String()
	snap, err := scanSnapshot(tx.StmtContext(ctx, getSnapshot).QueryRowContext(ctx, idStr, typ, schemaVersion), typ)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		snap = nil
	case err != nil:
		return nil, nil, err
	default:
		snap.AggregateID = id
	}
	after := int64(0)
	if snap != nil {
		after = snap.Version - 1
	}
	page, err := s.readWindow(ctx, tx.StmtContext(ctx, readEvents), typ, id, idStr, after, nil)
	if err != nil {
		return nil, nil, err
	}
	return snap, page, nil
}
