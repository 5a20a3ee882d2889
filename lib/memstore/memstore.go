// Package memstore holds events and snapshots in memory: for tests,
// development and examples. Data is lost when the process exits and is not
// shared between processes. [New] returns an [eventsource.Store]; the
// [EventStore] and [SnapshotStore] halves also stand alone, to pair with
// other stores through [eventsource.Split].
//
// The event store keeps each stream in chunks indexed by version, so
// reading the events after version V costs O(events after V), never a copy
// of the whole stream, and appending never copies a long stream: snapshot
// loads and saves stay flat as streams grow. The store-wide set of event
// ids keeps time-ordered (version 7) ids sorted, so checking a new one
// stays flat as the store grows too. It hands back the decoded events it
// was given, so loads skip decoding (when the loading registry registers
// each type to the same Go type; an unknown type fails the load as on
// every other store).
package memstore

import (
	"cmp"
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/evsnap/evsnap/internal/bytechunk"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

type streamKey struct {
	typ string
	id  uuid.UUID
}

// storedEvent is an event as the event store keeps it: a RecordedEvent
// without the fields its stream and its place in it give.
type storedEvent struct {
	id         uuid.UUID
	typ        string
	payload    []byte
	event      eventsource.Event
	metadata   eventsource.Metadata
	occurredAt time.Time
}

// streamChunk is how many events a chunk of a stream holds.
const streamChunk = 256

// stream is one aggregate's events, version v at index v-1, in chunks of
// streamChunk events; only the last is partly filled, and only the first
// grows (by doubling, from a few events): so appending copies at most a
// small first chunk, never the events of a long stream. Stored events are
// never changed, so a reader may keep a chunk's slice of them after the
// store's lock is released: appends write past its end, or into a new
// array.
type stream struct {
	chunks [][]storedEvent
	n      int64
}

// add appends e.
func (st *stream) add(e storedEvent) {
	k := len(st.chunks)
	switch {
	case k == 0:
		st.chunks = append(st.chunks, make([]storedEvent, 0, 4))
		k = 1
	case len(st.chunks[k-1]) == streamChunk:
		st.chunks = append(st.chunks, make([]storedEvent, 0, streamChunk))
		k++
	}
	last := st.chunks[k-1]
	if len(last) == cap(last) { // only the first chunk
		grown := make([]storedEvent, len(last), min(2*cap(last), streamChunk))
		copy(grown, last)
		last = grown
	}
	st.chunks[k-1] = append(last, e)
	st.n++
}

// page returns the stored events from index i (version i+1) to the end
// of i's chunk or of the stream.
func (st *stream) page(i int64) []storedEvent {
	if i >= st.n {
		return nil
	}
	return st.chunks[i/streamChunk][i%streamChunk:]
}

// EventStore is an in-memory [eventsource.EventStore], safe for concurrent
// use. The zero value is not usable; call [NewEventStore].
type EventStore struct {
	mu      sync.RWMutex
	streams map[streamKey]*stream
	ids     idSet
	count   int
	// changed holds each stream's place in the change order (see
	// eventsource.SweepStore): the value of changeSeq when an append (or
	// a snapshot's removal) last moved it. changeSeq only grows, Clear
	// included.
	changed   map[streamKey]int64
	changeSeq int64
}

var _ eventsource.EventStore = (*EventStore)(nil)

// NewEventStore returns an empty event store.
func NewEventStore() *EventStore {
	s := &EventStore{}
	s.reset()
	return s
}

func (s *EventStore) reset() {
	s.streams = make(map[streamKey]*stream)
	s.ids = idSet{}
	s.count = 0
	s.changed = make(map[streamKey]int64)
}

// touch moves the stream of key, if it exists, to the end of the change
// order. The caller holds the write lock.
func (s *EventStore) touch(key streamKey) {
	if st := s.streams[key]; st != nil && st.n > 0 {
		s.changeSeq++
		s.changed[key] = s.changeSeq
	}
}

// head returns the version of typ/id's stream (0 for none). The caller
// holds the lock.
func (s *EventStore) head(typ string, id uuid.UUID) int64 {
	if st := s.streams[streamKey{typ, id}]; st != nil {
		return st.n
	}
	return 0
}

// Append implements [eventsource.EventStore]. It copies the payloads and
// metadata: the caller may reuse events afterwards.
func (s *EventStore) Append(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) (eventsource.AppendResult, error) {
	if err := storekit.ValidateAppend(typ, id, expected, events); err != nil {
		return eventsource.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventsource.AppendResult{}, err
	}
	key := streamKey{typ, id}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	var head int64
	if st != nil {
		head = st.n
	}
	if expected != eventsource.AnyVersion && int64(expected) != head {
		return eventsource.AppendResult{}, &eventsource.ConflictError{
			AggregateType: typ, AggregateID: id, Expected: int64(expected), Actual: head,
		}
	}
	// Claim the ids, one set operation each (ValidateAppend refused ids
	// repeated within the append); an id already stored undoes the claims.
	for i := range events {
		if !s.ids.add(events[i].ID) {
			for _, e := range events[:i] {
				s.ids.remove(e.ID)
			}
			return eventsource.AppendResult{}, &eventsource.DuplicateEventIDError{EventID: events[i].ID, AggregateType: typ, AggregateID: id}
		}
	}
	if st == nil {
		st = &stream{}
		s.streams[key] = st
	}
	for i := range events {
		e := &events[i]
		st.add(storedEvent{
			id:         e.ID,
			typ:        e.Type,
			payload:    append([]byte(nil), e.Payload...),
			event:      e.Event,
			metadata:   e.Metadata.Clone(),
			occurredAt: e.OccurredAt.UTC().Truncate(time.Microsecond),
		})
	}
	s.count += len(events)
	s.touch(key)
	return eventsource.AppendResult{
		FirstVersion: head + 1,
		LastVersion:  head + int64(len(events)),
		CommittedAt:  time.Now().UTC().Truncate(time.Microsecond),
	}, nil
}

// ReadEvents implements [eventsource.EventStore]. It reads the events
// after `after` a chunk of the stream at a time, holding the read lock
// only to find the chunk (stored events never change, so they are copied
// unlocked), and stops at the head the last chunk was read at. Each event
// it yields is the caller's: payload copied (into a buffer per chunk,
// sized for as many payloads as its first) and metadata cloned; Event is
// the stored value.
func (s *EventStore) ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[eventsource.RecordedEvent, error] {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return storekit.ErrorSeq(err)
	}
	return func(yield func(eventsource.RecordedEvent, error) bool) {
		next := max(after, 0) // index of the next event: version next+1
		var payloads bytechunk.Copier
		for {
			if err := ctx.Err(); err != nil {
				yield(eventsource.RecordedEvent{}, err)
				return
			}
			var page []storedEvent
			var head int64
			s.mu.RLock()
			if st := s.streams[streamKey{typ, id}]; st != nil {
				page, head = st.page(next), st.n
			}
			s.mu.RUnlock()
			if len(page) > 0 {
				// As many payloads as the first: a hint, exact for a
				// read of one event, and no pass over the page for it.
				payloads.Expect(len(page) * len(page[0].payload))
			}
			for i := range page {
				e := &page[i]
				next++
				rec := eventsource.RecordedEvent{
					ID: e.id, AggregateType: typ, AggregateID: id, Version: next, Type: e.typ,
					Payload: payloads.Copy(e.payload), Event: e.event, Metadata: e.metadata.Clone(), OccurredAt: e.occurredAt,
				}
				if !yield(rec, nil) {
					return
				}
			}
			if next >= head {
				return
			}
		}
	}
}

