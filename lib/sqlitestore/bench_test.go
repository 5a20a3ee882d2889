package sqlitestore_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
)

// benchBackends are the configurations the benchmarks compare.
var benchBackends = []struct {
	name string
	path func(b *testing.B) string
	opts []sqlitestore.Option
}{
	{"file-full", func(b *testing.B) string { return tempDB(b) }, []sqlitestore.Option{sqlitestore.WithSynchronous(sqlitestore.SyncFull)}},
	{"file-normal", func(b *testing.B) string { return tempDB(b) }, []sqlitestore.Option{sqlitestore.WithSynchronous(sqlitestore.SyncNormal)}},
	{"memory", func(*testing.B) string { return sqlitestore.MemoryPath }, nil},
}

// benchPayload is about the size of the tutorial's events (~170 bytes).
func benchEvent(n int) eventsource.NewEvent {
	return eventsource.NewEvent{
		ID:   uuid.New(),
		Type: "MoneyDeposited",
		Payload: []byte(fmt.Sprintf(`{"account_id":"6f1c2e0a-4b7d-4e8a-9a51-0c3f1d2e4b5a","amount":%d.25,"currency":"EUR","note":"deposit number %d","balance_after":%d}`,
			n, n, n*10)),
		Metadata:   eventsource.Metadata{CorrelationID: "c0ffee00-0000-4000-8000-000000000001"},
		OccurredAt: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func benchEvents(from, n int) []eventsource.NewEvent {
	out := make([]eventsource.NewEvent, n)
	for i := range out {
		out[i] = benchEvent(from + i)
	}
	return out
}

// BenchmarkAppend measures one append (one transaction) of 1 or 10 events
// from one goroutine.
func BenchmarkAppend(b *testing.B) {
	for _, be := range benchBackends {
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/events=%d", be.name, n), func(b *testing.B) {
				s := openStore(b, be.path(b), be.opts...)
				ctx := context.Background()
				batches := make([][]eventsource.NewEvent, 256)
				id, v := uuid.New(), 0
				i := 0
				for b.Loop() {
					if i%len(batches) == 0 {
						b.StopTimer()
						for j := range batches {
							batches[j] = benchEvents(i+j*n, n)
						}
						b.StartTimer()
					}
					if v >= 1000 { // a fresh aggregate every 1000 events
						id, v = uuid.New(), 0
					}
					if _, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), batches[i%len(batches)]); err != nil {
						b.Fatal(err)
					}
					v += n
					i++
				}
				b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "appends/s")
				b.ReportMetric(float64(i*n)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkAppendParallel appends one event per transaction from
// GOMAXPROCS*4 goroutines on distinct aggregates: the store's single write
// connection ("split") against one shared pool of 8 connections on which
// writers contend through SQLite's busy handler ("pool", the New path with
// the recommended DSN).
func BenchmarkAppendParallel(b *testing.B) {
	for _, syncMode := range []sqlitestore.Synchronous{sqlitestore.SyncFull, sqlitestore.SyncNormal} {
		for _, mode := range []string{"split", "pool"} {
			b.Run(fmt.Sprintf("sync=%s/%s", strings.ToLower(string(syncMode)), mode), func(b *testing.B) {
				var s *sqlitestore.Store
				if mode == "split" {
					s = openStore(b, tempDB(b), sqlitestore.WithSynchronous(syncMode))
				} else {
					db, err := sql.Open(sqlitestore.DriverName, tempDB(b)+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous("+string(syncMode)+")&_txlock=immediate")
					if err != nil {
						b.Fatal(err)
					}
					db.SetMaxOpenConns(8)
					db.SetMaxIdleConns(8)
					b.Cleanup(func() { db.Close() })
					if s, err = sqlitestore.New(db, quiet); err != nil {
						b.Fatal(err)
					}
					if err := s.Migrate(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				var total, failures atomic.Int64
				var firstErr atomic.Value
				var mu sync.Mutex
				var lat []time.Duration
				b.SetParallelism(4)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					id, v := uuid.New(), 0
					var mine []time.Duration
					for pb.Next() {
						start := time.Now()
						_, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), benchEvents(v, 1))
						mine = append(mine, time.Since(start))
						if err != nil {
							failures.Add(1)
							firstErr.CompareAndSwap(nil, err)
							continue
						}
						v++
						total.Add(1)
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
				b.ReportMetric(float64(total.Load())/b.Elapsed().Seconds(), "appends/s")
				slices.Sort(lat)
				if len(lat) > 0 {
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
					b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
				}
				if n := failures.Load(); n > 0 {
					b.Fatalf("%d appends failed; first: %v", n, firstErr.Load())
				}
			})
		}
	}
}

// BenchmarkReadEvents reads a 1,000-event stream (events of other
// aggregates interleaved on disk) and reports the cost per event.
func BenchmarkReadEvents(b *testing.B) {
	for _, be := range benchBackends[1:] { // reads do not depend on synchronous
		b.Run(be.name, func(b *testing.B) {
			s := openStore(b, be.path(b), be.opts...)
			ctx := context.Background()
			const total = 1000
			id, other := uuid.New(), uuid.New()
			for v := 0; v < total; v += 100 {
				if _, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), benchEvents(v, 100)); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Append(ctx, "Account", other, eventsource.ExpectedVersion(v), benchEvents(v, 100)); err != nil {
					b.Fatal(err)
				}
			}
			var n int
			for b.Loop() {
				for _, err := range s.ReadEvents(ctx, "Account", id, 0) {
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
			}
			if n != b.N*total {
				b.Fatalf("read %d events in %d loops", n, b.N)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
}

// BenchmarkSnapshotUpsert upserts ~1 KB snapshots of 1,000 aggregates with
// rising versions (every write is stored).
func BenchmarkSnapshotUpsert(b *testing.B) {
	state := []byte(`{"owner":"` + strings.Repeat("x", 1000) + `","balance":12.5}`)
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			s := openStore(b, be.path(b), be.opts...)
			ctx := context.Background()
			ids := make([]uuid.UUID, 1000)
			for i := range ids {
				ids[i] = uuid.New()
			}
			i := 0
			for b.Loop() {
				sn := eventsource.Snapshot{
					AggregateID: ids[i%len(ids)], AggregateType: "Account", Version: int64(i/len(ids) + 1),
					SchemaVersion: 1, EventID: uuid.New(), State: state, CreatedAt: time.Now().UTC(),
				}
				stored, err := s.SaveSnapshot(ctx, sn)
				if err != nil || !stored {
					b.Fatalf("SaveSnapshot: %v, %v", stored, err)
				}
				i++
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "upserts/s")
		})
	}
}

// BenchmarkLoadShape is the store's share of a load at 100 ... 100,000
// events: a full read, and a snapshot lookup plus the events after it (at
// the head, and 50 behind), as two calls and as LoadSnapshotAndEvents. The
// snapshot loads must stay flat as the stream grows.
func BenchmarkLoadShape(b *testing.B) {
	s := openStore(b, tempDB(b), sqlitestore.WithSynchronous(sqlitestore.SyncNormal))
	ctx := context.Background()
	for _, size := range []int{100, 1000, 10000, 100000} {
		id := uuid.New()
		for v := 0; v < size; v += 100 {
			if _, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), benchEvents(v, 100)); err != nil {
				b.Fatal(err)
			}
		}
		read := func(after int64) int {
			n := 0
			for _, err := range s.ReadEvents(ctx, "Account", id, after) {
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			return n
		}
		b.Run(fmt.Sprintf("events=%d/full", size), func(b *testing.B) {
			for b.Loop() {
				if n := read(0); n != size {
					b.Fatalf("read %d", n)
				}
			}
		})
		for _, behind := range []int{50, 0} { // rising: a snapshot never moves back
			snapV := int64(size - behind)
			if _, err := s.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: "Account", Version: snapV,
				SchemaVersion: 1, EventID: uuid.New(), State: []byte(`{"balance":1}`), CreatedAt: time.Now()}); err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("events=%d/snapshot-%d-behind", size, behind), func(b *testing.B) {
				for b.Loop() {
					sn, err := s.GetSnapshot(ctx, "Account", id, 1)
					if err != nil || sn == nil {
						b.Fatal(err)
					}
					if n := read(sn.Version - 1); n != behind+1 {
						b.Fatalf("read %d after the snapshot", n)
					}
				}
			})
			// What a repository's load reads: the snapshot and the events
			// from its version, in one read transaction.
			b.Run(fmt.Sprintf("events=%d/snapshot-%d-behind/combined", size, behind), func(b *testing.B) {
				for b.Loop() {
					sn, evs, err := s.LoadSnapshotAndEvents(ctx, "Account", id, 1)
					if err != nil || sn == nil {
						b.Fatal(err)
					}
					n := 0
					for _, err := range evs {
						if err != nil {
							b.Fatal(err)
						}
						n++
					}
					if n != behind+1 {
						b.Fatalf("read %d from the snapshot", n)
					}
				}
			})
		}
	}
}
