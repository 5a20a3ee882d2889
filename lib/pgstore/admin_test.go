package pgstore_test

import (
	"context"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
)

// Beyond CountExactUpTo aggregates, CountAggregates answers with the
// planner's estimate, marked as one, and counts only when asked to; the
// estimate follows the table's statistics, so it is the type's share of
// the rows, not of another type's.
func TestCountAggregatesEstimatesLargeTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStore(t)
	pool := testPool(t)
	streams := qualified(st, "streams")
	const large, small = eventsource.CountExactUpTo + 2000, 50
	for _, c := range []struct {
		typ string
		n   int
	}{{"Large", large}, {"Small", small}} {
		if _, err := pool.Exec(ctx, `INSERT INTO `+streams+` (aggregate_type, aggregate_id, version)
			SELECT $1, gen_random_uuid(), 1 FROM generate_series(1, $2)`, c.typ, c.n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+streams); err != nil {
		t.Fatal(err)
	}
	got, err := st.CountAggregates(ctx, "Large", false)
	if err != nil {
		t.Fatal(err)
	}
	// ANALYZE samples 30,000 rows: every row of this table.
	if !got.Estimated || got.N < large*9/10 || got.N > large*11/10 {
		t.Errorf("CountAggregates(Large) = %+v, want an estimate near %d", got, large)
	}
	if got, err := st.CountAggregates(ctx, "Large", true); err != nil || got != (eventsource.AggregateCount{N: large}) {
		t.Errorf("CountAggregates(Large, exact) = %+v, %v; want %d counted", got, err, large)
	}
	if got, err := st.CountAggregates(ctx, "Small", false); err != nil || got != (eventsource.AggregateCount{N: small}) {
		t.Errorf("CountAggregates(Small) = %+v, %v; want %d counted", got, err, small)
	}
}