// StreamVersion implements [eventsource.EventStore].
func (s *EventStore) StreamVersion(ctx context.Context, typ string, id uuid.UUID) (int64, error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.head(typ, id), nil
}

// Count returns how many events are stored.
func (s *EventStore) Count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.count
}

// Clear removes every event.
func (s *EventStore) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset()
}

// SnapshotStore is an in-memory [eventsource.SnapshotStore], safe for
// concurrent use. The zero value is not usable; call [NewSnapshotStore].
type SnapshotStore struct {
	kept int
	mu   sync.RWMutex
	// rows holds each aggregate's snapshots, one per schema version, in
	// ascending schema version order (at most kept of them).
	rows map[streamKey][]eventsource.Snapshot
}

var _ eventsource.SnapshotStore = (*SnapshotStore)(nil)

// Option configures a [Store] or a [SnapshotStore].
type Option func(*SnapshotStore) error

// WithKeptSchemaVersions sets how many schema versions' snapshots the
// store keeps per aggregate (default storekit.DefaultKeptSchemaVersions,
// 2: the current and the previous); see [eventsource.SnapshotStore].
// It must be from 1 to eventsource.MaxSchemaVersion.
func WithKeptSchemaVersions(n int) Option {
	return func(s *SnapshotStore) error {
		if err := storekit.ValidateKeptSchemaVersions(n); err != nil {
			return fmt.Errorf("memstore: %w", err)
		}
		s.kept = n
		return nil
	}
}

