package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/evsnap/evsnap/internal/bytechunk"
	"github.com/evsnap/evsnap/internal/jsonvalid"
	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"go.opentelemetry.io/otel/attribute"
)

// emptyMetadata is how zero metadata is stored (the JSON of a zero
// eventsource.Metadata), and recognised on read without decoding.
var emptyMetadata = []byte("{}")

// Append implements [eventsource.EventStore]. It writes the stream row and
// every event in one statement, so one round trip and one implicit
// transaction: for an exact expected version N > 0 a conditional UPDATE of
// the stream row (which row-locks it, so concurrent appenders queue and
// every loser sees the winner's version), for [eventsource.NoStream] an
// INSERT ... ON CONFLICT DO NOTHING, for [eventsource.AnyVersion] an
// upsert. When the condition fails nothing is inserted and Append reads the
// stream's version afresh for the *eventsource.ConflictError. A stored or
// repeated event id is an [*eventsource.DuplicateEventIDError] (the unique
// violation on the event id, translated here), a payload that is not JSON
// an error matching [eventsource.ErrInvalidArgument]; nothing is committed
// then either.
func (s *Store) Append(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) (res eventsource.AppendResult, err error) {
	if err := storekit.ValidateAppend(typ, id, expected, events); err != nil {
		return res, err
	}
	ctx, span := s.span(ctx, "pgstore.Append", typ, id,
		attribute.Int64("evsnap.append.expected_version", int64(expected)), telemetrykeys.AttrEventsAppended.Int(len(events)))
	defer func() {
		if errors.Is(err, eventsource.ErrConcurrencyConflict) {
			span.SetAttributes(attribute.Bool("evsnap.append.conflict", true))
			span.End()
			return
		}
		endSpan(span, err)
	}()

	n := len(events)
	ids := make([][16]byte, n) // see pgID: uuid.UUID elements would take pgx's slow reflective path
	types := make([]string, n)
	payloads := make([][]byte, n)
	metas := make([][]byte, n)
	times := make([]time.Time, n)
	for i := range events {
		e := &events[i]
		ids[i], types[i], payloads[i], times[i] = e.ID, e.Type, e.Payload, e.OccurredAt
		if e.Metadata.IsZero() {
			metas[i] = emptyMetadata
		} else if metas[i], err = json.Marshal(e.Metadata); err != nil {
			return res, fmt.Errorf("pgstore: append to %s %s: encode metadata of event %d: %w", typ, id, i, err)
		}
	}
	var (
		sql  = s.q.appendAny
		args = []any{typ, pgID(id), int64(n), ids, types, payloads, metas, times}
	)
	switch {
	case expected == eventsource.NoStream:
		sql = s.q.appendNoStream
	case expected > 0:
		sql = s.q.appendExact
		args = append(args, int64(expected))
	}
	var (
		head        int64
		committedAt time.Time
	)
	err = s.pool.QueryRow(ctx, sql, args...).Scan(&head, &committedAt)
	switch {
	case err == nil:
		span.SetAttributes(telemetrykeys.AttrVersion.Int64(head))
		return eventsource.AppendResult{
			FirstVersion: head - int64(n) + 1,
			LastVersion:  head,
			CommittedAt:  committedAt.UTC().Truncate(time.Microsecond),
		}, nil
	case errors.Is(err, pgx.ErrNoRows):
		return res, s.conflict(ctx, typ, id, expected, nil)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == pgerrcode.UniqueViolation && pgErr.ConstraintName == s.events.name+"_event_id_key":
			return res, s.duplicateEventID(ctx, typ, id, ids, err)
		case pgErr.Code == pgerrcode.UniqueViolation, pgErr.Code == pgerrcode.SerializationFailure:
			// A version clash the stream row did not catch (rows written
			// around the store), or a serialization failure under a
			// stricter default isolation level: both are lost races.
			return res, s.conflict(ctx, typ, id, expected, err)
		case pgErr.Code == pgerrcode.InvalidTextRepresentation || pgErr.Code == pgerrcode.UntranslatableCharacter || pgErr.Code == pgerrcode.CharacterNotInRepertoire:
			return res, fmt.Errorf("pgstore: append to %s %s: %w: %s is not valid JSON for jsonb (%s): %w",
				typ, id, eventsource.ErrInvalidArgument, badJSON(events), pgErr.Detail, err)
		}
	}
	return res, s.wrap(fmt.Sprintf("append to %s %s", typ, id), err)
}

