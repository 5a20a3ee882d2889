package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

// factory returns the store a check runs against: a fresh one, or one
// shared by every check.
type factory = func(t *testing.T) eventsource.Store

// uniqueType returns an aggregate type name no other subtest uses.
func uniqueType(prefix string) string {
	return prefix + "_" + uuid.NewString()[:8]
}

// testEvent builds an event to append with a JSON payload carrying n.
func testEvent(typ string, n int) eventsource.NewEvent {
	return eventsource.NewEvent{
		ID:         uuid.New(),
		Type:       typ,
		Payload:    []byte(fmt.Sprintf(`{"n": %d, "s": "event %d", "nested": {"ok": true}}`, n, n)),
		OccurredAt: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func testEvents(typ string, from, count int) []eventsource.NewEvent {
	out := make([]eventsource.NewEvent, count)
	for i := range out {
		out[i] = testEvent(typ, from+i)
	}
	return out
}

// jsonEqual reports whether a and b hold the same JSON value (stores such as
// PostgreSQL's jsonb normalise whitespace and key order).
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}

// ReadAll reads every event of typ/id after a version, failing t on an
// error.
func ReadAll(t testing.TB, s eventsource.EventStore, typ string, id uuid.UUID, after int64) []eventsource.RecordedEvent {
	t.Helper()
	var out []eventsource.RecordedEvent
	for rec, err := range s.ReadEvents(context.Background(), typ, id, after) {
		if err != nil {
			t.Fatalf("ReadEvents(%s, %s, after %d): %v", typ, id, after, err)
		}
		out = append(out, rec)
	}
	return out
}

func mustAppend(t *testing.T, s eventsource.EventStore, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) eventsource.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), typ, id, expected, events)
	if err != nil {
		t.Fatalf("Append(%s, %s, expected %d, %d events): %v", typ, id, expected, len(events), err)
	}
	return res
}

func checkConflict(t *testing.T, err error, expected, actual int64) {
	t.Helper()
	if !errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("got error %v, want one matching ErrConcurrencyConflict", err)
	}
	var ce *eventsource.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *ConflictError", err)
	}
	if ce.Expected != expected || ce.Actual != actual {
		t.Fatalf("ConflictError expected=%d actual=%d, want expected=%d actual=%d", ce.Expected, ce.Actual, expected, actual)
	}
}

func checkVersion(t *testing.T, s eventsource.EventStore, typ string, id uuid.UUID, want int64) {
	t.Helper()
	got, err := s.StreamVersion(context.Background(), typ, id)
	if err != nil {
		t.Fatalf("StreamVersion: %v", err)
	}
	if got != want {
		t.Fatalf("StreamVersion = %d, want %d", got, want)
	}
}

// runEventStore checks the [eventsource.EventStore] methods.
func runEventStore(t *testing.T, newStore factory) {
	t.Run("AppendAndReadRoundTrip", func(t *testing.T) { testAppendRoundTrip(t, newStore(t)) })
	t.Run("ReadAfterVersion", func(t *testing.T) { testReadAfter(t, newStore(t)) })
	t.Run("MissingStream", func(t *testing.T) { testMissingStream(t, newStore(t)) })
	t.Run("ExpectedVersionExact", func(t *testing.T) { testExpectedExact(t, newStore(t)) })
	t.Run("ExpectedNoStream", func(t *testing.T) { testExpectedNoStream(t, newStore(t)) })
	t.Run("ExpectedAnyVersion", func(t *testing.T) { testExpectedAny(t, newStore(t)) })
	t.Run("ConflictCommitsNothing", func(t *testing.T) { testConflictAtomic(t, newStore(t)) })
	t.Run("DuplicateEventIDCommitsNothing", func(t *testing.T) { testDuplicateEventID(t, newStore(t)) })
	t.Run("StreamsAreIsolated", func(t *testing.T) { testStreamsIsolated(t, newStore(t)) })
	t.Run("ConcurrentAppenders", func(t *testing.T) { testConcurrentAppenders(t, newStore(t)) })
	t.Run("StreamingOrderLargeStream", func(t *testing.T) { testLargeStream(t, newStore(t)) })
	t.Run("EarlyBreakReleases", func(t *testing.T) { testEarlyBreak(t, newStore(t)) })
	t.Run("NestedCallsWhileReading", func(t *testing.T) { testNestedCalls(t, newStore(t)) })
	t.Run("InvalidArguments", func(t *testing.T) { testInvalidAppend(t, newStore(t)) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelledContext(t, newStore(t)) })
	t.Run("ReadEventsAreTheCallers", func(t *testing.T) { testReadEventsOwned(t, newStore(t)) })
}