// NewSnapshotStore returns an empty snapshot store. memstore is for tests
// and development, so its constructors return no error: an invalid
// option (a programming error) panics, with an error matching
// eventsource.ErrInvalidOption that names it.
func NewSnapshotStore(opts ...Option) *SnapshotStore {
	s := &SnapshotStore{kept: storekit.DefaultKeptSchemaVersions, rows: make(map[streamKey][]eventsource.Snapshot)}
	for _, o := range opts {
		if o == nil {
			panic(fmt.Errorf("%w: memstore: nil Option", eventsource.ErrInvalidOption))
		}
		if err := o(s); err != nil {
			panic(err)
		}
	}
	return s
}

func cloneSnapshot(s eventsource.Snapshot) eventsource.Snapshot {
	s.State = append([]byte(nil), s.State...)
	s.CreatedAt = s.CreatedAt.UTC().Truncate(time.Microsecond)
	return s
}

// save applies one snapshot to its aggregate's rows under the write lock:
// the row of its schema version under [eventsource.Snapshot.Supersedes],
// the kept window against the aggregate's newest schema version.
func (s *SnapshotStore) save(snap eventsource.Snapshot) bool {
	key := streamKey{snap.AggregateType, snap.AggregateID}
	rows := s.rows[key]
	newest := snap.SchemaVersion
	if n := len(rows); n > 0 {
		newest = max(newest, rows[n-1].SchemaVersion)
	}
	// Drop the rows out of the window first: a refused save still
	// applies it (after racing writers, the next save heals).
	kept := rows[:0]
	for _, r := range rows {
		if storekit.SchemaKept(r.SchemaVersion, newest, s.kept) {
			kept = append(kept, r)
		}
	}
	rows = kept
	stored := false
	if storekit.SchemaKept(snap.SchemaVersion, newest, s.kept) {
		i, found := slices.BinarySearchFunc(rows, snap.SchemaVersion, func(r eventsource.Snapshot, sv int) int { return cmp.Compare(r.SchemaVersion, sv) })
		switch {
		case !found:
			rows = slices.Insert(rows, i, cloneSnapshot(snap))
			stored = true
		case snap.Supersedes(&rows[i]):
			rows[i] = cloneSnapshot(snap)
			stored = true
		}
	}
	if len(rows) == 0 {
		delete(s.rows, key)
	} else {
		s.rows[key] = rows
	}
	return stored
}

// row returns the stored snapshot of typ/id's row of schema version sv.
// The caller holds the lock.
func (s *SnapshotStore) row(typ string, id uuid.UUID, sv int) (eventsource.Snapshot, bool) {
	for _, r := range s.rows[streamKey{typ, id}] {
		if r.SchemaVersion == sv {
			return r, true
		}
	}
	return eventsource.Snapshot{}, false
}

// SaveSnapshot implements [eventsource.SnapshotStore]: the checks and the
// writes happen under the store's lock.
func (s *SnapshotStore) SaveSnapshot(ctx context.Context, snap eventsource.Snapshot) (bool, error) {
	if err := snap.Validate(); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.save(snap), nil
}

// SaveSnapshots implements [eventsource.SnapshotStore]: the batch is
// applied under one lock, so readers see all of it or none of it.
func (s *SnapshotStore) SaveSnapshots(ctx context.Context, snaps []eventsource.Snapshot) ([]bool, error) {
	write, err := storekit.ResolveSnapshotBatch(snaps, s.kept)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	stored := make([]bool, len(snaps))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range write {
		stored[i] = s.save(snaps[i])
	}
	return stored, nil
}

