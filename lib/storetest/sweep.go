package storetest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// settle bounds how long a check waits for changes to reach the end of a
// store's change order: on PostgreSQL a page stops short of the changes
// of transactions still open anywhere on the server, other tests' too.
const settle = 30 * time.Second

// scanToEnd pages s's change order of typ from after, Examine at a time,
// until a page ends with every aggregate of want (id to head) examined at
// its head or later, waiting while changes are not yet final. It returns
// the aggregates examined in order (MinBehind 0 returns them all) and the
// last page.
func scanToEnd(t *testing.T, s eventsource.SweepStore, typ string, opts eventsource.ScanOptions, want map[uuid.UUID]int64) ([]eventsource.ScannedAggregate, eventsource.ScanPage) {
	t.Helper()
	var got []eventsource.ScannedAggregate
	seen := map[uuid.UUID]int64{}
	deadline := time.Now().Add(settle)
	for {
		page, err := s.ScanAggregates(context.Background(), typ, opts)
		if err != nil {
			t.Fatalf("ScanAggregates(%s, %+v): %v", typ, opts, err)
		}
		if page.Examined > opts.Examine || len(page.Behind) > page.Examined {
			t.Fatalf("ScanAggregates(%s, %+v) examined %d and returned %d", typ, opts, page.Examined, len(page.Behind))
		}
		for _, a := range page.Behind {
			got = append(got, a)
			seen[a.AggregateID] = a.HeadVersion
		}
		if opts.ByID {
			opts.AfterID = page.NextID
		} else {
			opts.After = page.Next
		}
		if !page.End {
			continue
		}
		done := true
		for id, head := range want {
			if seen[id] < head {
				done = false
			}
		}
		if done {
			return got, page
		}
		if time.Now().After(deadline) {
			t.Fatalf("ScanAggregates(%s) did not reach %v in %v (examined %v)", typ, want, settle, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func scannedIDs(as []eventsource.ScannedAggregate) []uuid.UUID {
	out := make([]uuid.UUID, len(as))
	for i, a := range as {
		out[i] = a.AggregateID
	}
	return out
}

// runSweepStore checks [eventsource.SweepStore].
func runSweepStore(t *testing.T, newStore factory) {
	sweepStore := func(t *testing.T) eventsource.SweepStore {
		t.Helper()
		return newStore(t).(eventsource.SweepStore)
	}
	t.Run("ChangeOrder", func(t *testing.T) { testChangeOrder(t, sweepStore(t)) })
	t.Run("ByID", func(t *testing.T) { testScanByID(t, sweepStore(t)) })
	t.Run("BehindAsListed", func(t *testing.T) { testScanBehindAsListed(t, sweepStore(t)) })
	t.Run("SnapshotRemovalMovesTheStream", func(t *testing.T) { testSnapshotRemovalMoves(t, sweepStore(t)) })
	t.Run("ConcurrentAppendsAllExamined", func(t *testing.T) { testConcurrentAppendsExamined(t, sweepStore(t)) })
	t.Run("Marks", func(t *testing.T) { testSweepMarks(t, sweepStore(t)) })
	t.Run("PruneRemovesMarks", func(t *testing.T) { testPruneRemovesMarks(t, sweepStore(t)) })
	t.Run("BatchedPruneRemovesMarks", func(t *testing.T) { testBatchedPruneRemovesMarks(t, sweepStore(t)) })
	t.Run("InvalidArguments", func(t *testing.T) { testSweepInvalid(t, sweepStore(t)) })
}

// Appends put streams in change order; a later append moves a stream to
// the end; pages resume after Next and end with End; a change made after
// a page comes after its Horizon; other types are not examined.
func testChangeOrder(t *testing.T, s eventsource.SweepStore) {
	typ := uniqueType("Change")
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	mustAppend(t, s, typ, a, eventsource.NoStream, testEvents("Thing", 1, 3))
	mustAppend(t, s, typ, b, eventsource.NoStream, testEvents("Thing", 1, 1))
	mustAppend(t, s, uniqueType("ChangeOther"), uuid.New(), eventsource.NoStream, testEvents("Thing", 1, 1))
	mustAppend(t, s, typ, c, eventsource.NoStream, testEvents("Thing", 1, 5))
	all := eventsource.ScanOptions{SchemaVersion: 1, Examine: 100}
	got, last := scanToEnd(t, s, typ, all, map[uuid.UUID]int64{a: 3, b: 1, c: 5})
	if ids := scannedIDs(got); !slices.Equal(ids, []uuid.UUID{a, b, c}) {
		t.Fatalf("change order = %v, want %v (a, b, c)", ids, []uuid.UUID{a, b, c})
	}
	for i, g := range got {
		if g.Behind() != g.HeadVersion || g.SnapshotVersion != 0 {
			t.Errorf("%s: %+v, want no snapshot", g.AggregateID, g.AggregateInfo)
		}
		if i > 0 && g.Changed.Compare(got[i-1].Changed) <= 0 {
			t.Errorf("change positions do not ascend: %+v then %+v", got[i-1].Changed, g.Changed)
		}
	}
	if last.Next != got[2].Changed {
		t.Errorf("last page's Next = %+v, want c's position %+v", last.Next, got[2].Changed)
	}

	// A new append moves a to the end; a scan after the last Next finds it.
	mustAppend(t, s, typ, a, 3, testEvents("Thing", 4, 1))
	after := all
	after.After = last.Next
	moved, _ := scanToEnd(t, s, typ, after, map[uuid.UUID]int64{a: 4})
	if len(moved) != 1 || moved[0].AggregateID != a || moved[0].HeadVersion != 4 || moved[0].Changed.Compare(last.Next) <= 0 {
		t.Fatalf("after an append to a, the scan after %+v found %+v, want a at v4 after it", last.Next, moved)
	}

	// One at a time from the start: b, c, a.
	one := all
	one.Examine = 1
	paged, _ := scanToEnd(t, s, typ, one, map[uuid.UUID]int64{a: 4, b: 1, c: 5})
	if ids := scannedIDs(paged); !slices.Equal(ids, []uuid.UUID{b, c, a}) {
		t.Fatalf("pages of one = %v, want %v (b, c, a)", ids, []uuid.UUID{b, c, a})
	}

	// A change made after a page comes after the page's Horizon.
	empty, err := s.ScanAggregates(context.Background(), typ, eventsource.ScanOptions{SchemaVersion: 1, Examine: 100, After: moved[0].Changed})
	if err != nil {
		t.Fatal(err)
	}
	if !empty.End || empty.Examined != 0 || len(empty.Behind) != 0 || empty.Next != moved[0].Changed {
		t.Fatalf("a page past the end = %+v, want nothing examined, End, and Next unchanged", empty)
	}
	mustAppend(t, s, typ, d, eventsource.NoStream, testEvents("Thing", 1, 2))
	fromHorizon := all
	fromHorizon.After = empty.Horizon
	later, _ := scanToEnd(t, s, typ, fromHorizon, map[uuid.UUID]int64{d: 2})
	if len(later) != 1 || later[0].AggregateID != d || later[0].Changed.Compare(empty.Horizon) <= 0 {
		t.Fatalf("the scan after a page's Horizon found %+v, want d, appended since, after it", later)
	}
}

// In id order a page examines Examine aggregates whatever their lag,
// returns the ones behind, and ends with End.
func testScanByID(t *testing.T, s eventsource.SweepStore) {
	typ := uniqueType("ScanByID")
	ids := make([]uuid.UUID, 5)
	for i := range ids {
		ids[i] = uuid.New()
		mustAppend(t, s, typ, ids[i], eventsource.NoStream, testEvents("Thing", 1, i+1))
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	opts := eventsource.ScanOptions{SchemaVersion: 1, MinBehind: 1000, Examine: 2, ByID: true}
	var nexts []uuid.UUID
	for range 3 {
		page, err := s.ScanAggregates(context.Background(), typ, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Behind) != 0 {
			t.Fatalf("page %+v returned aggregates less than MinBehind behind", page)
		}
		nexts = append(nexts, page.NextID)
		if wantEnd := len(nexts) == 3; page.End != wantEnd {
			t.Fatalf("page %d: End = %v, want %v", len(nexts), page.End, wantEnd)
		}
		opts.AfterID = page.NextID
	}
	if want := []uuid.UUID{ids[1], ids[3], ids[4]}; !slices.Equal(nexts, want) {
		t.Fatalf("NextIDs = %v, want %v", nexts, want)
	}
	page, err := s.ScanAggregates(context.Background(), typ, opts)
	if err != nil || page.Examined != 0 || !page.End || page.NextID != ids[4] {
		t.Fatalf("the page past the last id = %+v, %v; want nothing examined, End, NextID unchanged", page, err)
	}
	got, _ := scanToEnd(t, s, typ, eventsource.ScanOptions{SchemaVersion: 1, Examine: 3, ByID: true}, nil)
	if !slices.Equal(scannedIDs(got), ids) {
		t.Fatalf("every aggregate in id order = %v, want %v", scannedIDs(got), ids)
	}
}

// A scan measures lag as ListAggregates does against the same schema
// version, in both orders.
func testScanBehindAsListed(t *testing.T, s eventsource.SweepStore) {
	typ := uniqueType("ScanBehind")
	type agg struct {
		head  int
		snaps map[int]int64 // schema version -> snapshot version
	}
	plan := []agg{{10, map[int]int64{1: 10}}, {20, map[int]int64{1: 5}}, {5, nil}, {30, map[int]int64{1: 2, 2: 25}}, {12, map[int]int64{2: 12}}}
	for _, p := range plan {
		id := uuid.New()
		mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, p.head))
		for sv := 1; sv <= 2; sv++ {
			if v, ok := p.snaps[sv]; ok {
				mustSave(t, s, snap(typ, id, v, sv), true)
			}
		}
	}
	for _, sv := range []int{1, 2} {
		for _, minBehind := range []int64{0, 5, 18} {
			listed := listAll(t, s, typ, eventsource.ListOptions{SchemaVersion: sv, MinBehind: minBehind})
			want := map[uuid.UUID]int64{}
			for _, in := range listed {
				want[in.AggregateID] = in.HeadVersion
			}
			for _, byID := range []bool{true, false} {
				got, _ := scanToEnd(t, s, typ, eventsource.ScanOptions{SchemaVersion: sv, MinBehind: minBehind, Examine: 2, ByID: byID}, want)
				if byID {
					// Id order is ListAggregates' order.
					var infos []eventsource.AggregateInfo
					for _, g := range got {
						infos = append(infos, g.AggregateInfo)
					}
					if !slices.Equal(infos, listed) {
						t.Errorf("schema %d, min behind %d, by id: scanned %+v, listed %+v", sv, minBehind, infos, listed)
					}
					continue
				}
				var infos []eventsource.AggregateInfo
				for _, g := range got {
					infos = append(infos, g.AggregateInfo)
				}
				slices.SortFunc(infos, func(a, b eventsource.AggregateInfo) int { return bytes.Compare(a.AggregateID[:], b.AggregateID[:]) })
				if !slices.Equal(infos, listed) {
					t.Errorf("schema %d, min behind %d, change order: scanned %+v, listed %+v", sv, minBehind, infos, listed)
				}
			}
		}
	}
}

// DeleteSnapshot and DeleteStaleSnapshot that remove a snapshot move the
// aggregate to the end of the change order; one that removes nothing does
// not.
func testSnapshotRemovalMoves(t *testing.T, s eventsource.SweepStore) {
	ctx := context.Background()
	typ := uniqueType("Removal")
	id := uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 10))
	mustSave(t, s, snap(typ, id, 10, 1), true)
	opts := eventsource.ScanOptions{SchemaVersion: 1, MinBehind: 1, Examine: 10}
	_, end := scanToEnd(t, s, typ, eventsource.ScanOptions{SchemaVersion: 1, Examine: 10}, map[uuid.UUID]int64{id: 10})

	for _, remove := range []struct {
		name string
		do   func() (bool, error)
	}{
		{"DeleteSnapshot", func() (bool, error) { return s.DeleteSnapshot(ctx, typ, id) }},
		{"DeleteStaleSnapshot", func() (bool, error) { return s.DeleteStaleSnapshot(ctx, *mustGet(t, s, typ, id, 1)) }},
	} {
		if remove.name == "DeleteStaleSnapshot" {
			mustSave(t, s, snap(typ, id, 10, 1), true)
			other := snap(typ, id, 10, 1) // another event id: not the stored snapshot
			if ok, err := s.DeleteStaleSnapshot(ctx, other); ok || err != nil {
				t.Fatalf("DeleteStaleSnapshot of a snapshot not stored = %v, %v", ok, err)
			}
			page, err := s.ScanAggregates(ctx, typ, eventsource.ScanOptions{SchemaVersion: 1, Examine: 10, After: end.Next})
			if err != nil || page.Examined != 0 {
				t.Fatalf("a DeleteStaleSnapshot that removed nothing moved the stream: %+v, %v", page, err)
			}
		}
		if ok, err := remove.do(); !ok || err != nil {
			t.Fatalf("%s = %v, %v", remove.name, ok, err)
		}
		opts.After = end.Next
		got, last := scanToEnd(t, s, typ, opts, map[uuid.UUID]int64{id: 10})
		if len(got) != 1 || got[0].AggregateID != id || got[0].Behind() != 10 || got[0].Changed.Compare(end.Next) <= 0 {
			t.Fatalf("after %s the scan after %+v found %+v, want the aggregate 10 behind after it", remove.name, end.Next, got)
		}
		end = last
	}
}

// Every change of appends racing a scanner in change order is examined
// at its final head by the time the appends are done and the scan has
// reached the end: no change lands behind a position already passed.
func testConcurrentAppendsExamined(t *testing.T, s eventsource.SweepStore) {
	ctx := context.Background()
	typ := uniqueType("Racing")
	const writers, aggs, appends = 6, 24, 20
	ids := make([]uuid.UUID, aggs)
	for i := range ids {
		ids[i] = uuid.New()
	}
	final := make([]int64, aggs)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range appends {
				i := w + writers*(n%(aggs/writers)) // writer w appends to its own aggregates
				if _, err := s.Append(ctx, typ, ids[i], eventsource.AnyVersion, testEvents("Thing", n, 1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	opts := eventsource.ScanOptions{SchemaVersion: 1, Examine: 7}
	seen := map[uuid.UUID]int64{}
	// step scans the next page and reports whether it ended.
	step := func() bool {
		page, err := s.ScanAggregates(ctx, typ, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page.Behind {
			seen[a.AggregateID] = a.HeadVersion
		}
		opts.After = page.Next
		return page.End
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			step()
		}
	}
	if t.Failed() {
		return
	}
	want := map[uuid.UUID]int64{}
	for i, id := range ids {
		v, err := s.StreamVersion(ctx, typ, id)
		if err != nil {
			t.Fatal(err)
		}
		final[i] = v
		if v > 0 {
			want[id] = v
		}
	}
	// Go on to the end, waiting while changes are not final yet (on
	// PostgreSQL, other tests' transactions hold the horizon back).
	for deadline := time.Now().Add(settle); ; time.Sleep(10 * time.Millisecond) {
		if !step() {
			continue
		}
		done := true
		for id, head := range want {
			done = done && seen[id] >= head
		}
		if done || time.Now().After(deadline) {
			break
		}
	}
	for i, id := range ids {
		if final[i] > 0 && seen[id] != final[i] {
			t.Errorf("aggregate %d: last examined at v%d, its head is v%d: a change landed behind the scan", i, seen[id], final[i])
		}
	}
}

// Marks are compare-and-set by generation, per key.
func testSweepMarks(t *testing.T, s eventsource.SweepStore) {
	ctx := context.Background()
	key := eventsource.SweepMarkKey{Name: "sweeper-" + uuid.NewString()[:8], AggregateType: uniqueType("Marks"), SchemaVersion: 1}
	if m, err := s.GetSweepMark(ctx, key); err != nil || m != (eventsource.SweepMark{}) {
		t.Fatalf("GetSweepMark of no mark = %+v, %v; want the zero mark", m, err)
	}
	m := eventsource.SweepMark{Threshold: 100, FullAfter: uuid.New(), After: eventsource.ChangePosition{Seq: 42, ID: uuid.New()}}
	g1, err := s.PutSweepMark(ctx, key, m)
	if err != nil || g1 <= 0 {
		t.Fatalf("PutSweepMark(new) = %d, %v; want a positive generation", g1, err)
	}
	want := m
	want.Generation = g1
	if got, err := s.GetSweepMark(ctx, key); err != nil || got != want {
		t.Fatalf("GetSweepMark = %+v, %v; want %+v", got, err, want)
	}
	if _, err := s.PutSweepMark(ctx, key, m); !errors.Is(err, eventsource.ErrSweepMarkMoved) {
		t.Fatalf("PutSweepMark with generation 0 over a stored mark: %v, want ErrSweepMarkMoved", err)
	}
	next := eventsource.SweepMark{Generation: g1, Threshold: 100, Changes: true, After: eventsource.ChangePosition{Seq: 50, ID: uuid.New()}}
	g2, err := s.PutSweepMark(ctx, key, next)
	if err != nil || g2 <= 0 || g2 == g1 {
		t.Fatalf("PutSweepMark(generation %d) = %d, %v; want a new positive generation", g1, g2, err)
	}
	if _, err := s.PutSweepMark(ctx, key, next); !errors.Is(err, eventsource.ErrSweepMarkMoved) {
		t.Fatalf("PutSweepMark with a stale generation: %v, want ErrSweepMarkMoved", err)
	}
	next.Generation = g2
	if got, err := s.GetSweepMark(ctx, key); err != nil || got != next {
		t.Fatalf("GetSweepMark = %+v, %v; want %+v (the failed puts wrote nothing)", got, err, next)
	}
	for _, other := range []eventsource.SweepMarkKey{
		{Name: key.Name + "x", AggregateType: key.AggregateType, SchemaVersion: 1},
		{Name: key.Name, AggregateType: key.AggregateType + "x", SchemaVersion: 1},
		{Name: key.Name, AggregateType: key.AggregateType, SchemaVersion: 2},
	} {
		if got, err := s.GetSweepMark(ctx, other); err != nil || got != (eventsource.SweepMark{}) {
			t.Errorf("GetSweepMark(%+v) = %+v, %v; want no mark (marks are per key)", other, got, err)
		}
	}
}

// DeleteSnapshotsByType removes the marks of the schema versions whose
// snapshots it removes, and no other; a sweeper that read a removed mark
// cannot write over its removal.
func testPruneRemovesMarks(t *testing.T, s eventsource.SweepStore) {
	ctx := context.Background()
	typ, other := uniqueType("PruneMarks"), uniqueType("PruneMarksOther")
	name := "sweeper-" + uuid.NewString()[:8]
	key := func(typ string, sv int) eventsource.SweepMarkKey {
		return eventsource.SweepMarkKey{Name: name, AggregateType: typ, SchemaVersion: sv}
	}
	gens := map[eventsource.SweepMarkKey]int64{}
	for _, k := range []eventsource.SweepMarkKey{key(typ, 1), key(typ, 2), key(typ, 3), key(other, 1)} {
		g, err := s.PutSweepMark(ctx, k, eventsource.SweepMark{Threshold: 10, Changes: true})
		if err != nil {
			t.Fatal(err)
		}
		gens[k] = g
	}
	if _, err := s.DeleteSnapshotsByType(ctx, typ, 3); err != nil {
		t.Fatal(err)
	}
	for k, g := range gens {
		m, err := s.GetSweepMark(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		removed := k.AggregateType == typ && k.SchemaVersion < 3
		if removed != (m.Generation == 0) || !removed && m.Generation != g {
			t.Errorf("after DeleteSnapshotsByType(%s, 3) the mark of %+v is %+v (removed: %v)", typ, k, m, removed)
		}
	}
	if _, err := s.PutSweepMark(ctx, key(typ, 1), eventsource.SweepMark{Generation: gens[key(typ, 1)], Changes: true}); !errors.Is(err, eventsource.ErrSweepMarkMoved) {
		t.Fatalf("PutSweepMark over a removed mark with the generation read before: %v, want ErrSweepMarkMoved", err)
	}
	g, err := s.PutSweepMark(ctx, key(typ, 1), eventsource.SweepMark{Threshold: 10})
	if err != nil || g <= 0 || g == gens[key(typ, 1)] {
		t.Fatalf("PutSweepMark anew after the removal = %d, %v; want a new positive generation (not %d)", g, err, gens[key(typ, 1)])
	}
	if _, err := s.DeleteSnapshotsByType(ctx, typ, 0); err != nil {
		t.Fatal(err)
	}
	for _, sv := range []int{1, 3} {
		if m, err := s.GetSweepMark(ctx, key(typ, sv)); err != nil || m.Generation != 0 {
			t.Errorf("after DeleteSnapshotsByType(%s, 0) the mark of schema %d is %+v, %v; want none", typ, sv, m, err)
		}
	}
	if m, err := s.GetSweepMark(ctx, key(other, 1)); err != nil || m.Generation != gens[key(other, 1)] {
		t.Errorf("DeleteSnapshotsByType of %s touched %s's mark: %+v, %v", typ, other, m, err)
	}
}

// A batched prune ([eventsource.SnapshotPruner]) that removes snapshots
// removes the marks of the schema versions it prunes, as
// DeleteSnapshotsByType does, whichever batch a stopped prune ended at:
// the sweeps of those versions start over with a full pass and see the
// aggregates that lost their snapshots. A prune that removes nothing
// leaves the marks.
func testBatchedPruneRemovesMarks(t *testing.T, s eventsource.SweepStore) {
	p, ok := s.(eventsource.SnapshotPruner)
	if !ok {
		t.Skip("the store prunes in one statement only (no eventsource.SnapshotPruner)")
	}
	ctx := context.Background()
	typ := uniqueType("BatchedPruneMarks")
	name := "sweeper-" + uuid.NewString()[:8]
	key := func(sv int) eventsource.SweepMarkKey {
		return eventsource.SweepMarkKey{Name: name, AggregateType: typ, SchemaVersion: sv}
	}
	put := func() map[int]int64 {
		gens := map[int]int64{}
		for _, sv := range []int{1, 2} {
			m, err := s.GetSweepMark(ctx, key(sv))
			if err != nil {
				t.Fatal(err)
			}
			g, err := s.PutSweepMark(ctx, key(sv), eventsource.SweepMark{Generation: m.Generation, Threshold: 10, Changes: true})
			if err != nil {
				t.Fatal(err)
			}
			gens[sv] = g
		}
		return gens
	}
	prune := func() int64 {
		var deleted int64
		for b := (eventsource.PruneBatch{}); !b.Done; {
			var err error
			if b, err = p.PruneSnapshots(ctx, typ, 2, b.Last, 1000); err != nil {
				t.Fatal(err)
			}
			deleted += b.Deleted
		}
		return deleted
	}
	id := uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, testEvents("Thing", 1, 1))
	mustSave(t, s, snap(typ, id, 1, 1), true)
	gens := put()
	if n := prune(); n != 1 {
		t.Fatalf("prune below schema 2 deleted %d snapshots, want 1", n)
	}
	if m, err := s.GetSweepMark(ctx, key(1)); err != nil || m.Generation != 0 {
		t.Errorf("after a batched prune below schema 2 the mark of schema 1 is %+v, %v; want none", m, err)
	}
	if m, err := s.GetSweepMark(ctx, key(2)); err != nil || m.Generation != gens[2] {
		t.Errorf("a batched prune below schema 2 touched schema 2's mark: %+v, %v", m, err)
	}
	gens = put()
	if n := prune(); n != 0 {
		t.Fatalf("a second prune deleted %d snapshots, want 0", n)
	}
	if m, err := s.GetSweepMark(ctx, key(1)); err != nil || m.Generation != gens[1] {
		t.Errorf("a prune that removed nothing removed the mark of schema 1: %+v, %v", m, err)
	}
}

func testSweepInvalid(t *testing.T, s eventsource.SweepStore) {
	ctx := context.Background()
	typ := uniqueType("SweepInvalid")
	for _, opts := range []eventsource.ScanOptions{
		{SchemaVersion: 0, Examine: 1},
		{SchemaVersion: eventsource.MaxSchemaVersion + 1, Examine: 1},
		{SchemaVersion: 1, Examine: 0},
		{SchemaVersion: 1, Examine: eventsource.MaxScanExamine + 1},
		{SchemaVersion: 1, Examine: 1, MinBehind: -1},
		{SchemaVersion: 1, Examine: 1, After: eventsource.ChangePosition{Seq: -1}},
	} {
		if _, err := s.ScanAggregates(ctx, typ, opts); !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("ScanAggregates(%+v) = %v, want ErrInvalidArgument", opts, err)
		}
	}
	if _, err := s.ScanAggregates(ctx, "", eventsource.ScanOptions{SchemaVersion: 1, Examine: 1}); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("ScanAggregates of an empty type = %v, want ErrInvalidArgument", err)
	}
	good := eventsource.SweepMarkKey{Name: "n", AggregateType: typ, SchemaVersion: 1}
	for _, k := range []eventsource.SweepMarkKey{{AggregateType: typ, SchemaVersion: 1}, {Name: "n", SchemaVersion: 1}, {Name: "n", AggregateType: typ}} {
		if _, err := s.GetSweepMark(ctx, k); !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("GetSweepMark(%+v) = %v, want ErrInvalidArgument", k, err)
		}
		if _, err := s.PutSweepMark(ctx, k, eventsource.SweepMark{}); !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("PutSweepMark(%+v) = %v, want ErrInvalidArgument", k, err)
		}
	}
	for _, m := range []eventsource.SweepMark{{Generation: -1}, {Threshold: -1}, {Changes: true, FullAfter: uuid.New()}, {After: eventsource.ChangePosition{Seq: -1}}} {
		if _, err := s.PutSweepMark(ctx, good, m); !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("PutSweepMark(%+v) = %v, want ErrInvalidArgument", m, err)
		}
	}
}