func testAppendRoundTrip(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("RoundTrip"), uuid.New()
	in := testEvents("Thing", 1, 3)
	in[0].Metadata = eventsource.Metadata{CorrelationID: "corr-1", CausationID: "cause-1", Attributes: map[string]string{"user": "ada", "ünï": "☃"}}
	in[1].Metadata = eventsource.Metadata{CorrelationID: "corr-1"}
	// A time with a non-UTC zone must come back as the same instant in UTC.
	in[2].OccurredAt = time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.FixedZone("X", 3*3600))
	res := mustAppend(t, s, typ, id, eventsource.NoStream, in)
	if res.FirstVersion != 1 || res.LastVersion != 3 {
		t.Fatalf("AppendResult versions %d..%d, want 1..3", res.FirstVersion, res.LastVersion)
	}
	if res.CommittedAt.IsZero() || time.Since(res.CommittedAt) > time.Hour || res.CommittedAt.Location() != time.UTC {
		t.Fatalf("AppendResult.CommittedAt = %v, want a recent UTC time", res.CommittedAt)
	}
	got := ReadAll(t, s, typ, id, 0)
	if len(got) != 3 {
		t.Fatalf("read %d events, want 3", len(got))
	}
	for i, rec := range got {
		want := in[i]
		if rec.ID != want.ID || rec.Type != want.Type || rec.AggregateType != typ || rec.AggregateID != id || rec.Version != int64(i+1) {
			t.Errorf("event %d envelope = {id %s type %s agg %s/%s v%d}, want {id %s type %s agg %s/%s v%d}",
				i, rec.ID, rec.Type, rec.AggregateType, rec.AggregateID, rec.Version, want.ID, want.Type, typ, id, i+1)
		}
		if !jsonEqual(rec.Payload, want.Payload) {
			t.Errorf("event %d payload = %s, want %s", i, rec.Payload, want.Payload)
		}
		if !rec.OccurredAt.Equal(want.OccurredAt) || rec.OccurredAt.Location() != time.UTC {
			t.Errorf("event %d OccurredAt = %v, want %v in UTC", i, rec.OccurredAt, want.OccurredAt.UTC())
		}
		if rec.Metadata.CorrelationID != want.Metadata.CorrelationID || rec.Metadata.CausationID != want.Metadata.CausationID ||
			len(rec.Metadata.Attributes) != len(want.Metadata.Attributes) {
			t.Errorf("event %d metadata = %+v, want %+v", i, rec.Metadata, want.Metadata)
		}
		for k, v := range want.Metadata.Attributes {
			if rec.Metadata.Attributes[k] != v {
				t.Errorf("event %d metadata attribute %q = %q, want %q", i, k, rec.Metadata.Attributes[k], v)
			}
		}
	}
	checkVersion(t, s, typ, id, 3)
}

func testReadAfter(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("ReadAfter"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 5))
	for _, c := range []struct {
		after int64
		want  []int64
	}{
		{-1, []int64{1, 2, 3, 4, 5}},
		{0, []int64{1, 2, 3, 4, 5}},
		{2, []int64{3, 4, 5}},
		{4, []int64{5}},
		{5, nil},
		{99, nil},
	} {
		var got []int64
		for _, rec := range ReadAll(t, s, typ, id, c.after) {
			got = append(got, rec.Version)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ReadEvents(after %d) versions = %v, want %v", c.after, got, c.want)
		}
	}
}

func testMissingStream(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Missing"), uuid.New()
	if got := ReadAll(t, s, typ, id, 0); len(got) != 0 {
		t.Fatalf("missing stream yielded %d events", len(got))
	}
	checkVersion(t, s, typ, id, 0)
}

func testExpectedExact(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Exact"), uuid.New()
	mustAppend(t, s, typ, id, 0, testEvents("Thing", 1, 2))
	res := mustAppend(t, s, typ, id, 2, testEvents("Thing", 3, 1))
	if res.FirstVersion != 3 || res.LastVersion != 3 {
		t.Fatalf("versions %d..%d, want 3..3", res.FirstVersion, res.LastVersion)
	}
	for _, stale := range []eventsource.ExpectedVersion{1, 2, 4, 10} {
		_, err := s.Append(context.Background(), typ, id, stale, testEvents("Thing", 9, 1))
		checkConflict(t, err, int64(stale), 3)
	}
	checkVersion(t, s, typ, id, 3)
}

func testExpectedNoStream(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("NoStream"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 2))
	_, err := s.Append(context.Background(), typ, id, eventsource.NoStream, testEvents("Thing", 3, 1))
	checkConflict(t, err, 0, 2)
	checkVersion(t, s, typ, id, 2)
}

func testExpectedAny(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Any"), uuid.New()
	res := mustAppend(t, s, typ, id, eventsource.AnyVersion, testEvents("Thing", 1, 2))
	if res.FirstVersion != 1 || res.LastVersion != 2 {
		t.Fatalf("first append versions %d..%d, want 1..2", res.FirstVersion, res.LastVersion)
	}
	res = mustAppend(t, s, typ, id, eventsource.AnyVersion, testEvents("Thing", 3, 3))
	if res.FirstVersion != 3 || res.LastVersion != 5 {
		t.Fatalf("second append versions %d..%d, want 3..5", res.FirstVersion, res.LastVersion)
	}
	checkVersion(t, s, typ, id, 5)
}

