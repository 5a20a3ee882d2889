package pgstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The benchmarks run against EVSNAP_TEST_POSTGRES_URL like the tests, each
// in a fresh schema. Run them with, for example:
//
//	EVSNAP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench . -benchtime 2s ./lib/pgstore/
//
// BenchmarkSnapshotChurn wants a fixed amount of work: -benchtime 200000x.

func BenchmarkAppend(b *testing.B) {
	st := newStore(b)
	ctx := context.Background()
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			// Saves rotate over 256 aggregates, each at its known version.
			ids := make([]uuid.UUID, 256)
			versions := make([]int64, len(ids))
			for i := range ids {
				ids[i] = uuid.New()
			}
			i := 0
			for b.Loop() {
				k := i % len(ids)
				i++
				ev := newEvents(n, 0)
				res, err := st.Append(ctx, "Bench", ids[k], eventsource.ExpectedVersion(versions[k]), ev)
				if err != nil {
					b.Fatal(err)
				}
				versions[k] = res.LastVersion
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// widePool is a pool with enough connections for the parallel benchmarks
// (pgxpool's default is max(4, CPUs)).
func widePool(b *testing.B) *pgxpool.Pool {
	return testPoolConfig(b, func(c *pgxpool.Config) { c.MaxConns = 16 })
}

// BenchmarkAppendParallel measures the whole box: 8 goroutines per CPU on
// 16 connections, each saving to its own aggregate.
func BenchmarkAppendParallel(b *testing.B) {
	st := newStoreOn(b, widePool(b))
	ctx := context.Background()
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				id, v := uuid.New(), int64(0)
				for pb.Next() {
					res, err := st.Append(ctx, "Bench", id, eventsource.ExpectedVersion(v), newEvents(n, 0))
					if err != nil {
						b.Error(err)
						return
					}
					v = res.LastVersion
				}
			})
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func BenchmarkReadEvents(b *testing.B) {
	st := newStore(b)
	ctx := context.Background()
	for _, size := range []int{100, 1000, 10_000, 100_000} {
		id := uuid.New()
		for v := 0; v < size; v += 1000 {
			if _, err := st.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), newEvents(min(1000, size-v), v)); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			for b.Loop() {
				n := 0
				for _, err := range st.ReadEvents(ctx, "Account", id, 0) {
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != size {
					b.Fatalf("read %d events, want %d", n, size)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/event")
		})
	}
}

func BenchmarkSnapshotUpsert(b *testing.B) {
	st := newStoreOn(b, widePool(b))
	ctx := context.Background()
	ids := make([]uuid.UUID, 1000)
	for i := range ids {
		ids[i] = uuid.New()
	}
	state := snapshotState(1) // about 1 KB
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			v := int64(i/len(ids)) + 1
			if _, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: ids[i%len(ids)], AggregateType: "Bench",
				Version: v, SchemaVersion: 1, EventID: uuid.New(), State: state, CreatedAt: time.Now().UTC()}); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "upserts/s")
	})
	b.Run("parallel", func(b *testing.B) {
		var next atomic.Int64
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := next.Add(1)
				// Each goroutine's rows differ from the serial run's, and
				// versions only rise.
				_, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: uuid.New(), AggregateType: "BenchP",
					Version: i, SchemaVersion: 1, EventID: uuid.New(), State: state, CreatedAt: time.Now().UTC()})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "upserts/s")
	})
}

func BenchmarkGetSnapshot(b *testing.B) {
	st := newStore(b)
	ctx := context.Background()
	id := uuid.New()
	if _, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: "Bench",
		Version: 100, SchemaVersion: 1, EventID: uuid.New(), State: snapshotState(100), CreatedAt: time.Now().UTC()}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if s, err := st.GetSnapshot(ctx, "Bench", id, 1); err != nil || s == nil {
			b.Fatal(s, err)
		}
	}
}

// BenchmarkSnapshotChurn rewrites 2,000 snapshots of about 1 KB b.N times
// in all (run it with -benchtime 200000x) and reports the table's size and
// HOT update ratio, for the store's snapshots table and for one with
// PostgreSQL's default storage settings.
func BenchmarkSnapshotChurn(b *testing.B) {
	for _, table := range []string{"tuned", "default"} {
		b.Run("table="+table, func(b *testing.B) {
			st := newStoreOn(b, churnPool(b))
			name := "snapshots"
			if table == "default" {
				st, name = defaultTablesStore(b, st), "ctl_snapshots"
			}
			b.ResetTimer()
			r := churn(b, st, name, 2000, b.N)
			b.StopTimer()
			b.ReportMetric(mb(r.bytesBefore), "MB-before")
			b.ReportMetric(mb(r.after), "MB-after")
			b.ReportMetric(100*r.hotRatio(), "%HOT")
			b.Logf("%s: %v", table, r)
		})
	}
}

