package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
)

// emptyMetadata is how zero metadata is stored (and recognised on read, to
// skip decoding it).
const emptyMetadata = "{}"

type encodedEvent struct {
	id       string
	typ      string
	payload  string
	metadata string
	occurred int64
}

// encodeEvents encodes the rows to insert (storekit.ValidateAppend,
// which Append calls first, has checked the payloads are JSON and the ids
// distinct within the append).
func encodeEvents(typ string, id uuid.UUID, events []eventsource.NewEvent) ([]encodedEvent, error) {
	out := make([]encodedEvent, len(events))
	for i := range events {
		e := &events[i]
		md := emptyMetadata
		if !e.Metadata.IsZero() {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return nil, fmt.Errorf("%w: sqlitestore: event %d (%s) of append to %s %s: encode metadata: %v",
					eventsource.ErrInvalidArgument, i, e.Type, typ, id, err)
			}
			md = string(b)
		}
		out[i] = encodedEvent{
			id:       e.ID.String(),
			typ:      e.Type,
			payload:  string(e.Payload),
			metadata: md,
			occurred: e.OccurredAt.UnixMicro(),
		}
	}
	return out, nil
}

// Append implements [eventsource.EventStore]. It runs one write transaction
// that bumps the stream's head in the streams table (taking the write lock),
// checks the expected version against the old head, and inserts the events.
// A payload that is not valid JSON is an error matching
// [eventsource.ErrInvalidArgument], and an event id that is already stored
// or repeated within the append an [*eventsource.DuplicateEventIDError];
// nothing is committed then, nor on a conflict.
func (s *Store) Append(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) (res eventsource.AppendResult, err error) {
	ctx, span := s.startSpan(ctx, "Append", typ, id)
	defer func() { endSpan(span, err) }()
	if span.IsRecording() {
		span.SetAttributes(telemetrykeys.AttrEventsAppended.Int(len(events)), attribute.Int64("evsnap.expected_version", int64(expected)))
	}
	if err := storekit.ValidateAppend(typ, id, expected, events); err != nil {
		return res, err
	}
	rows, err := encodeEvents(typ, id, events)
	if err != nil {
		return res, err
	}
	head, err := s.appendTx(ctx, typ, id, expected, rows)
	if err != nil {
		var ce *eventsource.ConflictError
		if errors.As(err, &ce) || errors.Is(err, eventsource.ErrInvalidArgument) {
			return res, err
		}
		return res, fmt.Errorf("sqlitestore: append to %s %s: %w", typ, id, s.mapErr(err))
	}
	n := int64(len(rows))
	return eventsource.AppendResult{
		FirstVersion: head + 1,
		LastVersion:  head + n,
		CommittedAt:  time.Now().UTC().Truncate(time.Microsecond),
	}, nil
}