// duplicateEventID builds the error of an append refused for an event id
// that is already stored (ValidateAppend refused ids repeated within it):
// it looks up which of the append's ids is stored, in a new statement that
// sees the commit the insert collided with. If the lookup fails, the
// server's error is returned with it; it still matches
// ErrInvalidArgument.
func (s *Store) duplicateEventID(ctx context.Context, typ string, id uuid.UUID, ids [][16]byte, cause error) error {
	var dup [16]byte
	err := s.pool.QueryRow(ctx, s.q.storedEventID, ids).Scan(&dup)
	if err != nil {
		return fmt.Errorf("pgstore: append to %s %s: %w: an event id of the append is already stored (%w); looking up which failed: %v",
			typ, id, eventsource.ErrDuplicateEventID, cause, err)
	}
	return &eventsource.DuplicateEventIDError{EventID: dup, AggregateType: typ, AggregateID: id}
}

// badJSON names the first event whose payload is not JSON, for an error.
func badJSON(events []eventsource.NewEvent) string {
	for i := range events {
		if !jsonvalid.Valid(events[i].Payload) {
			return fmt.Sprintf("the payload of event %d (%s, id %s)", i, events[i].Type, events[i].ID)
		}
	}
	return "a payload or metadata value"
}

// conflict builds the ConflictError of a refused append, reading the
// stream's version in a new statement so it sees the winner's commit.
func (s *Store) conflict(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, cause error) error {
	ce := &eventsource.ConflictError{AggregateType: typ, AggregateID: id, Expected: int64(expected)}
	actual, err := s.streamVersion(ctx, typ, id)
	if err != nil {
		ce.Actual = -1
		return fmt.Errorf("%w (reading the stream's version failed: %v)", ce, err)
	}
	ce.Actual = actual
	if cause != nil {
		return fmt.Errorf("%w (%v)", ce, cause)
	}
	return ce
}

// StreamVersion implements [eventsource.EventStore]: one primary-key lookup
// in the streams table.
func (s *Store) StreamVersion(ctx context.Context, typ string, id uuid.UUID) (v int64, err error) {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return 0, err
	}
	ctx, span := s.span(ctx, "pgstore.StreamVersion", typ, id)
	defer func() { endSpan(span, err) }()
	return s.streamVersion(ctx, typ, id)
}

func (s *Store) streamVersion(ctx context.Context, typ string, id uuid.UUID) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, s.q.streamVersion, typ, pgID(id)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.wrap(fmt.Sprintf("stream version of %s %s", typ, id), err)
	}
	return v, nil
}

// ReadEvents implements [eventsource.EventStore]. It streams pgx rows in
// version order, a page of events (see [WithReadPageSize]) per query: each
// query walks the (aggregate_type, aggregate_id, version) index from the
// last version read, so the cost depends only on the events after `after`,
// nothing is sorted, and a query is never open for longer than the caller
// takes over one page. Breaking out of the loop closes the rows. Payload
// holds the stored JSON (jsonb's normal form); Event is nil.
func (s *Store) ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[eventsource.RecordedEvent, error] {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return storekit.ErrorSeq(err)
	}
	return func(yield func(eventsource.RecordedEvent, error) bool) {
		ctx, span := s.span(ctx, "pgstore.ReadEvents", typ, id, attribute.Int64("evsnap.read.after", after))
		var (
			err  error
			read int64
		)
		defer func() {
			span.SetAttributes(attribute.Int64("evsnap.read.events", read))
			endSpan(span, err)
		}()
		next := max(after, 0)
		for {
			var (
				n       int
				stopped bool
			)
			n, next, stopped, err = s.readPage(ctx, typ, id, next, yield)
			read += int64(n)
			if err != nil {
				yield(eventsource.RecordedEvent{}, err)
				return
			}
			if stopped || n < s.cfg.readPageSize {
				return
			}
		}
	}
}