func testConflictAtomic(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Atomic"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 3))
	_, err := s.Append(context.Background(), typ, id, 1, testEvents("Thing", 10, 4))
	checkConflict(t, err, 1, 3)
	if got := ReadAll(t, s, typ, id, 0); len(got) != 3 {
		t.Fatalf("after a refused append the stream has %d events, want 3", len(got))
	}
	checkVersion(t, s, typ, id, 3)
}

// testDuplicateEventID appends event ids that are already stored, in the
// same stream and in another aggregate's, and an id repeated within one
// append: each is a *DuplicateEventIDError naming the id and the append's
// stream, matching ErrDuplicateEventID and ErrInvalidArgument (never a
// conflict), and commits nothing.
func testDuplicateEventID(t *testing.T, s eventsource.EventStore) {
	ctx := context.Background()
	typ, id := uniqueType("DupID"), uuid.New()
	first := testEvents("Thing", 1, 1)
	mustAppend(t, s, typ, id, eventsource.NoStream, first)
	check := func(what string, err error, typ string, id, eventID uuid.UUID, inBatch bool) {
		t.Helper()
		var de *eventsource.DuplicateEventIDError
		if !errors.As(err, &de) || !errors.Is(err, eventsource.ErrDuplicateEventID) ||
			!errors.Is(err, eventsource.ErrInvalidArgument) || errors.Is(err, eventsource.ErrConcurrencyConflict) {
			t.Fatalf("%s: error %v, want a *DuplicateEventIDError matching ErrDuplicateEventID and ErrInvalidArgument (not a conflict)", what, err)
		}
		want := eventsource.DuplicateEventIDError{EventID: eventID, AggregateType: typ, AggregateID: id, InBatch: inBatch}
		if *de != want {
			t.Fatalf("%s: error %+v, want %+v", what, *de, want)
		}
	}
	again := testEvents("Thing", 2, 2)
	again[1].ID = first[0].ID
	_, err := s.Append(ctx, typ, id, 1, again)
	check("appending a stored event id to its stream", err, typ, id, first[0].ID, false)
	checkVersion(t, s, typ, id, 1)
	if got := ReadAll(t, s, typ, id, 0); len(got) != 1 || got[0].ID != first[0].ID {
		t.Fatalf("after a refused append the stream holds %d events", len(got))
	}
	// The same id on another stream, of another type, is refused too:
	// event ids are unique across the store.
	other, otherTyp, otherID := testEvents("Thing", 1, 3), uniqueType("DupIDOther"), uuid.New()
	other[2].ID = first[0].ID
	_, err = s.Append(ctx, otherTyp, otherID, eventsource.NoStream, other)
	check("appending a stored event id to another stream", err, otherTyp, otherID, first[0].ID, false)
	checkVersion(t, s, otherTyp, otherID, 0)
	// Nothing of the refused append was kept: its other ids are free.
	mustAppend(t, s, otherTyp, otherID, eventsource.NoStream, other[:2])
	// An id repeated within one append.
	twice := testEvents("Thing", 1, 3)
	twice[2].ID = twice[1].ID
	inBatch := uuid.New()
	_, err = s.Append(ctx, typ, inBatch, eventsource.NoStream, twice)
	check("an id repeated within one append", err, typ, inBatch, twice[1].ID, true)
	checkVersion(t, s, typ, inBatch, 0)
	long := testEvents("Thing", 1, 40)
	long[37].ID = long[5].ID
	_, err = s.Append(ctx, typ, inBatch, eventsource.NoStream, long)
	check("an id repeated within a long append", err, typ, inBatch, long[5].ID, true)
	checkVersion(t, s, typ, inBatch, 0)
	mustAppend(t, s, typ, inBatch, eventsource.NoStream, twice[:2])
}

// testNestedCalls calls the store from inside a read loop, as a caller may:
// a store must not hold a single connection across yields.
func testNestedCalls(t *testing.T, s eventsource.EventStore) {
	typ, id, other := uniqueType("Nested"), uuid.New(), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 5))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := 0
	for _, err := range s.ReadEvents(ctx, typ, id, 0) {
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		n++
		if _, err := s.StreamVersion(ctx, typ, id); err != nil {
			t.Fatalf("StreamVersion inside a read loop: %v", err)
		}
		if _, err := s.Append(ctx, typ, other, eventsource.AnyVersion, testEvents("Thing", n, 1)); err != nil {
			t.Fatalf("Append inside a read loop: %v", err)
		}
	}
	if n != 5 {
		t.Fatalf("read %d events, want 5", n)
	}
	checkVersion(t, s, typ, other, 5)
}