// appendTx returns the stream's head before the append.
func (s *Store) appendTx(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, rows []encodedEvent) (int64, error) {
	// Statements are prepared before the transaction: preparing needs a
	// connection, and the transaction holds the only write connection.
	bump, err := s.stmt(ctx, true, s.q.bumpStream)
	if err != nil {
		return 0, err
	}
	insert, err := s.stmt(ctx, true, s.q.insertEvent)
	if err != nil {
		return 0, err
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	idStr := id.String()
	n := int64(len(rows))
	var newHead int64
	if err := tx.StmtContext(ctx, bump).QueryRowContext(ctx, typ, idStr, n).Scan(&newHead); err != nil {
		return 0, err
	}
	head := newHead - n
	if expected != eventsource.AnyVersion && int64(expected) != head {
		return 0, &eventsource.ConflictError{AggregateType: typ, AggregateID: id, Expected: int64(expected), Actual: head}
	}
	ins := tx.StmtContext(ctx, insert)
	for i := range rows {
		r := &rows[i]
		if _, err := ins.ExecContext(ctx, r.id, typ, idStr, head+int64(i)+1, r.typ, r.payload, r.metadata, r.occurred); err != nil {
			return 0, s.insertError(ctx, tx, typ, id, expected, rows, i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return head, nil
}

// insertError translates a failed event insert into the domain's error. The
// transaction is still open (SQLite undid only the failed statement), so the
// lookups see the database as the append did.
func (s *Store) insertError(ctx context.Context, tx *sql.Tx, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, rows []encodedEvent, i int, err error) error {
	switch {
	case isUniqueViolation(err):
		// Rows before i are this append's own; ids within the append
		// were checked to be distinct, so row i collides with a stored
		// event exactly when its id is already in the table.
		var exists bool
		if lookupErr := tx.QueryRowContext(ctx, s.q.eventIDExists, rows[i].id).Scan(&exists); lookupErr != nil {
			return errors.Join(err, lookupErr)
		}
		if exists {
			dup, _ := uuid.Parse(rows[i].id)
			return &eventsource.DuplicateEventIDError{EventID: dup, AggregateType: typ, AggregateID: id}
		}
		// The version is taken: the streams table is behind the events
		// table (events written around the store). Report the conflict
		// with the events table's head.
		var actual int64
		if lookupErr := tx.QueryRowContext(ctx, s.q.maxVersion, typ, id.String()).Scan(&actual); lookupErr != nil {
			return errors.Join(err, lookupErr)
		}
		s.logger.WarnContext(ctx, "sqlitestore: streams table is behind the events table; was the events table written around the store?",
			telemetrykeys.LogKeyAggregateType, typ, telemetrykeys.LogKeyAggregateID, id, LogKeyVersion, actual, LogKeyError, err)
		return &eventsource.ConflictError{AggregateType: typ, AggregateID: id, Expected: int64(expected), Actual: actual}
	case isCheckViolation(err):
		return fmt.Errorf("%w: sqlitestore: event %d (%s) of append to %s %s refused by the database (payload and metadata must be valid JSON): %w",
			eventsource.ErrInvalidArgument, i, rows[i].typ, typ, id, err)
	}
	return err
}

// ReadEvents implements [eventsource.EventStore]. It walks the
// (aggregate_type, aggregate_id, version) index, fetching a window of events
// per query and holding no connection while the caller iterates, so a
// caller may run other store calls in the loop. Payload is the stored JSON
// text; Event is nil.
func (s *Store) ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[eventsource.RecordedEvent, error] {
	if err := storekit.ValidateStream(typ, id); err != nil {
		return storekit.ErrorSeq(err)
	}
	return func(yield func(eventsource.RecordedEvent, error) bool) {
		ctx, span := s.startSpan(ctx, "ReadEvents", typ, id)
		var (
			err  error
			read int
		)
		defer func() {
			if span.IsRecording() {
				span.SetAttributes(attribute.Int("evsnap.events_read", read))
			}
			endSpan(span, err)
		}()
		fail := func(e error) {
			err = fmt.Errorf("sqlitestore: read %s %s after version %d: %w", typ, id, after, s.mapErr(e))
			yield(eventsource.RecordedEvent{}, err)
		}
		st, e := s.stmt(ctx, false, s.q.readEvents)
		if e != nil {
			fail(e)
			return
		}
		idStr := id.String()
		next := after
		var buf []eventsource.RecordedEvent
		for {
			buf, e = s.readWindow(ctx, st, typ, id, idStr, next, buf[:0])
			if e != nil {
				fail(e)
				return
			}
			for i := range buf {
				read++
				if !yield(buf[i], nil) {
					return
				}
			}
			if len(buf) < s.window {
				return
			}
			next = buf[len(buf)-1].Version
		}
	}
}

// readWindow appends up to s.window events after version next to buf and
// closes its rows before returning.
func (s *Store) readWindow(ctx context.Context, st *sql.Stmt, typ string, id uuid.UUID, idStr string, next int64, buf []eventsource.RecordedEvent) (_ []eventsource.RecordedEvent, err error) {
	rows, err := st.QueryContext(ctx, typ, idStr, next, s.window)
	if err != nil {
		return buf, err
	}
	defer func() {
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}()
	var (
		eventID, metadata sql.RawBytes
		occurred          int64
		lastMeta          []byte
		lastDecoded       eventsource.Metadata
	)
	for rows.Next() {
		rec := eventsource.RecordedEvent{AggregateType: typ, AggregateID: id}
		if err := rows.Scan(&eventID, &rec.Version, &rec.Type, &rec.Payload, &metadata, &occurred); err != nil {
			return buf, err
		}
		if rec.ID, err = uuid.ParseBytes(eventID); err != nil {
			return buf, fmt.Errorf("%w: event v%d has id %q: %v", eventsource.ErrCorruptStream, rec.Version, eventID, err)
		}
		switch {
		case string(metadata) == emptyMetadata:
		case bytes.Equal(metadata, lastMeta):
			// The events of one save usually share their metadata
			// (the repository stamps the context's on each): decode once.
			rec.Metadata = lastDecoded.Clone()
		default:
			if err := json.Unmarshal(metadata, &rec.Metadata); err != nil {
				return buf, &eventsource.DecodeError{What: fmt.Sprintf("metadata of event %s v%d of %s %s", rec.Type, rec.Version, typ, id), Err: err}
			}
			lastMeta = append(lastMeta[:0], metadata...)
			lastDecoded = rec.Metadata.Clone()
		}
		rec.OccurredAt = time.UnixMicro(occurred).UTC()
		buf = append(buf, rec)
	}
	return buf, rows.Err()
}

// StreamVersion implements [eventsource.EventStore]: one primary-key lookup
// in the streams table.
func (s *Store) StreamVersion(ctx context.Context, typ string, id uuid.UUID) (v int64, err error) {
	ctx, span := s.startSpan(ctx, "StreamVersion", typ, id)
	defer func() { endSpan(span, err) }()
	if err := storekit.ValidateStream(typ, id); err != nil {
		return 0, err
	}
	st, err := s.stmt(ctx, false, s.q.streamVersion)
	if err == nil {
		err = st.QueryRowContext(ctx, typ, id.String()).Scan(&v)
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("sqlitestore: stream version of %s %s: %w", typ, id, s.mapErr(err))
	}
	return v, nil
}
