package memstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

// sweepMarks holds a Store's sweep marks.
type sweepMarks struct {
	mu   sync.Mutex
	rows map[eventsource.SweepMarkKey]eventsource.SweepMark
}

func newSweepMarks() *sweepMarks {
	return &sweepMarks{rows: map[eventsource.SweepMarkKey]eventsource.SweepMark{}}
}

func (m *sweepMarks) clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.rows)
}

// ScanAggregates implements [eventsource.SweepStore]. Appends take the
// store's write lock, so every change's place is final once made. A page
// sorts the type's streams (O(aggregates of the type)): memstore is for
// tests and development.
func (s *Store) ScanAggregates(ctx context.Context, typ string, opts eventsource.ScanOptions) (eventsource.ScanPage, error) {
	var page eventsource.ScanPage
	if err := storekit.ValidateScan(typ, opts); err != nil {
		return page, err
	}
	if err := ctx.Err(); err != nil {
		return page, err
	}
	var cands []eventsource.ScannedAggregate
	es := s.EventStore
	es.mu.RLock()
	for k, stream := range es.streams {
		if k.typ != typ || stream == nil || stream.n == 0 {
			continue
		}
		a := eventsource.ScannedAggregate{
			AggregateInfo: eventsource.AggregateInfo{AggregateID: k.id, HeadVersion: stream.n},
			Changed:       eventsource.ChangePosition{Seq: es.changed[k], ID: k.id},
		}
		if opts.ByID && bytes.Compare(k.id[:], opts.AfterID[:]) > 0 || !opts.ByID && a.Changed.Compare(opts.After) > 0 {
			cands = append(cands, a)
		}
	}
	page.Horizon = storekit.NextPosition(es.changeSeq)
	es.mu.RUnlock()

	slices.SortFunc(cands, func(a, b eventsource.ScannedAggregate) int {
		if opts.ByID {
			return bytes.Compare(a.AggregateID[:], b.AggregateID[:])
		}
		return a.Changed.Compare(b.Changed)
	})
	if len(cands) > opts.Examine {
		cands = cands[:opts.Examine]
	}
	var last eventsource.ChangePosition
	if n := len(cands); n > 0 {
		last = cands[n-1].Changed
	}
	s.SnapshotStore.mu.RLock()
	for _, a := range cands {
		if r, ok := s.SnapshotStore.row(typ, a.AggregateID, opts.SchemaVersion); ok {
			a.SnapshotVersion, a.SnapshotSchemaVersion = r.Version, r.SchemaVersion
		}
		if a.Behind() >= opts.MinBehind {
			page.Behind = append(page.Behind, a)
		}
	}
	s.SnapshotStore.mu.RUnlock()
	storekit.FinishScanPage(&page, opts, len(cands), last)
	return page, nil
}

// GetSweepMark implements [eventsource.SweepStore].
func (s *Store) GetSweepMark(ctx context.Context, key eventsource.SweepMarkKey) (eventsource.SweepMark, error) {
	if err := storekit.ValidateSweepMarkKey(key); err != nil {
		return eventsource.SweepMark{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventsource.SweepMark{}, err
	}
	s.marks.mu.Lock()
	defer s.marks.mu.Unlock()
	return s.marks.rows[key], nil
}

// PutSweepMark implements [eventsource.SweepStore]: the compare and the
// write happen under the marks' lock.
func (s *Store) PutSweepMark(ctx context.Context, key eventsource.SweepMarkKey, m eventsource.SweepMark) (int64, error) {
	if err := storekit.ValidateSweepMark(key, m); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.marks.mu.Lock()
	defer s.marks.mu.Unlock()
	if stored := s.marks.rows[key].Generation; stored != m.Generation {
		return 0, fmt.Errorf("%w: sweep mark %s of %s schema %d is at generation %d, not %d", eventsource.ErrSweepMarkMoved,
			key.Name, key.AggregateType, key.SchemaVersion, stored, m.Generation)
	}
	m.Generation = storekit.NewSweepGeneration()
	s.marks.rows[key] = m
	return m.Generation, nil
}

// DeleteSnapshot implements [eventsource.SnapshotStore]; when it removes
// a snapshot it moves the aggregate's stream to the end of the change
// order (see [eventsource.SweepStore]).
func (s *Store) DeleteSnapshot(ctx context.Context, typ string, id uuid.UUID) (bool, error) {
	deleted, err := s.SnapshotStore.DeleteSnapshot(ctx, typ, id)
	if deleted {
		s.touch(typ, id)
	}
	return deleted, err
}

// DeleteStaleSnapshot implements [eventsource.SnapshotStore]; when it
// removes the snapshot it moves the aggregate's stream to the end of the
// change order (see [eventsource.SweepStore]).
func (s *Store) DeleteStaleSnapshot(ctx context.Context, snap eventsource.Snapshot) (bool, error) {
	deleted, err := s.SnapshotStore.DeleteStaleSnapshot(ctx, snap)
	if deleted {
		s.touch(snap.AggregateType, snap.AggregateID)
	}
	return deleted, err
}

// DeleteSnapshotsByType implements [eventsource.SnapshotStore]; after the
// snapshots it removes the sweep marks of the schema versions whose
// snapshots it removed (see [eventsource.SweepStore]).
func (s *Store) DeleteSnapshotsByType(ctx context.Context, typ string, schemaVersionBelow int) (int64, error) {
	n, err := s.SnapshotStore.DeleteSnapshotsByType(ctx, typ, schemaVersionBelow)
	if err != nil {
		return n, err
	}
	s.dropMarks(typ, schemaVersionBelow)
	return n, nil
}

// dropMarks removes the sweep marks of typ's schema versions below
// schemaVersionBelow (0: all), whose snapshots were pruned.
func (s *Store) dropMarks(typ string, schemaVersionBelow int) {
	s.marks.mu.Lock()
	defer s.marks.mu.Unlock()
	for k := range s.marks.rows {
		if k.AggregateType == typ && (schemaVersionBelow == 0 || k.SchemaVersion < schemaVersionBelow) {
			delete(s.marks.rows, k)
		}
	}
}

// touch moves typ/id's stream to the end of the change order.
func (s *Store) touch(typ string, id uuid.UUID) {
	s.EventStore.mu.Lock()
	defer s.EventStore.mu.Unlock()
	s.EventStore.touch(streamKey{typ, id})
}