func testStreamsIsolated(t *testing.T, s eventsource.EventStore) {
	typA, typB := uniqueType("IsoA"), uniqueType("IsoB")
	id, id2 := uuid.New(), uuid.New()
	mustAppend(t, s, typA, id, eventsource.NoStream, testEvents("Thing", 1, 2))
	mustAppend(t, s, typB, id, eventsource.NoStream, testEvents("Other", 1, 3))
	mustAppend(t, s, typA, id2, eventsource.NoStream, testEvents("Thing", 1, 1))
	checkVersion(t, s, typA, id, 2)
	checkVersion(t, s, typB, id, 3)
	checkVersion(t, s, typA, id2, 1)
	for _, rec := range ReadAll(t, s, typB, id, 0) {
		if rec.Type != "Other" || rec.AggregateType != typB {
			t.Fatalf("stream %s/%s yielded an event of %s (%s)", typB, id, rec.AggregateType, rec.Type)
		}
	}
}

// testConcurrentAppenders races writers on one aggregate: every version has
// exactly one winner, with no gaps and no duplicates, and every loser gets
// the typed conflict.
func testConcurrentAppenders(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Race"), uuid.New()
	const writers, perWriter = 8, 12
	var (
		mu       sync.Mutex
		won      = map[uuid.UUID]int64{}
		failures []error
		wg       sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; i < perWriter; {
				v, err := s.StreamVersion(ctx, typ, id)
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				ev := testEvent("Thing", w*1000+i)
				res, err := s.Append(ctx, typ, id, eventsource.ExpectedVersion(v), []eventsource.NewEvent{ev})
				switch {
				case err == nil:
					mu.Lock()
					won[ev.ID] = res.LastVersion
					mu.Unlock()
					i++
				case errors.Is(err, eventsource.ErrConcurrencyConflict):
					var ce *eventsource.ConflictError
					if !errors.As(err, &ce) || ce.Expected != v || ce.Actual <= v {
						mu.Lock()
						failures = append(failures, fmt.Errorf("bad conflict error %#v for expected %d", err, v))
						mu.Unlock()
						return
					}
				default:
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	CheckAppended(t, s, typ, id, won, writers*perWriter)
}

// CheckAppended checks a stream after racing appenders of one event each:
// it holds want events, versions 1..want with no gap, each event once, at
// the version its append reported (won maps event id to that version).
// Backends use it in their own multi-handle races.
func CheckAppended(t testing.TB, s eventsource.EventStore, typ string, id uuid.UUID, won map[uuid.UUID]int64, want int) {
	t.Helper()
	got := ReadAll(t, s, typ, id, 0)
	if len(got) != want {
		t.Fatalf("stream has %d events, want %d", len(got), want)
	}
	seen := map[uuid.UUID]bool{}
	for i, rec := range got {
		if rec.Version != int64(i+1) {
			t.Fatalf("event %d has version %d: gap or duplicate", i, rec.Version)
		}
		if seen[rec.ID] {
			t.Fatalf("event id %s stored twice", rec.ID)
		}
		seen[rec.ID] = true
		if v, ok := won[rec.ID]; !ok || v != rec.Version {
			t.Fatalf("stored event %s at v%d; its append reported v%d (reported: %v)", rec.ID, rec.Version, v, ok)
		}
	}
}

func testLargeStream(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Large"), uuid.New()
	const batches, size = 20, 100
	for b := range batches {
		mustAppend(t, s, typ, id, eventsource.ExpectedVersion(b*size), testEvents("Thing", b*size+1, size))
	}
	n := int64(0)
	for rec, err := range s.ReadEvents(context.Background(), typ, id, 0) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if rec.Version != n {
			t.Fatalf("event %d has version %d", n, rec.Version)
		}
		var p struct{ N int64 }
		if err := json.Unmarshal(rec.Payload, &p); err != nil || p.N != n {
			t.Fatalf("event v%d payload %s: n=%d err=%v", n, rec.Payload, p.N, err)
		}
	}
	if n != batches*size {
		t.Fatalf("read %d events, want %d", n, batches*size)
	}
	tail := ReadAll(t, s, typ, id, batches*size-7)
	if len(tail) != 7 || tail[0].Version != batches*size-6 {
		t.Fatalf("tail read gave %d events starting at %v", len(tail), tail)
	}
}

// testEarlyBreak stops iterating after one event many times over: a store
// that leaks a connection or lock per abandoned read would stall.
func testEarlyBreak(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Break"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 50))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 64 {
		for rec, err := range s.ReadEvents(ctx, typ, id, 0) {
			if err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
			_ = rec
			break
		}
	}
	if _, err := s.Append(ctx, typ, id, 50, testEvents("Thing", 51, 1)); err != nil {
		t.Fatalf("append after abandoned reads: %v", err)
	}
}

func testInvalidAppend(t *testing.T, s eventsource.EventStore) {
	ctx := context.Background()
	typ, id := uniqueType("Invalid"), uuid.New()
	emptyType := testEvents("Thing", 1, 1)
	emptyType[0].Type = ""
	nilID := testEvents("Thing", 1, 1)
	nilID[0].ID = uuid.Nil
	emptyPayload := testEvents("Thing", 1, 1)
	emptyPayload[0].Payload = nil
	badJSON := testEvents("Thing", 1, 2)
	badJSON[1].Payload = []byte(`{"n": 1,`)
	cases := []struct {
		name     string
		typ      string
		id       uuid.UUID
		expected eventsource.ExpectedVersion
		events   []eventsource.NewEvent
	}{
		{"empty aggregate type", "", id, 0, testEvents("Thing", 1, 1)},
		{"nil aggregate id", typ, uuid.Nil, 0, testEvents("Thing", 1, 1)},
		{"no events", typ, id, 0, nil},
		{"expected below -1", typ, id, -2, testEvents("Thing", 1, 1)},
		{"empty event type", typ, id, 0, emptyType},
		{"nil event id", typ, id, 0, nilID},
		{"empty payload", typ, id, 0, emptyPayload},
		{"payload not JSON", typ, id, 0, badJSON},
		{"aggregate type too long", strings.Repeat("T", storekit.MaxAggregateTypeLen+1), id, 0, testEvents("Thing", 1, 1)},
	}
	for _, c := range cases {
		if _, err := s.Append(ctx, c.typ, c.id, c.expected, c.events); !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("%s: Append error = %v, want ErrInvalidArgument", c.name, err)
		}
	}
	checkVersion(t, s, typ, id, 0)
	for _, err := range s.ReadEvents(ctx, "", id, 0) {
		if !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("ReadEvents with an empty type: error %v, want ErrInvalidArgument", err)
		}
	}
	if _, err := s.StreamVersion(ctx, typ, uuid.Nil); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("StreamVersion with a nil id: error %v, want ErrInvalidArgument", err)
	}
}

