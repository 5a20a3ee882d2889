package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// runGetSnapshots checks [eventsource.SnapshotStore.GetSnapshots]: every snapshot of a batch read is
// what GetSnapshot returns for it, in the order asked, and bad arguments
// are refused with an error naming them.
func runGetSnapshots(t *testing.T, newStore factory) {
	t.Run("MatchesGetSnapshot", func(t *testing.T) { testGetBatchMatches(t, newStore(t)) })
	t.Run("Large", func(t *testing.T) { testGetBatchLarge(t, newStore(t)) })
	t.Run("InvalidArguments", func(t *testing.T) { testGetBatchInvalid(t, newStore(t)) })
	t.Run("CancelledContext", func(t *testing.T) { testGetBatchCancelled(t, newStore(t)) })
}

func mustGetBatch(t *testing.T, s eventsource.SnapshotStore, typ string, schema int, ids []uuid.UUID) []*eventsource.Snapshot {
	t.Helper()
	got, err := s.GetSnapshots(context.Background(), typ, schema, ids)
	if err != nil {
		t.Fatalf("GetSnapshots(%s, schema %d, %d ids): %v", typ, schema, len(ids), err)
	}
	if len(got) != len(ids) {
		t.Fatalf("GetSnapshots(%s, schema %d, %d ids) returned %d results", typ, schema, len(ids), len(got))
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
		got.SchemaVersion != want.SchemaVersion || got.EventID != want.EventID || !got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.Location() != time.UTC ||
		!jsonEqual(got.State, want.State) {
		t.Fatalf("%s: got %s %s v%d schema %d at %v state %s, want %s %s v%d schema %d at %v (UTC) state %s", what,
			got.AggregateType, got.AggregateID, got.Version, got.SchemaVersion, got.CreatedAt, got.State,
			want.AggregateType, want.AggregateID, want.Version, want.SchemaVersion, want.CreatedAt, want.State)
	}
}

func testGetBatchMatches(t *testing.T, s eventsource.SnapshotStore) {
	typ, other := uniqueType("GetBatch"), uniqueType("GetBatchOther")
	withSnap, schema2, missing, otherOnly := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	in := snap(typ, withSnap, 7, 1)
	in.CreatedAt = time.Date(2025, 6, 30, 12, 0, 0, 654321000, time.FixedZone("Y", -5*3600))
	mustSave(t, s, in, true)
	mustSave(t, s, snap(typ, schema2, 40, 2), true)
	// The same id under another type is another aggregate.
	mustSave(t, s, snap(other, otherOnly, 3, 1), true)
	mustSave(t, s, snap(other, withSnap, 99, 1), true)

	// withSnap also has a row of schema 2, which reads of schema 1 never
	// return.
	mustSave(t, s, snap(typ, withSnap, 9, 2), true)

	ids := []uuid.UUID{missing, withSnap, otherOnly, schema2, withSnap, missing}
	for _, schema := range []int{1, 2, 3} {
		got := mustGetBatch(t, s, typ, schema, ids)
		for i, id := range ids {
			checkSameSnapshot(t, fmt.Sprintf("GetSnapshots(schema %d)[%d] (%s)", schema, i, id), got[i], mustGet(t, s, typ, id, schema))
		}
	}
	got := mustGetBatch(t, s, typ, 1, ids)
	if got[1] == nil || got[1].Version != 7 || got[1].EventID != in.EventID || got[3] != nil || got[2] != nil {
		t.Fatalf("GetSnapshots(schema 1) = %v, %v, %v; want v7 and none (schema 2 only, another type's)", got[1], got[3], got[2])
	}
	if got2 := mustGetBatch(t, s, typ, 2, ids); got2[1] == nil || got2[1].Version != 9 || got2[3] == nil || got2[3].Version != 40 {
		t.Fatalf("GetSnapshots(schema 2) = %v, %v; want v9 and v40", got2[1], got2[3])
	}
	if got[1] == got[4] {
		t.Fatal("GetSnapshots returned one *Snapshot for two requests: each caller must own its snapshot")
	}
	// The caller owns what it got: changing it changes nothing stored.
	got[1].State[0] = 'X'
	checkStored(t, s, typ, withSnap, 7, 1)
}

func testGetBatchLarge(t *testing.T, s eventsource.SnapshotStore) {
	typ := uniqueType("GetBatchLarge")
	ids := make([]uuid.UUID, 1000)
	for i := range ids {
		ids[i] = uuid.New()
		if i%3 == 0 {
			mustSave(t, s, snap(typ, ids[i], int64(i+1), 1), true)
		}
	}
	got := mustGetBatch(t, s, typ, 1, ids)
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

func testGetBatchInvalid(t *testing.T, s eventsource.SnapshotStore) {
	ctx := context.Background()
	typ := uniqueType("GetBatchBad")
	_, err := s.GetSnapshots(ctx, typ, 1, nil)
	checkInvalid(t, "GetSnapshots with no ids", err, typ)
	_, err = s.GetSnapshots(ctx, "", 1, []uuid.UUID{uuid.New()})
	checkInvalid(t, "GetSnapshots with an empty type", err, "type")
	_, err = s.GetSnapshots(ctx, typ, 1, []uuid.UUID{uuid.New(), uuid.New(), uuid.Nil})
	checkInvalid(t, "GetSnapshots with a nil id", err, "id 2", "nil")
	_, err = s.GetSnapshots(ctx, typ, 0, []uuid.UUID{uuid.New()})
	checkInvalid(t, "GetSnapshots with schema version 0", err, "schema version 0")
}

func testGetBatchCancelled(t *testing.T, s eventsource.SnapshotStore) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetSnapshots(ctx, uniqueType("GetBatchCancel"), 1, []uuid.UUID{uuid.New()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetSnapshots with a cancelled context: error %v, want one matching context.Canceled", err)
	}
}