// BenchmarkAppendStrategies compares, for saves of 10 events, the store's
// Append (stream row and events in one statement: one round trip, implicit
// transaction) with the two other ways to write a save in one transaction:
// a pgx.Batch (BEGIN; UPDATE the stream row; INSERT the events; COMMIT,
// pipelined in one round trip but four statements) and COPY (BEGIN and the
// UPDATE, then CopyFrom, then COMMIT: four round trips). Each iteration
// runs all three, one after the other, so a change in the machine's load
// hits them alike; each reports its mean as µs/<name>. There is no
// contention, so the alternatives skip the conflict handling the store
// needs: they are measured at their cheapest.
func BenchmarkAppendStrategies(b *testing.B) {
	st := newStore(b)
	ctx := context.Background()
	const n = 10
	events, streams := qualified(st, "events"), qualified(st, "streams")
	cols := []string{"event_id", "aggregate_type", "aggregate_id", "version", "event_type", "payload", "metadata", "occurred_at"}
	insertSQL := "INSERT INTO " + events + " (" + strings.Join(cols, ", ") + ") VALUES "
	for i := range n {
		if i > 0 {
			insertSQL += ", "
		}
		p := i * 8
		insertSQL += fmt.Sprintf("($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", p+1, p+2, p+3, p+4, p+5, p+6, p+7, p+8)
	}
	updateSQL := "UPDATE " + streams + " SET version = version + $3 WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $4"
	// row returns the column values of event i of a save after version v.
	row := func(id uuid.UUID, v int64, i int, e eventsource.NewEvent) []any {
		return []any{e.ID, "Bench", id, v + int64(i) + 1, e.Type, e.Payload, []byte("{}"), e.OccurredAt}
	}
	type strategy struct {
		name   string
		append func(id uuid.UUID, v int64) error
		id     uuid.UUID
		v      int64
		spent  time.Duration
	}
	strategies := []*strategy{
		{name: "append-cte", append: func(id uuid.UUID, v int64) error {
			_, err := st.Append(ctx, "Bench", id, eventsource.ExpectedVersion(v), newEvents(n, 0))
			return err
		}},
		{name: "batch", append: func(id uuid.UUID, v int64) error {
			var batch pgx.Batch
			batch.Queue("BEGIN")
			batch.Queue(updateSQL, "Bench", id, int64(n), v)
			args := make([]any, 0, n*8)
			for i, e := range newEvents(n, 0) {
				args = append(args, row(id, v, i, e)...)
			}
			batch.Queue(insertSQL, args...)
			batch.Queue("COMMIT")
			return st.Pool().SendBatch(ctx, &batch).Close()
		}},
		{name: "copy", append: func(id uuid.UUID, v int64) error {
			return pgx.BeginFunc(ctx, st.Pool(), func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, updateSQL, "Bench", id, int64(n), v); err != nil {
					return err
				}
				rows := make([][]any, 0, n)
				for i, e := range newEvents(n, 0) {
					rows = append(rows, row(id, v, i, e))
				}
				_, err := tx.CopyFrom(ctx, pgx.Identifier{st.Schema(), "events"}, cols, pgx.CopyFromRows(rows))
				return err
			})
		}},
	}
	for _, s := range strategies {
		s.id, s.v = uuid.New(), 1
		if _, err := st.Append(ctx, "Bench", s.id, eventsource.NoStream, newEvents(1, 0)); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		for _, s := range strategies {
			start := time.Now()
			if err := s.append(s.id, s.v); err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			s.spent += time.Since(start)
			s.v += n
		}
	}
	for _, s := range strategies {
		b.ReportMetric(float64(s.spent.Microseconds())/float64(b.N), "µs/"+s.name)
	}
}

// BenchmarkSnapshotBatchUpsert writes batches of 64 snapshots of about
// 1 KB with SaveSnapshots, as the worker's group commit does, over 1,000
// aggregates whose versions rise, and reports snapshots/s.
func BenchmarkSnapshotBatchUpsert(b *testing.B) {
	st := newStoreOn(b, widePool(b))
	ctx := context.Background()
	ids := make([]uuid.UUID, 1000)
	for i := range ids {
		ids[i] = uuid.New()
	}
	state := snapshotState(1)
	const batch = 64
	snaps := make([]eventsource.Snapshot, batch)
	i := 0
	for b.Loop() {
		for j := range snaps {
			snaps[j] = eventsource.Snapshot{AggregateID: ids[i%len(ids)], AggregateType: "Bench", Version: int64(i/len(ids)) + 1,
				SchemaVersion: 1, EventID: uuid.New(), State: state, CreatedAt: time.Now().UTC()}
			i++
		}
		if _, err := st.SaveSnapshots(ctx, snaps); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "snapshots/s")
}
