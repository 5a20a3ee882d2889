package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// TestStatementsRunAsDocumented runs the exported SQL through the pool
// with the arguments its documentation gives, and checks the store sees
// the result: what a pgbench script or an EXPLAIN built from Statements
// relies on.
func TestStatementsRunAsDocumented(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	sql, pool := st.Statements(), st.Pool()
	a, b := uuid.New(), uuid.New()
	if _, err := st.Append(ctx, "Account", a, eventsource.NoStream, []eventsource.NewEvent{
		{ID: uuid.New(), Type: "Opened", Payload: []byte(`{"n":1}`), OccurredAt: time.Now()},
		{ID: uuid.New(), Type: "Deposited", Payload: []byte(`{"n":2}`), OccurredAt: time.Now()},
	}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := pool.Exec(ctx, sql.SaveSnapshot, a, "Account", int64(1), int32(1), []byte(`{"v":1}`), now, uuid.New()); err != nil {
		t.Fatalf("SaveSnapshot: %v", err)
	}
	if _, err := pool.Exec(ctx, sql.SaveSnapshots, []uuid.UUID{a, b}, []string{"Account", "Account"}, []int64{2, 5},
		[]int32{1, 1}, [][]byte{[]byte(`{"v":2}`), []byte(`{"v":5}`)}, []time.Time{now, now}, []uuid.UUID{uuid.New(), uuid.New()}); err != nil {
		t.Fatalf("SaveSnapshots: %v", err)
	}
	var version int64
	if err := pool.QueryRow(ctx, sql.GetSnapshot, a, "Account", int32(1)).Scan(&version, new(int32), new([]byte), new(time.Time), new(uuid.UUID)); err != nil || version != 2 {
		t.Fatalf("GetSnapshot: v%d, %v; want v2", version, err)
	}
	rows, err := pool.Query(ctx, sql.GetSnapshots, "Account", []uuid.UUID{a, b, uuid.New()}, int32(1))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if rows.Close(); rows.Err() != nil || n != 2 {
		t.Fatalf("GetSnapshots: %d rows, %v; want 2", n, rows.Err())
	}
	var events int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM ("+sql.ReadEvents+") x", "Account", a, int64(0)).Scan(&events); err != nil || events != 2 {
		t.Fatalf("ReadEvents: %d events, %v; want 2", events, err)
	}
	if got, err := st.GetSnapshot(ctx, "Account", b, 1); err != nil || got == nil || got.Version != 5 {
		t.Fatalf("the store reads what SaveSnapshots wrote: %+v, %v", got, err)
	}
}