// GetSnapshot implements [eventsource.SnapshotStore].
func (s *SnapshotStore) GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*eventsource.Snapshot, error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return nil, err
	}
	if err := storekit.ValidateSchemaVersion(schemaVersion); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	snap, ok := s.row(typ, id, schemaVersion)
	s.mu.RUnlock()
	if !ok {
		return nil, nil
	}
	snap = cloneSnapshot(snap)
	return &snap, nil
}

// GetSnapshots implements [eventsource.SnapshotStore]. It takes the
// read lock once for the whole batch, and each request gets its own copy
// of its snapshot, even when an id is asked for twice.
func (s *SnapshotStore) GetSnapshots(ctx context.Context, typ string, schemaVersion int, ids []uuid.UUID) ([]*eventsource.Snapshot, error) {
	if err := storekit.ValidateGetSnapshots(typ, schemaVersion, ids); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	found := make([]eventsource.Snapshot, len(ids))
	ok := make([]bool, len(ids))
	s.mu.RLock()
	for i, id := range ids {
		found[i], ok[i] = s.row(typ, id, schemaVersion)
	}
	s.mu.RUnlock()
	// Stored states are never modified, so they are copied unlocked.
	out := make([]*eventsource.Snapshot, len(ids))
	for i := range found {
		if ok[i] {
			snap := cloneSnapshot(found[i])
			out[i] = &snap
		}
	}
	return out, nil
}

// DeleteSnapshot implements [eventsource.SnapshotStore].
func (s *SnapshotStore) DeleteSnapshot(ctx context.Context, typ string, id uuid.UUID) (bool, error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	key := streamKey{typ, id}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.rows[key]
	delete(s.rows, key)
	return ok, nil
}

// DeleteStaleSnapshot implements [eventsource.SnapshotStore]: the compare
// and the delete happen under the store's lock.
func (s *SnapshotStore) DeleteStaleSnapshot(ctx context.Context, snap eventsource.Snapshot) (bool, error) {
	if err := storekit.ValidateStream(snap.AggregateType, snap.AggregateID); err != nil {
		return false, err
	}
	if err := storekit.ValidateSchemaVersion(snap.SchemaVersion); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	key := streamKey{snap.AggregateType, snap.AggregateID}
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := s.rows[key]
	i := slices.IndexFunc(rows, func(r eventsource.Snapshot) bool {
		return r.SchemaVersion == snap.SchemaVersion && r.Version == snap.Version && r.EventID == snap.EventID
	})
	if i < 0 {
		return false, nil
	}
	if rows = slices.Delete(rows, i, i+1); len(rows) == 0 {
		delete(s.rows, key)
	} else {
		s.rows[key] = rows
	}
	return true, nil
}

// DeleteSnapshotsByType implements [eventsource.SnapshotStore].
func (s *SnapshotStore) DeleteSnapshotsByType(ctx context.Context, typ string, schemaVersionBelow int) (int64, error) {
	if err := storekit.ValidateDeleteByType(typ, schemaVersionBelow); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for k := range s.rows {
		if k.typ == typ {
			n += s.deleteBelow(k, schemaVersionBelow)
		}
	}
	return n, nil
}

// deleteBelow removes key's rows with a schema version below
// schemaVersionBelow (every row for 0) under the write lock and returns
// how many it removed.
func (s *SnapshotStore) deleteBelow(key streamKey, schemaVersionBelow int) int64 {
	rows := s.rows[key]
	kept := rows[:0]
	for _, r := range rows {
		if schemaVersionBelow == 0 || r.SchemaVersion < schemaVersionBelow {
			continue
		}
		kept = append(kept, r)
	}
	if len(kept) == 0 {
		delete(s.rows, key)
	} else {
		s.rows[key] = kept
	}
	return int64(len(rows) - len(kept))
}

// Count returns how many snapshots are stored (rows: an aggregate has one
// per kept schema version).
func (s *SnapshotStore) Count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, rows := range s.rows {
		n += len(rows)
	}
	return n
}

// Clear removes every snapshot.
func (s *SnapshotStore) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = make(map[streamKey][]eventsource.Snapshot)
}