func testCancelledContext(t *testing.T, s eventsource.EventStore) {
	typ, id := uniqueType("Cancel"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 2))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, typ, id, 2, testEvents("Thing", 3, 1)); err == nil {
		t.Error("Append with a cancelled context succeeded")
	}
	var sawErr bool
	for _, err := range s.ReadEvents(ctx, typ, id, 0) {
		if err != nil {
			sawErr = true
		}
	}
	if !sawErr {
		t.Error("ReadEvents with a cancelled context yielded no error")
	}
	checkVersion(t, s, typ, id, 2)
}

// runSnapshotStore checks the [eventsource.SnapshotStore] methods that
// read and write one snapshot.
func runSnapshotStore(t *testing.T, newStore factory) {
	t.Run("GetMissing", func(t *testing.T) { testGetMissing(t, newStore(t)) })
	t.Run("SaveAndGetRoundTrip", func(t *testing.T) { testSnapshotRoundTrip(t, newStore(t)) })
	t.Run("UpsertNewer", func(t *testing.T) { testUpsertNewer(t, newStore(t)) })
	t.Run("NeverMovesBackwards", func(t *testing.T) { testMonotonic(t, newStore(t)) })
	t.Run("ConcurrentWritersKeepNewest", func(t *testing.T) { testConcurrentSnapshots(t, newStore(t)) })
	t.Run("GetAndDelete", func(t *testing.T) { testGetDelete(t, newStore(t)) })
	t.Run("DeleteStaleOnlyOnExactMatch", func(t *testing.T) { testDeleteStale(t, newStore(t)) })
	t.Run("DeleteByType", func(t *testing.T) { testDeleteByType(t, newStore(t)) })
	t.Run("TypesAreIsolated", func(t *testing.T) { testSnapshotIsolation(t, newStore(t)) })
	t.Run("InvalidArguments", func(t *testing.T) { testInvalidSnapshot(t, newStore(t)) })
	t.Run("SchemaVersionRange", func(t *testing.T) { testSchemaVersionRange(t, newStore(t)) })
}

func snap(typ string, id uuid.UUID, version int64, schema int) eventsource.Snapshot {
	return eventsource.Snapshot{
		AggregateID:   id,
		AggregateType: typ,
		Version:       version,
		SchemaVersion: schema,
		EventID:       uuid.New(),
		State:         []byte(fmt.Sprintf(`{"version": %d, "schema": %d, "owner": "Ada ☃", "balance": 12.5, "tags": ["a", "b"]}`, version, schema)),
		CreatedAt:     time.Now().UTC().Truncate(time.Microsecond),
	}
}

func mustSave(t *testing.T, s eventsource.SnapshotStore, sn eventsource.Snapshot, wantStored bool) {
	t.Helper()
	stored, err := s.SaveSnapshot(context.Background(), sn)
	if err != nil {
		t.Fatalf("SaveSnapshot(v%d schema %d): %v", sn.Version, sn.SchemaVersion, err)
	}
	if stored != wantStored {
		t.Fatalf("SaveSnapshot(v%d schema %d) stored = %v, want %v", sn.Version, sn.SchemaVersion, stored, wantStored)
	}
}

