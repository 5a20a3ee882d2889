package pgstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// BenchmarkRepositoryLoad measures Repository.Load of an Account on
// PostgreSQL, decoding included: with a snapshot at the head, with one 100
// events behind, and without one. It reports the median and p99 in µs.
//
//	EVSNAP_TEST_POSTGRES_URL=... go test -run '^$' -bench RepositoryLoad ./lib/pgstore/
func BenchmarkRepositoryLoad(b *testing.B) {
	st := newStore(b)
	ctx := context.Background()
	reg := exampledomain.NewRegistry()
	repo, err := eventsource.NewRepository[exampledomain.Account](st, reg, eventsource.WithSnapshotMode(eventsource.ModeManual))
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close(ctx)
	plain, _ := eventsource.NewRepository[exampledomain.Account](st, reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	defer plain.Close(ctx)
	for _, n := range []int{100, 1000, 10000} {
		for _, c := range []struct {
			name   string
			behind int
		}{{"head", 0}, {"behind100", 100}, {"none", -1}} {
			if c.behind >= n {
				continue
			}
			b.Run(fmt.Sprintf("events=%d/snapshot=%s", n, c.name), func(b *testing.B) {
				a := repo.New(uuid.New())
				_ = a.Open("bench", 0)
				for v := 2; v <= n; v++ {
					_ = a.Deposit(1)
					if v%100 == 0 || v == n || v == n-c.behind {
						if err := repo.Save(ctx, a); err != nil {
							b.Fatal(err)
						}
						if c.behind >= 0 && v == n-c.behind {
							if _, err := repo.CreateSnapshot(ctx, a); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
				r := repo
				if c.behind < 0 {
					r = plain
				}
				var times []time.Duration
				b.ResetTimer()
				for b.Loop() {
					start := time.Now()
					if _, err := r.Load(ctx, a.ID()); err != nil {
						b.Fatal(err)
					}
					times = append(times, time.Since(start))
				}
				slices.Sort(times)
				b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50_µs")
				b.ReportMetric(float64(times[len(times)*99/100].Microseconds()), "p99_µs")
			})
		}
	}
}
