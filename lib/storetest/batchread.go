package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// SnapshotGetterStore is a snapshot store with the batch read capability.
type SnapshotGetterStore interface {
	eventsource.SnapshotStore
	eventsource.SnapshotBatchGetter
}

// TailReaderStore is an event store with the batch tail read capability.
type TailReaderStore interface {
	eventsource.EventStore
	eventsource.EventTailReader
}

// TestSnapshotBatchGetter runs the conformance suite of
// [eventsource.SnapshotBatchGetter]: every snapshot of a batch read is
// what GetSnapshot returns for it, in the order asked, and bad arguments
// are refused with an error naming them.
func TestSnapshotBatchGetter(t *testing.T, newStore func(t *testing.T) SnapshotGetterStore) {
	t.Run("MatchesGetSnapshot", func(t *testing.T) { testGetBatchMatches(t, newStore(t)) })
	t.Run("Large", func(t *testing.T) { testGetBatchLarge(t, newStore(t)) })
	t.Run("InvalidArguments", func(t *testing.T) { testGetBatchInvalid(t, newStore(t)) })
	t.Run("CancelledContext", func(t *testing.T) { testGetBatchCancelled(t, newStore(t)) })
}

func mustGetBatch(t *testing.T, s SnapshotGetterStore, typ string, ids []uuid.UUID) []*eventsource.Snapshot {
	t.Helper()
	got, err := s.GetSnapshots(context.Background(), typ, ids)
	if err != nil {
		t.Fatalf("GetSnapshots(%s, %d ids): %v", typ, len(ids), err)
	}
	if len(got) != len(ids) {
		t.Fatalf("GetSnapshots(%s, %d ids) returned %d results", typ, len(ids), len(got))
	}
	return got
}

// checkSameSnapshot fails t unless got is want (both nil, or equal in
// every field; states as JSON values).
func checkSameSnapshot(t *testing.T, what string, got, want *eventsource.Snapshot) {
	t.Helper()
	switch {
	case got == nil && want == nil:
		return
	case got == nil || want == nil:
		t.Fatalf("%s: got %+v, want %+v", what, got, want)
	}
	if got.AggregateID != want.AggregateID || got.AggregateType != want.AggregateType || got.Version != want.Version ||
		got.SchemaVersion != want.SchemaVersion || !got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.Location() != time.UTC ||
		!jsonEqual(got.State, want.State) {
		t.Fatalf("%s: got %s %s v%d schema %d at %v state %s, want %s %s v%d schema %d at %v (UTC) state %s", what,
			got.AggregateType, got.AggregateID, got.Version, got.SchemaVersion, got.CreatedAt, got.State,
			want.AggregateType, want.AggregateID, want.Version, want.SchemaVersion, want.CreatedAt, want.State)
	}
}

func testGetBatchMatches(t *testing.T, s SnapshotGetterStore) {
	typ, other := uniqueType("GetBatch"), uniqueType("GetBatchOther")
	withSnap, schema2, missing, otherOnly := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	in := snap(typ, withSnap, 7, 1)
	in.CreatedAt = time.Date(2025, 6, 30, 12, 0, 0, 654321000, time.FixedZone("Y", -5*3600))
	mustSave(t, s, in, true)
	mustSave(t, s, snap(typ, schema2, 40, 2), true)
	// The same id under another type is another aggregate.
	mustSave(t, s, snap(other, otherOnly, 3, 1), true)
	mustSave(t, s, snap(other, withSnap, 99, 1), true)

	ids := []uuid.UUID{missing, withSnap, otherOnly, schema2, withSnap, missing}
	got := mustGetBatch(t, s, typ, ids)
	for i, id := range ids {
		checkSameSnapshot(t, fmt.Sprintf("GetSnapshots[%d] (%s)", i, id), got[i], mustGet(t, s, typ, id))
	}
	if got[1] == nil || got[1].Version != 7 || got[3] == nil || got[3].SchemaVersion != 2 || got[2] != nil {
		t.Fatalf("GetSnapshots = %v, %v, %v; want v7, schema 2 and none (another type's)", got[1], got[3], got[2])
	}
	if got[1] == got[4] {
		t.Fatal("GetSnapshots returned one *Snapshot for two requests: each caller must own its snapshot")
	}
	// The caller owns what it got: changing it changes nothing stored.
	got[1].State[0] = 'X'
	checkStored(t, s, typ, withSnap, 7, 1)
}

