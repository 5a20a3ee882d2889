package scaleharness

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

func TestGrowth(t *testing.T) {
	r := &Report{Sizes: []int64{1000, 10000, 100000}, Results: []Result{
		{Op: "sweep", Size: 1000, WallMS: 1}, {Op: "sweep", Size: 10000, WallMS: 10}, {Op: "sweep", Size: 100000, WallMS: 100},
		{Op: "load", Size: 1000, WallMS: 0.2, Reads: &Reads{CachedHit: 7, ColdRead: 0.5}}, {Op: "load", Size: 100000, WallMS: 0.2, Reads: &Reads{CachedHit: 8, ColdRead: 6.5}},
		{Op: "load-cached", Size: 1000, WallMS: 0.1}, {Op: "load-cached", Size: 100000, WallMS: 0.12},
		{Op: "stats", Size: 1000, WallMS: 5}, {Op: "stats", Size: 10000, WallMS: 500}, {Op: "stats", Size: 100000, WallMS: 5000, Skipped: true},
	}, IndexLevels: map[int64]map[string]int{100000: {"events_stream_version_key": 3}}}
	for op, want := range map[string]float64{"sweep": 1, "load": 0, "stats": 2} {
		if got := r.Growth(op); math.Abs(got-want) > 1e-9 {
			t.Errorf("Growth(%s) = %v, want %v", op, got, want)
		}
	}
	if g := r.Growth("prune"); !math.IsNaN(g) {
		t.Errorf("Growth of an unmeasured op = %v, want NaN", g)
	}
	md := r.Markdown("c.svg")
	for _, want := range []string{"| sweep ", "1.00", "> 5000 (projected; not run)", "![Wall time", "| 100k ", "| 3 / ? / ? ", "| 1.20× ", "| 0.0 / 6.5 "} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if _, err := r.ChartSVG(); err != nil {
		t.Fatal(err)
	}
}

// TestScaleIDMatchesTheSQL: the ids the harness loads by are the ones its
// SQL derives.
func TestScaleIDMatchesTheSQL(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	for _, i := range []int64{0, 7, 123456789} {
		var got uuid.UUID
		if err := conn.QueryRow(ctx, "SELECT md5('evsnap-scale-' || $1::bigint)::uuid", i).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := scaleID(i); got != want {
			t.Errorf("aggregate %d: SQL id %s, Go id %s", i, got, want)
		}
	}
}

// The load's arguments get the new aggregate's id; arguments without the
// old id are refused, not explained as they are.
func TestWithID(t *testing.T) {
	from, to := uuid.New(), uuid.New()
	got, err := withID([]any{"Account", [16]byte(from), int32(1)}, from, to)
	if err != nil || got[1] != [16]byte(to) || got[0] != "Account" || got[2] != int32(1) {
		t.Fatalf("withID = %v, %v; want the id replaced and the rest kept", got, err)
	}
	if _, err := withID([]any{"Account", from.String(), int32(1)}, from, to); err == nil {
		t.Fatal("withID accepted arguments without the id as [16]byte")
	}
}
