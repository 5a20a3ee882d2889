package storetest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// runAdmin checks the optional capabilities for administration at scale,
// [eventsource.AggregateCounter] and [eventsource.SnapshotPruner], each
// on a store that has it (a store without one has nothing to check: the
// snapshotter falls back to ListAggregates and DeleteSnapshotsByType).
func runAdmin(t *testing.T, newStore factory) {
	s := newStore(t)
	if c, ok := s.(eventsource.AggregateCounter); ok {
		t.Run("CountAggregates", func(t *testing.T) { testCountAggregates(t, c) })
	}
	if _, ok := s.(eventsource.SnapshotPruner); ok {
		t.Run("PruneSnapshots", func(t *testing.T) { testPruneSnapshots(t, newStore(t)) })
	}
}

func testCountAggregates(t *testing.T, c eventsource.AggregateCounter) {
	ctx := context.Background()
	s := c.(eventsource.Store)
	typ, other := uniqueType("Count"), uniqueType("CountOther")
	ids := make([]uuid.UUID, 5)
	for i := range ids {
		ids[i] = uuid.New()
		mustAppend(t, s, typ, ids[i], eventsource.NoStream, testEvents("Thing", 1, i+1))
	}
	mustAppend(t, s, other, uuid.New(), eventsource.NoStream, testEvents("Thing", 1, 1))
	mustAppend(t, s, typ, ids[0], 1, testEvents("Thing", 2, 3)) // more events, not more aggregates
	for _, exact := range []bool{false, true} {
		got, err := c.CountAggregates(ctx, typ, exact)
		if err != nil {
			t.Fatalf("CountAggregates(exact %v): %v", exact, err)
		}
		if got != (eventsource.AggregateCount{N: 5}) {
			t.Errorf("CountAggregates(exact %v) = %+v, want 5, counted (a type of at most CountExactUpTo)", exact, got)
		}
		if got, err := c.CountAggregates(ctx, uniqueType("CountNone"), exact); err != nil || got != (eventsource.AggregateCount{}) {
			t.Errorf("CountAggregates(a type without aggregates, exact %v) = %+v, %v; want 0", exact, got, err)
		}
	}
	_, err := c.CountAggregates(ctx, "", false)
	checkInvalid(t, "CountAggregates of an empty type", err, "empty")
}