// readPage yields the events of one page after version `after`. It
// returns how many it yielded, the last version yielded and whether the
// caller stopped.
func (s *Store) readPage(ctx context.Context, typ string, id uuid.UUID, after int64, yield func(eventsource.RecordedEvent, error) bool) (n int, last int64, stopped bool, err error) {
	last = after
	fail := func(err error) (int, int64, bool, error) {
		return n, last, false, s.wrap(fmt.Sprintf("read events of %s %s after v%d", typ, id, last), err)
	}
	rows, err := s.pool.Query(ctx, s.q.readEvents, typ, pgID(id), after)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	sc := newEventScanner(typ, id)
	for rows.Next() {
		rec, err := sc.scan(rows)
		if err != nil {
			var de *eventsource.DecodeError
			if errors.As(err, &de) {
				return n, last, false, err
			}
			return fail(err)
		}
		last = rec.Version
		n++
		if !yield(rec, nil) {
			return n, last, true, nil
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return n, last, false, nil
}

// eventScanner reads the rows of one events query (a page of ReadEvents,
// or the rows of LoadSnapshotAndEvents). Scanning each row into a fresh
// RecordedEvent cost eight allocations per event, most of them garbage
// at once: the record and the []any that rows.Scan's arguments escaped
// to, the event type string, the payload copy. The scanner keeps the scan
// targets and their []any for the whole query, scanning bytes the driver
// owns (valid until the next row); it interns the event types, which
// repeat, and copies the payloads into shared chunks (bytechunk). The
// events it returns are the caller's, as ReadEvents promises.
type eventScanner struct {
	typ  string
	id   uuid.UUID
	row  scannedEvent
	dest [7]any // the events' six columns, then the load's schema version
	// types holds the event types seen, at most maxInternedTypes.
	types    []string
	payloads bytechunk.Copier
}

// scannedEvent is one row as the driver hands it over.
type scannedEvent struct {
	id                [16]byte
	version           int64
	eventType         pgtype.DriverBytes
	payload, metadata pgtype.DriverBytes
	occurredAt        time.Time
	// schema is LoadSnapshotAndEvents' seventh column: valid on the
	// snapshot's row only.
	schema pgtype.Int4
}

// maxInternedTypes bounds the event types an eventScanner interns; a
// stream with more allocates each further type's string per row.
const maxInternedTypes = 16

func newEventScanner(typ string, id uuid.UUID) *eventScanner {
	sc := &eventScanner{typ: typ, id: id}
	r := &sc.row
	// *[16]byte takes pgx's binary uuid path; *uuid.UUID would go through
	// its sql.Scanner and a string.
	sc.dest = [7]any{&r.id, &r.version, &r.eventType, &r.payload, &r.metadata, &r.occurredAt, &r.schema}
	return sc
}

// scan reads the current row of an events query.
func (sc *eventScanner) scan(rows pgx.Rows) (eventsource.RecordedEvent, error) {
	if err := rows.Scan(sc.dest[:6]...); err != nil {
		return eventsource.RecordedEvent{}, err
	}
	return sc.record()
}

// scanLoad reads the current row of LoadSnapshotAndEvents' query: an
// event, or (with a nil error and a non-nil snapshot) the snapshot.
func (sc *eventScanner) scanLoad(rows pgx.Rows) (eventsource.RecordedEvent, *eventsource.Snapshot, error) {
	if err := rows.Scan(sc.dest[:]...); err != nil {
		return eventsource.RecordedEvent{}, nil, err
	}
	r := &sc.row
	if !r.schema.Valid {
		rec, err := sc.record()
		return rec, nil, err
	}
	return eventsource.RecordedEvent{}, &eventsource.Snapshot{
		AggregateID:   sc.id,
		AggregateType: sc.typ,
		Version:       r.version,
		SchemaVersion: int(r.schema.Int32),
		EventID:       r.id,
		State:         bytes.Clone(r.payload),
		CreatedAt:     r.occurredAt.UTC(),
	}, nil
}

// record builds the event of the row just scanned.
func (sc *eventScanner) record() (eventsource.RecordedEvent, error) {
	r := &sc.row
	rec := eventsource.RecordedEvent{
		ID:            r.id,
		AggregateType: sc.typ,
		AggregateID:   sc.id,
		Version:       r.version,
		Type:          sc.intern(r.eventType),
		Payload:       sc.payloads.Copy(r.payload),
		OccurredAt:    r.occurredAt.UTC(),
	}
	if m := r.metadata; len(m) > 0 && string(m) != string(emptyMetadata) {
		// A local, so that rec itself does not escape for every row.
		var md eventsource.Metadata
		if err := json.Unmarshal(m, &md); err != nil {
			return rec, &eventsource.DecodeError{What: fmt.Sprintf("metadata of event v%d of %s %s", rec.Version, sc.typ, sc.id), Err: err}
		}
		rec.Metadata = md
	}
	return rec, nil
}

// intern returns b as a string, the same string for the same bytes.
func (sc *eventScanner) intern(b []byte) string {
	for _, t := range sc.types {
		if t == string(b) {
			return t
		}
	}
	t := string(b)
	if len(sc.types) < maxInternedTypes {
		sc.types = append(sc.types, t)
	}
	return t
}