// mustGet returns the stored snapshot of typ/id of schema version schema.
func mustGet(t *testing.T, s eventsource.SnapshotStore, typ string, id uuid.UUID, schema int) *eventsource.Snapshot {
	t.Helper()
	got, err := s.GetSnapshot(context.Background(), typ, id, schema)
	if err != nil {
		t.Fatalf("GetSnapshot(%s, %s, schema %d): %v", typ, id, schema, err)
	}
	if got != nil && (got.SchemaVersion != schema || got.AggregateID != id || got.AggregateType != typ) {
		t.Fatalf("GetSnapshot(%s, %s, schema %d) returned the snapshot of %s %s schema %d", typ, id, schema, got.AggregateType, got.AggregateID, got.SchemaVersion)
	}
	return got
}

func checkStored(t *testing.T, s eventsource.SnapshotStore, typ string, id uuid.UUID, version int64, schema int) {
	t.Helper()
	got := mustGet(t, s, typ, id, schema)
	if got == nil {
		t.Fatalf("no snapshot of %s %s, want v%d schema %d", typ, id, version, schema)
	}
	if got.Version != version || got.SchemaVersion != schema {
		t.Fatalf("stored snapshot is v%d schema %d, want v%d schema %d", got.Version, got.SchemaVersion, version, schema)
	}
	if want := snap(typ, id, version, schema).State; !jsonEqual(got.State, want) {
		t.Fatalf("stored state %s does not belong to v%d schema %d", got.State, version, schema)
	}
}

func testGetMissing(t *testing.T, s eventsource.SnapshotStore) {
	if got := mustGet(t, s, uniqueType("Missing"), uuid.New(), 1); got != nil {
		t.Fatalf("GetSnapshot of a missing aggregate = %+v, want nil", got)
	}
}

func testSnapshotRoundTrip(t *testing.T, s eventsource.SnapshotStore) {
	typ, id := uniqueType("SnapRT"), uuid.New()
	in := snap(typ, id, 100, 1)
	in.CreatedAt = time.Date(2025, 6, 30, 12, 0, 0, 654321000, time.FixedZone("Y", -5*3600))
	mustSave(t, s, in, true)
	got := mustGet(t, s, typ, id, 1)
	if got == nil {
		t.Fatal("saved snapshot not found")
	}
	if got.AggregateID != id || got.AggregateType != typ || got.Version != 100 || got.SchemaVersion != 1 || got.EventID != in.EventID {
		t.Fatalf("got %+v, want v100 schema 1 event id %s", got, in.EventID)
	}
	if !jsonEqual(got.State, in.State) {
		t.Fatalf("state = %s, want %s", got.State, in.State)
	}
	if !got.CreatedAt.Equal(in.CreatedAt) || got.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt = %v, want %v in UTC", got.CreatedAt, in.CreatedAt.UTC())
	}
	// The store must not alias the caller's bytes.
	in.State[2] = 'X'
	if again := mustGet(t, s, typ, id, 1); !jsonEqual(again.State, snap(typ, id, 100, 1).State) {
		t.Fatalf("changing the saved slice changed the stored state: %s", again.State)
	}
}

func testUpsertNewer(t *testing.T, s eventsource.SnapshotStore) {
	typ, id := uniqueType("Upsert"), uuid.New()
	mustSave(t, s, snap(typ, id, 10, 1), true)
	mustSave(t, s, snap(typ, id, 20, 1), true)
	checkStored(t, s, typ, id, 20, 1)
	// Equal version and schema rewrites (repairs) the row.
	mustSave(t, s, snap(typ, id, 20, 1), true)
	checkStored(t, s, typ, id, 20, 1)
	// A newer schema at the same version is a row of its own (a rolling
	// deploy): the older schema's row stays.
	mustSave(t, s, snap(typ, id, 20, 2), true)
	checkStored(t, s, typ, id, 20, 2)
	checkStored(t, s, typ, id, 20, 1)
}

// testMonotonic: each row (aggregate and schema version) moves only
// forwards, whatever the other rows of the aggregate hold.
func testMonotonic(t *testing.T, s eventsource.SnapshotStore) {
	typ, id := uniqueType("Mono"), uuid.New()
	mustSave(t, s, snap(typ, id, 50, 2), true)
	mustSave(t, s, snap(typ, id, 49, 2), false) // lower version
	checkStored(t, s, typ, id, 50, 2)
	mustSave(t, s, snap(typ, id, 80, 1), true) // the older schema's own row, at any version
	checkStored(t, s, typ, id, 80, 1)
	mustSave(t, s, snap(typ, id, 79, 1), false) // lower version of that row
	checkStored(t, s, typ, id, 80, 1)
	checkStored(t, s, typ, id, 50, 2)
	mustSave(t, s, snap(typ, id, 51, 2), true)
	checkStored(t, s, typ, id, 51, 2)
	checkStored(t, s, typ, id, 80, 1)
}

