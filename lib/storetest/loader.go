package storetest

import (
	"context"
	"fmt"
	"iter"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

func loadVersions(t *testing.T, b eventsource.Store, typ string, id uuid.UUID, schema int) (*eventsource.Snapshot, []int64) {
	t.Helper()
	snap, events, err := b.LoadSnapshotAndEvents(context.Background(), typ, id, schema)
	if err != nil {
		t.Fatalf("LoadSnapshotAndEvents: %v", err)
	}
	var vs []int64
	for rec, err := range events {
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		vs = append(vs, rec.Version)
	}
	return snap, vs
}

func checkRange(t *testing.T, got []int64, from, to int64) {
	t.Helper()
	if from > to {
		if len(got) != 0 {
			t.Fatalf("versions %v, want none", got)
		}
		return
	}
	if int64(len(got)) != to-from+1 || got[0] != from || got[len(got)-1] != to {
		t.Fatalf("versions %d..%d (%d), want %d..%d", first(got), first(got[len(got)-1:]), len(got), from, to)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("versions not contiguous at %d: %d after %d", i, got[i], got[i-1])
		}
	}
}

func first(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

// runLoader checks [eventsource.Store.LoadSnapshotAndEvents].
func runLoader(t *testing.T, newBackend factory) {
	b := newBackend(t)
	typ := uniqueType("Loader")
	mk := func(n int) uuid.UUID {
		id := uuid.New()
		for done := 0; done < n; done += 500 {
			mustAppend(t, b, typ, id, eventsource.ExpectedVersion(done), testEvents("Thing", done+1, min(500, n-done)))
		}
		return id
	}
	t.Run("NoSnapshot", func(t *testing.T) {
		id := mk(10)
		snap, vs := loadVersions(t, b, typ, id, 1)
		if snap != nil {
			t.Fatalf("snapshot %+v, want none", snap)
		}
		checkRange(t, vs, 1, 10)
	})
	t.Run("FromSnapshot", func(t *testing.T) {
		id := mk(10)
		mustSave(t, b, snap(typ, id, 5, 1), true)
		s, vs := loadVersions(t, b, typ, id, 1)
		if s == nil || s.Version != 5 || s.SchemaVersion != 1 || !jsonEqual(s.State, snap(typ, id, 5, 1).State) {
			t.Fatalf("snapshot %+v", s)
		}
		checkRange(t, vs, 5, 10)
	})
	t.Run("OtherSchemaReadsAll", func(t *testing.T) {
		id := mk(10)
		mustSave(t, b, snap(typ, id, 5, 2), true)
		s, vs := loadVersions(t, b, typ, id, 1)
		if s != nil {
			t.Fatalf("snapshot %+v, want none: the aggregate has no row of schema 1", s)
		}
		checkRange(t, vs, 1, 10)
	})
	t.Run("ReadsItsOwnSchemasRow", func(t *testing.T) {
		id := mk(10)
		mustSave(t, b, snap(typ, id, 4, 1), true)
		mustSave(t, b, snap(typ, id, 8, 2), true)
		for _, c := range []struct {
			schema  int
			version int64
		}{{1, 4}, {2, 8}} {
			s, vs := loadVersions(t, b, typ, id, c.schema)
			if s == nil || s.SchemaVersion != c.schema || s.Version != c.version || !jsonEqual(s.State, snap(typ, id, c.version, c.schema).State) {
				t.Fatalf("load of schema %d: snapshot %+v, want the schema %d row at v%d", c.schema, s, c.schema, c.version)
			}
			checkRange(t, vs, c.version, 10)
		}
		s, vs := loadVersions(t, b, typ, id, 3)
		if s != nil {
			t.Fatalf("load of schema 3: snapshot %+v, want none", s)
		}
		checkRange(t, vs, 1, 10)
	})
	t.Run("SnapshotAheadOfStream", func(t *testing.T) {
		id := mk(3)
		mustSave(t, b, snap(typ, id, 9, 1), true)
		s, vs := loadVersions(t, b, typ, id, 1)
		if s == nil || s.Version != 9 {
			t.Fatalf("snapshot %+v", s)
		}
		checkRange(t, vs, 9, 3) // none: the caller sees the snapshot's event is missing
	})
	t.Run("LongTail", func(t *testing.T) {
		id := mk(2600)
		mustSave(t, b, snap(typ, id, 100, 1), true)
		_, vs := loadVersions(t, b, typ, id, 1)
		checkRange(t, vs, 100, 2600)
	})
	t.Run("MissingAggregate", func(t *testing.T) {
		s, vs := loadVersions(t, b, typ, uuid.New(), 1)
		if s != nil || len(vs) != 0 {
			t.Fatalf("missing aggregate: %+v, %v", s, vs)
		}
	})
	t.Run("SchemaVersionRange", func(t *testing.T) { testLoaderSchemaVersionRange(t, b) })
	t.Run("IteratedAgain", func(t *testing.T) { testLoaderIteratedAgain(t, b, typ, mk) })
	t.Run("ConsistentUnderSnapshotWrites", func(t *testing.T) { testLoaderUnderSnapshotWrites(t, b) })
	t.Run("EventsAreTheCallers", func(t *testing.T) {
		typ, id := ownedStream(t, b)
		checkOwned(t, func() iter.Seq2[eventsource.RecordedEvent, error] {
			_, events, err := b.LoadSnapshotAndEvents(t.Context(), typ, id, 1)
			if err != nil {
				return storekit.ErrorSeq(err)
			}
			return events
		})
	})
}

// testLoaderIteratedAgain: the events of one load yield the same events
// each time they are iterated, after a complete iteration, after a
// break, and after other loads; and the events an earlier iteration
// yielded keep their content meanwhile (a store may recycle what it read).
func testLoaderIteratedAgain(t *testing.T, b eventsource.Store, typ string, mk func(int) uuid.UUID) {
	id, other := mk(30), mk(30)
	mustSave(t, b, snap(typ, id, 10, 1), true)
	_, events, err := b.LoadSnapshotAndEvents(t.Context(), typ, id, 1)
	if err != nil {
		t.Fatalf("LoadSnapshotAndEvents: %v", err)
	}
	collect := func(limit int) []eventsource.RecordedEvent {
		var out []eventsource.RecordedEvent
		for rec, err := range events {
			if err != nil {
				t.Fatalf("events: %v", err)
			}
			out = append(out, rec)
			if len(out) == limit {
				break
			}
		}
		return out
	}
	check := func(what string, got []eventsource.RecordedEvent, want int) {
		t.Helper()
		if len(got) != want {
			t.Fatalf("%s: %d events, want %d", what, len(got), want)
		}
		for i, rec := range got {
			v := int64(10 + i)
			if rec.Version != v || rec.AggregateID != id || rec.Type != testEvent("Thing", int(v)).Type ||
				!jsonEqual(rec.Payload, testEvent("Thing", int(v)).Payload) {
				t.Fatalf("%s: event %d is %s v%d %s %s, want v%d of %s", what, i, rec.AggregateID, rec.Version, rec.Type, rec.Payload, v, id)
			}
		}
	}
	kept := collect(0)
	check("first iteration", kept, 21)
	for range 3 { // loads of another aggregate, which may reuse what the first read into
		_, vs := loadVersions(t, b, typ, other, 1)
		checkRange(t, vs, 1, 30)
	}
	check("the first iteration's events after other loads", kept, 21)
	check("second iteration", collect(0), 21)
	check("iteration stopped after 5", collect(5), 5)
	check("iteration after a break", collect(0), 21)

	// Two goroutines iterating the events of one fresh load at once (one
	// of them may take what the store read ahead, the other reads again).
	_, events, err = b.LoadSnapshotAndEvents(t.Context(), typ, id, 1)
	if err != nil {
		t.Fatalf("LoadSnapshotAndEvents: %v", err)
	}
	var wg sync.WaitGroup
	got := make([][]eventsource.RecordedEvent, 2)
	for g := range got {
		wg.Go(func() {
			for rec, err := range events {
				if err != nil {
					t.Errorf("concurrent iteration: %v", err)
					return
				}
				got[g] = append(got[g], rec)
			}
		})
	}
	wg.Wait()
	for g := range got {
		check(fmt.Sprintf("concurrent iteration %d", g+1), got[g], 21)
	}
}

// testLoaderUnderSnapshotWrites races loads against writers that keep
// replacing and deleting the snapshots: whatever snapshot a load returns,
// its events must start where the contract says (at that snapshot's
// version when its schema matches, else at 1). A store that reads the
// snapshot and the events as two statements sees a snapshot written
// between them; it must not let the events start elsewhere.
func testLoaderUnderSnapshotWrites(t *testing.T, b eventsource.Store) {
	ctx := context.Background()
	typ := uniqueType("LoaderRace")
	ids := make([]uuid.UUID, 4)
	for i := range ids {
		ids[i] = uuid.New()
		mustAppend(t, b, typ, ids[i], eventsource.NoStream, testEvents("Thing", 1, 40))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := ids[(n+w)%len(ids)]
				if n%7 == 0 {
					_, _ = b.DeleteSnapshot(ctx, typ, id)
					continue
				}
				s := snap(typ, id, int64(1+n%40), 1+n%3/2)
				if _, err := b.SaveSnapshot(ctx, s); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for n := 0; time.Now().Before(deadline) && !t.Failed(); n++ {
		s, events, err := b.LoadSnapshotAndEvents(ctx, typ, ids[n%len(ids)], 1)
		if err != nil {
			t.Fatalf("LoadSnapshotAndEvents: %v", err)
		}
		if s != nil && s.SchemaVersion != 1 {
			t.Fatalf("load %d of schema 1 returned a snapshot of schema %d", n, s.SchemaVersion)
		}
		want := int64(1)
		if s != nil {
			want = s.Version
		}
		for rec, err := range events {
			if err != nil {
				t.Fatalf("events: %v", err)
			}
			if rec.Version != want {
				got := "no snapshot"
				if s != nil {
					got = fmt.Sprintf("a snapshot at v%d (schema %d)", s.Version, s.SchemaVersion)
				}
				t.Errorf("load %d returned %s and events from v%d, want from v%d", n, got, rec.Version, want)
			}
			break
		}
	}
}