// testPruneSnapshots: batches in id order, each covering at most limit
// aggregates, that together remove what DeleteSnapshotsByType would;
// resumable from each Last and idempotent from the start.
func testPruneSnapshots(t *testing.T, s eventsource.Store) {
	ctx := context.Background()
	p := s.(eventsource.SnapshotPruner)
	typ, other := uniqueType("Prune"), uniqueType("PruneOther")
	var both, newOnly, others []uuid.UUID // both: rows of schema 1 and 2
	for i := range 14 {
		id := uuid.New()
		switch {
		case i < 9:
			both = append(both, id)
			mustSave(t, s, snap(typ, id, 3, 1), true)
			mustSave(t, s, snap(typ, id, 4, 2), true)
		case i < 11:
			newOnly = append(newOnly, id)
			mustSave(t, s, snap(typ, id, 2, 2), true)
		default:
			others = append(others, id)
			mustSave(t, s, snap(other, id, 5, 1), true)
		}
	}
	has := func(typ string, id uuid.UUID, schema int) bool { return mustGet(t, s, typ, id, schema) != nil }
	above := func(id, after uuid.UUID) bool { return bytes.Compare(id[:], after[:]) > 0 }

	// Below schema 2, two aggregates a batch.
	const limit = 2
	after, calls, total := uuid.Nil, 0, int64(0)
	for done := false; !done; calls++ {
		if calls > 1000 {
			t.Fatal("PruneSnapshots never reported Done")
		}
		b, err := p.PruneSnapshots(ctx, typ, 2, after, limit)
		if err != nil {
			t.Fatalf("PruneSnapshots(after %s): %v", after, err)
		}
		if b.Deleted > limit {
			t.Fatalf("PruneSnapshots(limit %d) deleted %d rows, each of another aggregate with one row below schema 2", limit, b.Deleted)
		}
		if b.Last != uuid.Nil && !above(b.Last, after) {
			t.Fatalf("PruneSnapshots(after %s) reported Last %s, not above it", after, b.Last)
		}
		if b.Last == uuid.Nil && !b.Done {
			t.Fatalf("PruneSnapshots(after %s) covered nothing and is not Done", after)
		}
		for _, id := range both {
			covered := above(id, after) && (b.Done || !above(id, b.Last))
			switch gone := !has(typ, id, 1); {
			case covered && !gone:
				t.Fatalf("after PruneSnapshots(after %s) = %+v, %s keeps its schema 1 row", after, b, id)
			case !covered && above(id, after) && gone:
				t.Fatalf("PruneSnapshots(after %s) = %+v removed the row of %s, beyond its Last", after, b, id)
			}
		}
		total += b.Deleted
		after, done = b.Last, b.Done
	}
	if total != int64(len(both)) {
		t.Errorf("the batches deleted %d rows, want %d", total, len(both))
	}
	if calls < (len(both)+limit-1)/limit {
		t.Errorf("%d calls of at most %d aggregates each covered %d aggregates", calls, limit, len(both))
	}
	for _, id := range slices.Concat(both, newOnly) {
		if !has(typ, id, 2) {
			t.Errorf("%s lost its schema 2 row", id)
		}
	}
	for _, id := range others {
		if !has(other, id, 1) {
			t.Errorf("the other type's %s lost its snapshot", id)
		}
	}

	// Again from the start: nothing more to remove.
	if n := pruneAll(t, p, typ, 2, 100); n != 0 {
		t.Errorf("a second run from the start deleted %d rows, want 0", n)
	}
	// Every schema version, three a batch.
	if n := pruneAll(t, p, typ, 0, 3); n != int64(len(both)+len(newOnly)) {
		t.Errorf("pruning every schema version deleted %d rows, want %d", n, len(both)+len(newOnly))
	}
	for _, id := range slices.Concat(both, newOnly) {
		if has(typ, id, 2) {
			t.Errorf("%s keeps its schema 2 row after a prune of every schema version", id)
		}
	}
	for _, id := range others {
		if !has(other, id, 1) {
			t.Errorf("the other type's %s lost its snapshot", id)
		}
	}
	b, err := p.PruneSnapshots(ctx, other, 0, uuid.Max, 1)
	if err != nil || b != (eventsource.PruneBatch{Done: true}) {
		t.Errorf("PruneSnapshots after the highest id = %+v, %v; want Done and nothing else", b, err)
	}

	for _, c := range []struct {
		typ          string
		below, limit int
		names        string
	}{
		{"", 0, 10, "empty"},
		{typ, -1, 10, "-1"},
		{typ, eventsource.MaxSchemaVersion + 1, 10, "2147483648"},
		{typ, 2, 0, "0"},
	} {
		_, err := p.PruneSnapshots(ctx, c.typ, c.below, uuid.Nil, c.limit)
		checkInvalid(t, "PruneSnapshots("+c.typ+")", err, c.names)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.PruneSnapshots(cctx, typ, 0, uuid.Nil, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("PruneSnapshots with a cancelled context: %v, want context.Canceled", err)
	}
}

// pruneAll runs PruneSnapshots from the start until Done and returns how
// many rows it deleted.
func pruneAll(t *testing.T, p eventsource.SnapshotPruner, typ string, below, limit int) int64 {
	t.Helper()
	var n int64
	after := uuid.Nil
	for range 10_000 {
		b, err := p.PruneSnapshots(context.Background(), typ, below, after, limit)
		if err != nil {
			t.Fatalf("PruneSnapshots(%s, below %d, after %s): %v", typ, below, after, err)
		}
		n += b.Deleted
		if b.Done {
			return n
		}
		after = b.Last
	}
	t.Fatalf("PruneSnapshots(%s) not Done after 10,000 batches", typ)
	return n
}