func testConcurrentSnapshots(t *testing.T, s eventsource.SnapshotStore) {
	typ, id := uniqueType("SnapRace"), uuid.New()
	const writers, versions = 6, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers*versions)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range versions {
				// Writers walk the versions in different orders.
				v := int64((i*7+w*13)%versions + 1)
				if _, err := s.SaveSnapshot(context.Background(), snap(typ, id, v, 1)); err != nil {
					errs <- err
					return
				}
				got, err := s.GetSnapshot(context.Background(), typ, id, 1)
				if err != nil {
					errs <- err
					return
				}
				if got == nil || got.Version < v {
					errs <- fmt.Errorf("after writing v%d the store holds %v", v, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkStored(t, s, typ, id, versions, 1)
}

func testGetDelete(t *testing.T, s eventsource.SnapshotStore) {
	ctx := context.Background()
	typ, id := uniqueType("GetDelete"), uuid.New()
	if got := mustGet(t, s, typ, id, 1); got != nil {
		t.Fatalf("GetSnapshot before save = %+v, want none", got)
	}
	mustSave(t, s, snap(typ, id, 5, 1), true)
	if got := mustGet(t, s, typ, id, 1); got == nil {
		t.Fatal("GetSnapshot after save = nil, want the snapshot")
	}
	// A row of another schema version: DeleteSnapshot removes both.
	mustSave(t, s, snap(typ, id, 3, 2), true)
	if ok, err := s.DeleteSnapshot(ctx, typ, id); err != nil || !ok {
		t.Fatalf("DeleteSnapshot of an existing snapshot = %v, %v; want true", ok, err)
	}
	if ok, err := s.DeleteSnapshot(ctx, typ, id); err != nil || ok {
		t.Fatalf("second DeleteSnapshot = %v, %v; want false", ok, err)
	}
	for _, schema := range []int{1, 2} {
		if got := mustGet(t, s, typ, id, schema); got != nil {
			t.Fatalf("deleted snapshot of schema %d still returned: %+v", schema, got)
		}
	}
	// After a delete, any version may be written again.
	mustSave(t, s, snap(typ, id, 1, 1), true)
}

func testDeleteStale(t *testing.T, s eventsource.SnapshotStore) {
	ctx := context.Background()
	typ, id := uniqueType("Stale"), uuid.New()
	if ok, err := s.DeleteStaleSnapshot(ctx, snap(typ, id, 5, 1)); err != nil || ok {
		t.Fatalf("DeleteStaleSnapshot with nothing stored = %v, %v; want false", ok, err)
	}
	stored := snap(typ, id, 5, 2)
	mustSave(t, s, stored, true)
	// The row of another schema version at the same version is another
	// snapshot: never removed by a delete of this one.
	sibling := snap(typ, id, 5, 1)
	mustSave(t, s, sibling, true)
	for name, other := range map[string]func(eventsource.Snapshot) eventsource.Snapshot{
		"another version":        func(o eventsource.Snapshot) eventsource.Snapshot { o.Version = 6; return o },
		"another schema version": func(o eventsource.Snapshot) eventsource.Snapshot { o.SchemaVersion = 1; return o },
		"another event id":       func(o eventsource.Snapshot) eventsource.Snapshot { o.EventID = uuid.New(); return o },
		"a nil event id":         func(o eventsource.Snapshot) eventsource.Snapshot { o.EventID = uuid.Nil; return o },
		"another type":           func(o eventsource.Snapshot) eventsource.Snapshot { o.AggregateType = uniqueType("Stale"); return o },
		"another id":             func(o eventsource.Snapshot) eventsource.Snapshot { o.AggregateID = uuid.New(); return o },
	} {
		if ok, err := s.DeleteStaleSnapshot(ctx, other(stored)); err != nil || ok {
			t.Fatalf("DeleteStaleSnapshot with %s = %v, %v; want false", name, ok, err)
		}
		if got := mustGet(t, s, typ, id, 2); got == nil || got.EventID != stored.EventID {
			t.Fatalf("DeleteStaleSnapshot with %s changed the stored snapshot: %+v", name, got)
		}
	}
	checkStored(t, s, typ, id, 5, 1)
	// State and CreatedAt play no part: the snapshot as a load read it.
	match := stored
	match.State, match.CreatedAt = []byte(`{}`), time.Time{}
	if ok, err := s.DeleteStaleSnapshot(ctx, match); err != nil || !ok {
		t.Fatalf("DeleteStaleSnapshot of the stored snapshot = %v, %v; want true", ok, err)
	}
	if got := mustGet(t, s, typ, id, 2); got != nil {
		t.Fatalf("deleted snapshot still returned: %+v", got)
	}
	if got := mustGet(t, s, typ, id, 1); got == nil || got.EventID != sibling.EventID {
		t.Fatalf("DeleteStaleSnapshot of the schema 2 row removed or changed the schema 1 row: %+v", got)
	}
	if ok, err := s.DeleteStaleSnapshot(ctx, stored); err != nil || ok {
		t.Fatalf("second DeleteStaleSnapshot = %v, %v; want false", ok, err)
	}
	// Once removed, a lower version may be written (the guard no longer
	// holds it back).
	mustSave(t, s, snap(typ, id, 1, 2), true)
	bad := stored
	bad.AggregateID = uuid.Nil
	if _, err := s.DeleteStaleSnapshot(ctx, bad); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("DeleteStaleSnapshot(nil id) error = %v, want ErrInvalidArgument", err)
	}
	bad = stored
	bad.AggregateType = ""
	if _, err := s.DeleteStaleSnapshot(ctx, bad); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("DeleteStaleSnapshot(empty type) error = %v, want ErrInvalidArgument", err)
	}
	bad = stored
	bad.SchemaVersion = 0
	if _, err := s.DeleteStaleSnapshot(ctx, bad); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("DeleteStaleSnapshot(schema 0) error = %v, want ErrInvalidArgument", err)
	}
}

