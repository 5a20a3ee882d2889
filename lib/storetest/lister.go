package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

func listAll(t *testing.T, l eventsource.Store, typ string, opts eventsource.ListOptions) []eventsource.AggregateInfo {
	t.Helper()
	var out []eventsource.AggregateInfo
	for in, err := range l.ListAggregates(context.Background(), typ, opts) {
		if err != nil {
			t.Fatalf("ListAggregates(%s, %+v): %v", typ, opts, err)
		}
		out = append(out, in)
	}
	return out
}

func idsOf(infos []eventsource.AggregateInfo) []uuid.UUID {
	out := make([]uuid.UUID, len(infos))
	for i, in := range infos {
		out[i] = in.AggregateID
	}
	return out
}

// runLister checks [eventsource.Store.ListAggregates].
func runLister(t *testing.T, newBackend factory) {
	b := newBackend(t)
	typ, other := uniqueType("List"), uniqueType("ListOther")
	type agg struct {
		head, snap int64
		schema     int
	}
	plan := []agg{{10, 10, 1}, {20, 5, 1}, {5, 0, 0}, {1, 0, 0}, {30, 25, 2}}
	ids := make([]uuid.UUID, len(plan))
	want := map[uuid.UUID]eventsource.AggregateInfo{}
	for i, p := range plan {
		id := uuid.New()
		ids[i] = id
		mustAppend(t, b, typ, id, eventsource.NoStream, testEvents("Thing", 1, int(p.head)))
		if p.snap > 0 {
			mustSave(t, b, snap(typ, id, p.snap, p.schema), true)
		}
		want[id] = eventsource.AggregateInfo{AggregateID: id, HeadVersion: p.head, SnapshotVersion: p.snap, SnapshotSchemaVersion: p.schema}
	}
	mustAppend(t, b, other, uuid.New(), eventsource.NoStream, testEvents("Thing", 1, 50))
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })

	t.Run("ByID", func(t *testing.T) {
		got := listAll(t, b, typ, eventsource.ListOptions{})
		if !slices.Equal(idsOf(got), sorted) {
			t.Fatalf("ids = %v, want %v", idsOf(got), sorted)
		}
		for _, in := range got {
			if in != want[in.AggregateID] {
				t.Errorf("info = %+v, want %+v", in, want[in.AggregateID])
			}
		}
	})
	t.Run("MinBehind", func(t *testing.T) {
		got := listAll(t, b, typ, eventsource.ListOptions{MinBehind: 5})
		wantIDs := []uuid.UUID{ids[1], ids[2], ids[4]}
		slices.SortFunc(wantIDs, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
		if !slices.Equal(idsOf(got), wantIDs) {
			t.Fatalf("ids = %v, want %v", idsOf(got), wantIDs)
		}
	})
	t.Run("MostBehind", func(t *testing.T) {
		got := listAll(t, b, typ, eventsource.ListOptions{MostBehindFirst: true})
		tie := []uuid.UUID{ids[2], ids[4]}
		slices.SortFunc(tie, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
		wantIDs := []uuid.UUID{ids[1], tie[0], tie[1], ids[3], ids[0]}
		if !slices.Equal(idsOf(got), wantIDs) {
			t.Fatalf("ids = %v, want %v (behind: 15, 5, 5, 1, 0)", idsOf(got), wantIDs)
		}
		top := listAll(t, b, typ, eventsource.ListOptions{MostBehindFirst: true, Limit: 1, MinBehind: 2})
		if len(top) != 1 || top[0].AggregateID != ids[1] {
			t.Fatalf("most behind with limit 1 = %v", idsOf(top))
		}
	})
	t.Run("Paging", func(t *testing.T) {
		var got []uuid.UUID
		after := uuid.Nil
		for page := 0; page < 10; page++ {
			part := listAll(t, b, typ, eventsource.ListOptions{AfterID: after, Limit: 2})
			if len(part) == 0 {
				break
			}
			got = append(got, idsOf(part)...)
			after = part[len(part)-1].AggregateID
		}
		if !slices.Equal(got, sorted) {
			t.Fatalf("paged ids = %v, want %v", got, sorted)
		}
	})
	t.Run("NegativeOptionsMeanNone", func(t *testing.T) {
		got := listAll(t, b, typ, eventsource.ListOptions{MinBehind: -5, Limit: -1})
		if !slices.Equal(idsOf(got), sorted) {
			t.Fatalf("ids = %v, want all %v", idsOf(got), sorted)
		}
	})
	t.Run("SchemaVersion", func(t *testing.T) { testListSchemaVersion(t, b) })
	t.Run("EmptyType", func(t *testing.T) {
		for _, err := range b.ListAggregates(context.Background(), "", eventsource.ListOptions{}) {
			if !errors.Is(err, eventsource.ErrInvalidArgument) {
				t.Fatalf("error = %v, want ErrInvalidArgument", err)
			}
		}
		if got := listAll(t, b, uniqueType("Nothing"), eventsource.ListOptions{}); len(got) != 0 {
			t.Fatalf("unknown type listed %d aggregates", len(got))
		}
	})
}

// testListSchemaVersion: ListOptions.SchemaVersion picks the row each
// aggregate is listed with (and measured by: MinBehind, MostBehindFirst);
// 0 picks each aggregate's newest; one out of range is refused.
func testListSchemaVersion(t *testing.T, b eventsource.Store) {
	typ := uniqueType("ListSchema")
	type row struct {
		version int64
		schema  int
	}
	plan := []struct {
		head int64
		rows []row
	}{
		{20, []row{{15, 1}, {5, 2}}}, // a: both schema versions
		{10, []row{{10, 1}}},         // b: schema 1 only
		{8, []row{{8, 2}}},           // c: schema 2 only
		{3, nil},                     // d: none
	}
	ids := make([]uuid.UUID, len(plan))
	for i, p := range plan {
		ids[i] = uuid.New()
		mustAppend(t, b, typ, ids[i], eventsource.NoStream, testEvents("Thing", 1, int(p.head)))
		for _, r := range p.rows {
			mustSave(t, b, snap(typ, ids[i], r.version, r.schema), true)
		}
	}
	info := func(i int, r row) eventsource.AggregateInfo {
		return eventsource.AggregateInfo{AggregateID: ids[i], HeadVersion: plan[i].head, SnapshotVersion: r.version, SnapshotSchemaVersion: r.schema}
	}
	for _, c := range []struct {
		schema int
		want   []eventsource.AggregateInfo
	}{
		{0, []eventsource.AggregateInfo{info(0, row{5, 2}), info(1, row{10, 1}), info(2, row{8, 2}), info(3, row{})}},
		{1, []eventsource.AggregateInfo{info(0, row{15, 1}), info(1, row{10, 1}), info(2, row{}), info(3, row{})}},
		{2, []eventsource.AggregateInfo{info(0, row{5, 2}), info(1, row{}), info(2, row{8, 2}), info(3, row{})}},
		{3, []eventsource.AggregateInfo{info(0, row{}), info(1, row{}), info(2, row{}), info(3, row{})}},
	} {
		got := listAll(t, b, typ, eventsource.ListOptions{SchemaVersion: c.schema})
		want := slices.Clone(c.want)
		slices.SortFunc(want, func(x, y eventsource.AggregateInfo) int { return bytes.Compare(x.AggregateID[:], y.AggregateID[:]) })
		if !slices.Equal(got, want) {
			t.Errorf("ListAggregates(SchemaVersion %d) =\n%+v\nwant\n%+v", c.schema, got, want)
		}
	}
	// Behind measures the row of the schema version asked for: at schema
	// 1, a is 5 behind, b 0, c 8 (none), d 3; at schema 2, a 15, b 10, c
	// 0, d 3.
	for _, c := range []struct {
		schema    int
		want      []uuid.UUID
		minBehind int64
		atLeast   uuid.UUID // the one aggregate at least minBehind behind
	}{
		{1, []uuid.UUID{ids[2], ids[0], ids[3]}, 6, ids[2]},
		{2, []uuid.UUID{ids[0], ids[1], ids[3]}, 11, ids[0]},
	} {
		got := listAll(t, b, typ, eventsource.ListOptions{SchemaVersion: c.schema, MostBehindFirst: true, MinBehind: 1})
		if !slices.Equal(idsOf(got), c.want) {
			t.Errorf("ListAggregates(SchemaVersion %d, most behind first, at least 1 behind) = %v, want %v", c.schema, idsOf(got), c.want)
		}
		got = listAll(t, b, typ, eventsource.ListOptions{SchemaVersion: c.schema, MinBehind: c.minBehind})
		if !slices.Equal(idsOf(got), []uuid.UUID{c.atLeast}) {
			t.Errorf("ListAggregates(SchemaVersion %d, at least %d behind) = %v, want %v", c.schema, c.minBehind, idsOf(got), c.atLeast)
		}
	}
	for _, v := range append([]int{-1}, outOfRangeSchemas()...) {
		n := 0
		for _, err := range b.ListAggregates(context.Background(), typ, eventsource.ListOptions{SchemaVersion: v}) {
			n++
			checkInvalid(t, fmt.Sprintf("ListAggregates with SchemaVersion %d", v), err, strconv.Itoa(v))
		}
		if n != 1 {
			t.Errorf("ListAggregates with SchemaVersion %d yielded %d times, want one error", v, n)
		}
	}
}
