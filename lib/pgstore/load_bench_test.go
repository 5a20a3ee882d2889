package pgstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/cputime"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// manualAccounts returns the example domain's registry and an Account
// repository on st that snapshots only when asked, closed when b ends.
func manualAccounts(b *testing.B, st *pgstore.Store) (*eventsource.Registry, *eventsource.Repository[exampledomain.Account, *exampledomain.Account]) {
	b.Helper()
	reg := exampledomain.NewRegistry()
	repo, err := eventsource.NewRepository[exampledomain.Account](st, reg, eventsource.WithSnapshotMode(eventsource.ModeManual))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = repo.Close(context.Background()) })
	return reg, repo
}

// BenchmarkRepositoryLoad measures Repository.Load of an Account on
// PostgreSQL, decoding included: with a snapshot at the head, with one 100
// events behind, and without one. It reports the median and p99 in µs.
//
//	EVSNAP_TEST_POSTGRES_URL=... go test -run '^$' -bench RepositoryLoad ./lib/pgstore/
func BenchmarkRepositoryLoad(b *testing.B) {
	st := newStore(b)
	ctx := context.Background()
	reg, repo := manualAccounts(b, st)
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

// BenchmarkLoadCPU measures the client's CPU per load of a 1,000-event
// Account from a snapshot at its head (process CPU time from getrusage,
// over every load of the run: the PostgreSQL server is another process),
// next to the floor of the same load: the snapshot query and the events
// query in one pgx.Batch through the raw pool, decoded with the registry's
// codec straight into the domain's types. It reports cpu-µs/load and the
// p50 wall time.
//
//	EVSNAP_TEST_POSTGRES_URL=... go test -run '^$' -bench LoadCPU -count 6 ./lib/pgstore/
func BenchmarkLoadCPU(b *testing.B) {
	st := newStore(b, pgstore.WithLogger(slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	reg, repo := manualAccounts(b, st)
	const n = 1000
	a := repo.New(uuid.New())
	_ = a.Open("bench", 0)
	for v := 2; v <= n; v++ {
		_ = a.Deposit(1)
		if v%100 == 0 {
			if err := repo.Save(ctx, a); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := repo.CreateSnapshot(ctx, a); err != nil {
		b.Fatal(err)
	}
	sql, codec := st.Statements(), reg.Codec()
	floor := func() error {
		batch := &pgx.Batch{}
		batch.Queue(sql.GetSnapshot, a.ID(), exampledomain.AccountType, int32(exampledomain.AccountSchemaVersion))
		batch.Queue(sql.ReadEvents, exampledomain.AccountType, a.ID(), int64(n-1))
		br := st.Pool().SendBatch(ctx, batch)
		defer br.Close()
		var (
			state exampledomain.AccountState
			v     int64
			sv    int32
			raw   []byte
			at    time.Time
			eid   [16]byte
		)
		if err := br.QueryRow().Scan(&v, &sv, &raw, &at, &eid); err != nil {
			return err
		}
		if err := codec.Unmarshal(raw, &state); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var (
			typ           string
			payload, meta []byte
		)
		for rows.Next() {
			if err := rows.Scan(&eid, &v, &typ, &payload, &meta, &at); err != nil {
				return err
			}
			if v > n { // events after the head: none here
				return fmt.Errorf("event v%d after the snapshot at v%d", v, n)
			}
		}
		return rows.Err()
	}
	for _, c := range []struct {
		name string
		load func() error
	}{
		{"repository", func() error {
			got, err := repo.Load(ctx, a.ID())
			if err == nil {
				if from, _ := got.LoadedFromSnapshot(); !from || got.Version() != n {
					err = fmt.Errorf("loaded v%d, from a snapshot: %v", got.Version(), from)
				}
			}
			return err
		}},
		{"floor-batch", floor},
	} {
		b.Run(c.name, func(b *testing.B) {
			var times []time.Duration
			cpu := cputime.Process()
			for b.Loop() {
				start := time.Now()
				if err := c.load(); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
			}
			b.ReportMetric(float64((cputime.Process()-cpu).Microseconds())/float64(b.N), "cpu-µs/load")
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Nanoseconds())/1e3, "p50-µs")
		})
	}
}