func testGetBatchLarge(t *testing.T, s SnapshotGetterStore) {
	typ := uniqueType("GetBatchLarge")
	ids := make([]uuid.UUID, 1000)
	for i := range ids {
		ids[i] = uuid.New()
		if i%3 == 0 {
			mustSave(t, s, snap(typ, ids[i], int64(i+1), 1), true)
		}
	}
	got := mustGetBatch(t, s, typ, ids)
	for i, g := range got {
		if i%3 != 0 {
			if g != nil {
				t.Fatalf("GetSnapshots[%d] = v%d, want none", i, g.Version)
			}
			continue
		}
		if g == nil || g.AggregateID != ids[i] || g.Version != int64(i+1) {
			t.Fatalf("GetSnapshots[%d] = %+v, want %s v%d", i, g, ids[i], i+1)
		}
	}
}

// checkInvalid fails t unless err matches ErrInvalidArgument and mentions
// every one of names.
func checkInvalid(t *testing.T, what string, err error, names ...string) {
	t.Helper()
	if !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("%s: error %v, want one matching ErrInvalidArgument", what, err)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Fatalf("%s: error %q does not name %q", what, err, n)
		}
	}
}

func testGetBatchInvalid(t *testing.T, s SnapshotGetterStore) {
	ctx := context.Background()
	typ := uniqueType("GetBatchBad")
	_, err := s.GetSnapshots(ctx, typ, nil)
	checkInvalid(t, "GetSnapshots with no ids", err, typ)
	_, err = s.GetSnapshots(ctx, "", []uuid.UUID{uuid.New()})
	checkInvalid(t, "GetSnapshots with an empty type", err, "type")
	_, err = s.GetSnapshots(ctx, typ, []uuid.UUID{uuid.New(), uuid.New(), uuid.Nil})
	checkInvalid(t, "GetSnapshots with a nil id", err, "id 2", "nil")
}

func testGetBatchCancelled(t *testing.T, s SnapshotGetterStore) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetSnapshots(ctx, uniqueType("GetBatchCancel"), []uuid.UUID{uuid.New()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetSnapshots with a cancelled context: error %v, want one matching context.Canceled", err)
	}
}

// TestEventTailReader runs the conformance suite of
// [eventsource.EventTailReader]: every tail of a batch read is the start
// of what ReadEvents yields for it, cut at the limit, and bad arguments
// are refused with an error naming them.
func TestEventTailReader(t *testing.T, newStore func(t *testing.T) TailReaderStore) {
	t.Run("MatchesReadEvents", func(t *testing.T) { testTailsMatch(t, newStore(t)) })
	t.Run("LimitCutsEachTail", func(t *testing.T) { testTailsLimit(t, newStore(t)) })
	t.Run("Large", func(t *testing.T) { testTailsLarge(t, newStore(t)) })
	t.Run("CallerOwnsEvents", func(t *testing.T) { testTailsOwned(t, newStore(t)) })
	t.Run("InvalidArguments", func(t *testing.T) { testTailsInvalid(t, newStore(t)) })
	t.Run("CancelledContext", func(t *testing.T) { testTailsCancelled(t, newStore(t)) })
}

func mustReadTails(t *testing.T, s TailReaderStore, typ string, reads []eventsource.TailRead, limit int) [][]eventsource.RecordedEvent {
	t.Helper()
	got, err := s.ReadTails(context.Background(), typ, reads, limit)
	if err != nil {
		t.Fatalf("ReadTails(%s, %d reads, limit %d): %v", typ, len(reads), limit, err)
	}
	if len(got) != len(reads) {
		t.Fatalf("ReadTails(%s, %d reads) returned %d tails", typ, len(reads), len(got))
	}
	return got
}