func testDeleteByType(t *testing.T, s eventsource.SnapshotStore) {
	ctx := context.Background()
	typ, other := uniqueType("ByType"), uniqueType("Keep")
	var v1, v2 []uuid.UUID
	for range 3 {
		id := uuid.New()
		v1 = append(v1, id)
		mustSave(t, s, snap(typ, id, 10, 1), true)
	}
	for range 2 {
		id := uuid.New()
		v2 = append(v2, id)
		mustSave(t, s, snap(typ, id, 10, 2), true)
	}
	// An aggregate with rows of both schema versions: the count is of
	// rows, and its schema 2 row stays.
	mustSave(t, s, snap(typ, v2[0], 12, 1), true)
	keep := uuid.New()
	mustSave(t, s, snap(other, keep, 10, 1), true)

	n, err := s.DeleteSnapshotsByType(ctx, typ, 2)
	if err != nil || n != 4 {
		t.Fatalf("DeleteSnapshotsByType(below 2) = %d, %v; want 4 (rows of schema 1)", n, err)
	}
	for _, id := range append(v1, v2[0]) {
		if mustGet(t, s, typ, id, 1) != nil {
			t.Fatalf("schema 1 snapshot %s survived", id)
		}
	}
	for _, id := range v2 {
		checkStored(t, s, typ, id, 10, 2)
	}
	n, err = s.DeleteSnapshotsByType(ctx, typ, 0)
	if err != nil || n != 2 {
		t.Fatalf("DeleteSnapshotsByType(all) = %d, %v; want 2", n, err)
	}
	n, err = s.DeleteSnapshotsByType(ctx, typ, 0)
	if err != nil || n != 0 {
		t.Fatalf("DeleteSnapshotsByType on an empty type = %d, %v; want 0", n, err)
	}
	checkStored(t, s, other, keep, 10, 1)
}

func testSnapshotIsolation(t *testing.T, s eventsource.SnapshotStore) {
	typA, typB, id := uniqueType("SIsoA"), uniqueType("SIsoB"), uuid.New()
	mustSave(t, s, snap(typA, id, 7, 1), true)
	mustSave(t, s, snap(typB, id, 3, 1), true)
	checkStored(t, s, typA, id, 7, 1)
	checkStored(t, s, typB, id, 3, 1)
	if ok, _ := s.DeleteSnapshot(context.Background(), typB, id); !ok {
		t.Fatal("delete of B failed")
	}
	checkStored(t, s, typA, id, 7, 1)
}

func testInvalidSnapshot(t *testing.T, s eventsource.SnapshotStore) {
	ctx := context.Background()
	typ, id := uniqueType("BadSnap"), uuid.New()
	bad := map[string]eventsource.Snapshot{}
	b := snap(typ, id, 1, 1)
	b.AggregateType = ""
	bad["empty type"] = b
	b = snap(typ, id, 1, 1)
	b.AggregateID = uuid.Nil
	bad["nil id"] = b
	b = snap(typ, id, 0, 1)
	bad["version 0"] = b
	b = snap(typ, id, 1, 0)
	bad["schema 0"] = b
	b = snap(typ, id, 1, 1)
	b.EventID = uuid.Nil
	bad["nil event id"] = b
	b = snap(typ, id, 1, 1)
	b.State = nil
	bad["empty state"] = b
	b = snap(typ, id, 1, 1)
	b.State = []byte(`{"balance": 1`)
	bad["state not JSON"] = b
	names := make([]string, 0, len(bad))
	for n := range bad {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := s.SaveSnapshot(ctx, bad[n]); !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("%s: SaveSnapshot error = %v, want ErrInvalidArgument", n, err)
		}
	}
	if got := mustGet(t, s, typ, id, 1); got != nil {
		t.Fatalf("an invalid snapshot was stored: %+v", got)
	}
	if _, err := s.DeleteSnapshotsByType(ctx, typ, -1); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("DeleteSnapshotsByType(-1) error = %v, want ErrInvalidArgument", err)
	}
	if _, err := s.DeleteSnapshotsByType(ctx, "", 0); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("DeleteSnapshotsByType(\"\") error = %v, want ErrInvalidArgument", err)
	}
	if _, err := s.GetSnapshot(ctx, typ, uuid.Nil, 1); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("GetSnapshot(nil id) error = %v, want ErrInvalidArgument", err)
	}
}