// checkTail fails t unless got is the first limit events ReadEvents
// yields after r.After, field by field.
func checkTail(t *testing.T, s TailReaderStore, typ string, i int, r eventsource.TailRead, limit int, got []eventsource.RecordedEvent) {
	t.Helper()
	want := ReadAll(t, s, typ, r.AggregateID, r.After)
	want = want[:min(len(want), limit)]
	if len(got) != len(want) {
		t.Fatalf("tail %d (%s after v%d, limit %d): %d events, want %d", i, r.AggregateID, r.After, limit, len(got), len(want))
	}
	for j := range want {
		g, w := &got[j], &want[j]
		if g.ID != w.ID || g.AggregateType != w.AggregateType || g.AggregateID != w.AggregateID || g.Version != w.Version ||
			g.Type != w.Type || !g.OccurredAt.Equal(w.OccurredAt) || g.OccurredAt.Location() != time.UTC ||
			!jsonEqual(g.Payload, w.Payload) || g.Metadata.CorrelationID != w.Metadata.CorrelationID ||
			g.Metadata.CausationID != w.Metadata.CausationID || len(g.Metadata.Attributes) != len(w.Metadata.Attributes) {
			t.Fatalf("tail %d event %d = %+v, want %+v", i, j, *g, *w)
		}
		for k, v := range w.Metadata.Attributes {
			if g.Metadata.Attributes[k] != v {
				t.Fatalf("tail %d event %d metadata attribute %q = %q, want %q", i, j, k, g.Metadata.Attributes[k], v)
			}
		}
	}
}

func testTailsMatch(t *testing.T, s TailReaderStore) {
	typ, other := uniqueType("Tails"), uniqueType("TailsOther")
	short, long, missing := uuid.New(), uuid.New(), uuid.New()
	mustAppend(t, s, typ, short, eventsource.NoStream, testEvents("Thing", 1, 3))
	in := testEvents("Other", 1, 20)
	in[4].Metadata = eventsource.Metadata{CorrelationID: "corr", CausationID: "cause", Attributes: map[string]string{"user": "ada", "ünï": "☃"}}
	in[7].OccurredAt = time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.FixedZone("X", 3*3600))
	mustAppend(t, s, typ, long, eventsource.NoStream, in)
	// Another type's stream under the same id is not read.
	mustAppend(t, s, other, short, eventsource.NoStream, testEvents("Thing", 1, 9))

	reads := []eventsource.TailRead{
		{AggregateID: long, After: 0},
		{AggregateID: short, After: 1},
		{AggregateID: missing, After: 0},
		{AggregateID: short, After: 3},  // at the head
		{AggregateID: short, After: 50}, // past the head
		{AggregateID: long, After: 4},   // the same stream again, from elsewhere
	}
	got := mustReadTails(t, s, typ, reads, 100)
	for i, r := range reads {
		checkTail(t, s, typ, i, r, 100, got[i])
	}
	if len(got[0]) != 20 || len(got[1]) != 2 || len(got[2]) != 0 || len(got[3]) != 0 || len(got[4]) != 0 || len(got[5]) != 16 {
		t.Fatalf("tail lengths %d %d %d %d %d %d, want 20 2 0 0 0 16", len(got[0]), len(got[1]), len(got[2]), len(got[3]), len(got[4]), len(got[5]))
	}
	if got[5][0].Version != 5 || got[5][0].Metadata.CorrelationID != "corr" {
		t.Fatalf("tail after v4 starts at v%d with metadata %+v, want v5 with the appended metadata", got[5][0].Version, got[5][0].Metadata)
	}
}

func testTailsLimit(t *testing.T, s TailReaderStore) {
	typ := uniqueType("TailsLimit")
	a, b := uuid.New(), uuid.New()
	mustAppend(t, s, typ, a, eventsource.NoStream, testEvents("Thing", 1, 10))
	mustAppend(t, s, typ, b, eventsource.NoStream, testEvents("Thing", 1, 2))
	reads := []eventsource.TailRead{{AggregateID: a, After: 0}, {AggregateID: b, After: 0}, {AggregateID: a, After: 8}, {AggregateID: a, After: 5}}
	for _, limit := range []int{1, 3, 10} {
		got := mustReadTails(t, s, typ, reads, limit)
		for i, r := range reads {
			checkTail(t, s, typ, i, r, limit, got[i])
		}
	}
	// A caller that gets limit events reads on from the last one.
	got := mustReadTails(t, s, typ, reads[:1], 4)
	rest := ReadAll(t, s, typ, a, got[0][3].Version)
	if len(rest) != 6 || rest[0].Version != 5 {
		t.Fatalf("reading on after a cut tail: %d events from v%d, want 6 from v5", len(rest), rest[0].Version)
	}
}

func testTailsLarge(t *testing.T, s TailReaderStore) {
	typ := uniqueType("TailsLarge")
	reads := make([]eventsource.TailRead, 300)
	for i := range reads {
		id := uuid.New()
		if i%2 == 0 {
			mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 1+i%7))
		}
		reads[i] = eventsource.TailRead{AggregateID: id, After: int64(i % 3)}
	}
	got := mustReadTails(t, s, typ, reads, 5)
	for i, r := range reads {
		want := 0
		if i%2 == 0 {
			want = min(5, max(0, 1+i%7-int(r.After)))
		}
		if len(got[i]) != want {
			t.Fatalf("tail %d: %d events, want %d", i, len(got[i]), want)
		}
		for j, e := range got[i] {
			if e.AggregateID != r.AggregateID || e.Version != r.After+int64(j)+1 {
				t.Fatalf("tail %d event %d is %s v%d, want %s v%d", i, j, e.AggregateID, e.Version, r.AggregateID, r.After+int64(j)+1)
			}
		}
	}
}

func testTailsOwned(t *testing.T, s TailReaderStore) {
	typ, id := uniqueType("TailsOwned"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 2))
	reads := []eventsource.TailRead{{AggregateID: id}, {AggregateID: id}}
	got := mustReadTails(t, s, typ, reads, 10)
	before := slices.Clone(got[1][0].Payload)
	got[0][0].Payload[0] = 'X'
	if string(got[1][0].Payload) != string(before) {
		t.Fatal("two tails share their payload bytes: each caller must own its events")
	}
	if again := mustReadTails(t, s, typ, reads[:1], 10); !jsonEqual(again[0][0].Payload, before) {
		t.Fatalf("changing a returned payload changed the stored event: %s", again[0][0].Payload)
	}
}

func testTailsInvalid(t *testing.T, s TailReaderStore) {
	ctx := context.Background()
	typ := uniqueType("TailsBad")
	ok := eventsource.TailRead{AggregateID: uuid.New()}
	_, err := s.ReadTails(ctx, typ, nil, 10)
	checkInvalid(t, "ReadTails with no reads", err, typ)
	_, err = s.ReadTails(ctx, typ, []eventsource.TailRead{ok}, 0)
	checkInvalid(t, "ReadTails with limit 0", err, "limit 0")
	_, err = s.ReadTails(ctx, "", []eventsource.TailRead{ok}, 10)
	checkInvalid(t, "ReadTails with an empty type", err, "type")
	_, err = s.ReadTails(ctx, typ, []eventsource.TailRead{ok, {}}, 10)
	checkInvalid(t, "ReadTails with a nil id", err, "read 1", "nil")
	_, err = s.ReadTails(ctx, typ, []eventsource.TailRead{ok, ok, {AggregateID: uuid.New(), After: -1}}, 10)
	checkInvalid(t, "ReadTails after a negative version", err, "read 2", "-1")
}

func testTailsCancelled(t *testing.T, s TailReaderStore) {
	typ, id := uniqueType("TailsCancel"), uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 2))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.ReadTails(ctx, typ, []eventsource.TailRead{{AggregateID: id}}, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadTails with a cancelled context: error %v, want one matching context.Canceled", err)
	}
}
