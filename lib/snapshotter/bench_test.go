package snapshotter_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/cputime"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// benchEnv picks the real servers when EVSNAP_TEST_POSTGRES_URL and
// EVSNAP_TEST_NATS_URL are set, else an embedded nats-server and memstore.
func benchEnv(b *testing.B) (*env, string) {
	if os.Getenv(pgtest.EnvURL) != "" && os.Getenv("EVSNAP_TEST_NATS_URL") != "" {
		return newEnv(b, natstest.ExternalURL(b), pgtest.Store(b), true), "postgres+nats"
	}
	return newEnv(b, natstest.RunServer(b).ClientURL(), memstore.New(), false), "memstore+embedded-nats"
}

// saveAccounts saves n new Accounts of events events each, one save each,
// and returns their ids.
func saveAccounts(b *testing.B, repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account], n, events int) []uuid.UUID {
	b.Helper()
	ids := make([]uuid.UUID, n)
	for j := range ids {
		a := repo.New(uuid.New())
		_ = a.Open("bench", 0)
		for v := 2; v <= events; v++ {
			_ = a.Deposit(1)
		}
		if err := repo.Save(context.Background(), a); err != nil {
			b.Fatal(err)
		}
		ids[j] = a.ID()
	}
	return ids
}

// BenchmarkWorkerBacklog measures how fast 1 and 2 workers drain a backlog:
// 500 accounts with 100 events each, announced by 10 notices of 10 events
// per account (5,000 notices), threshold 100, so every account needs one
// snapshot. It reports notices/s, snapshots/s and the process's CPU time
// per notice (worker, store and embedded server together; on a shared
// machine it moves far less with other load than notices/s does).
//
//	EVSNAP_TEST_POSTGRES_URL=... EVSNAP_TEST_NATS_URL=... go test -run '^$' -bench WorkerBacklog -benchtime 1x ./lib/snapshotter/
func BenchmarkWorkerBacklog(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			e, kind := benchEnv(b)
			b.Logf("backend: %s", kind)
			const accounts, perAccount, perNotice = 500, 100, 10
			ctx := context.Background()
			manual, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
			if err != nil {
				b.Fatal(err)
			}
			defer manual.Close(ctx)
			var totalNotices, totalSnaps int
			var elapsed, cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ids := saveAccounts(b, manual, accounts, perAccount)
				for _, id := range ids {
					for first := int64(1); first <= perAccount; first += perNotice {
						types := []string{exampledomain.TypeMoneyDeposited}
						if first == 1 {
							types = []string{exampledomain.TypeAccountOpened, exampledomain.TypeMoneyDeposited}
						}
						if err := e.pub.Notify(ctx, eventsource.Appended{AggregateType: exampledomain.AccountType, AggregateID: id,
							FirstVersion: first, LastVersion: first + perNotice - 1, EventTypes: types, CommittedAt: time.Now()}); err != nil {
							b.Fatal(err)
						}
					}
				}
				if err := e.pub.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				before := e.store.writes.Load()
				start, cpu0 := time.Now(), cputime.Process()
				b.StartTimer()
				var stops []func()
				for range workers {
					stops = append(stops, e.start(e.worker(100, func(c *snapshotter.Config) { c.Concurrency = 8 })))
				}
				for !e.consumerIdle("snapshotter")() {
					time.Sleep(5 * time.Millisecond)
				}
				b.StopTimer()
				elapsed, cpu = elapsed+time.Since(start), cpu+cputime.Process()-cpu0
				for _, stop := range stops {
					stop()
				}
				totalNotices += accounts * perAccount / perNotice
				totalSnaps += int(e.store.writes.Load() - before)
			}
			b.ReportMetric(float64(totalNotices)/elapsed.Seconds(), "notices/s")
			b.ReportMetric(float64(totalSnaps)/elapsed.Seconds(), "snapshots/s")
			b.ReportMetric(cpu.Seconds()*1e6/float64(totalNotices), "cpu-µs/notice")
		})
	}
}

// BenchmarkWorkerNotDue measures the common case in production: notices
// whose aggregates are not due. 2,000 accounts of 105 events with a
// snapshot at their head, one notice each announcing 101 to 105 and on,
// threshold 100: due if the aggregate had no snapshot, so every notice
// costs the worker a decision read of the snapshot and an ack, and
// nothing else (notices of aggregates below the threshold cost no read).
// It compares reading each
// snapshot on its own (read-batch=1) with batched decision reads
// (read-batch=64, the default), and reports notices/s and CPU time per
// notice (as BenchmarkWorkerBacklog).
//
//	EVSNAP_TEST_POSTGRES_URL=... EVSNAP_TEST_NATS_URL=... go test -run '^$' -bench WorkerNotDue -benchtime 3x ./lib/snapshotter/
func BenchmarkWorkerNotDue(b *testing.B) {
	for _, readBatch := range []int{1, 64} {
		b.Run(fmt.Sprintf("read-batch=%d", readBatch), func(b *testing.B) {
			e, kind := benchEnv(b)
			b.Logf("backend: %s", kind)
			const accounts, events = 2000, 105
			ctx := context.Background()
			manual, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
			if err != nil {
				b.Fatal(err)
			}
			defer manual.Close(ctx)
			ids := saveAccounts(b, manual, accounts, events)
			e.store.writes.Store(0) // the repository's own snapshots, at the head
			var total int
			var elapsed, cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for _, id := range ids {
					// A fresh last version per round, so the stream's
					// duplicate window does not drop the notice.
					if err := e.pub.Notify(ctx, eventsource.Appended{AggregateType: exampledomain.AccountType, AggregateID: id,
						FirstVersion: 101, LastVersion: int64(events + i), EventTypes: []string{exampledomain.TypeMoneyDeposited}, CommittedAt: time.Now()}); err != nil {
						b.Fatal(err)
					}
				}
				if err := e.pub.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				start, cpu0 := time.Now(), cputime.Process()
				b.StartTimer()
				stop := e.start(e.worker(100, func(c *snapshotter.Config) { c.ReadBatch = readBatch }))
				for !e.consumerIdle("snapshotter")() {
					time.Sleep(2 * time.Millisecond)
				}
				b.StopTimer()
				elapsed, cpu = elapsed+time.Since(start), cpu+cputime.Process()-cpu0
				stop()
				total += accounts
			}
			if n := e.store.writes.Load(); n != 0 {
				b.Fatalf("%d snapshots written; none was due", n)
			}
			b.ReportMetric(float64(total)/elapsed.Seconds(), "notices/s")
			b.ReportMetric(cpu.Seconds()*1e6/float64(total), "cpu-µs/notice")
			if n := e.store.snapReadBatches.Load(); n > 0 { // read-batch=1 reads each with GetSnapshot
				b.ReportMetric(float64(e.store.snapReads.Load())/float64(n), "reads/statement")
			}
		})
	}
}

// BenchmarkSnapshotLag measures commit-to-snapshot lag under a steady load:
// 200 accounts receive single-event saves at about 400 saves/s for 5 s with
// one worker and threshold 10. For each snapshot it takes the commit time
// of the save that made it due. It reports lag p50 and p99 in ms.
//
//	EVSNAP_TEST_POSTGRES_URL=... EVSNAP_TEST_NATS_URL=... go test -run '^$' -bench SnapshotLag -benchtime 1x ./lib/snapshotter/
func BenchmarkSnapshotLag(b *testing.B) {
	e, kind := benchEnv(b)
	b.Logf("backend: %s", kind)
	ctx := context.Background()
	const accounts, threshold = 200, 10
	var lags []time.Duration
	for i := 0; i < b.N; i++ {
		lt := &lagTracker{commits: map[uuid.UUID]map[int64]time.Time{}, last: map[uuid.UUID]int64{}}
		e.store.onStored = lt.stored
		e.start(e.worker(threshold, nil))
		ids := make([]uuid.UUID, accounts)
		for j := range ids {
			ids[j] = uuid.New()
		}
		deadline := time.Now().Add(5 * time.Second)
		tick := time.NewTicker(time.Second / 400)
		n := 0
		for time.Now().Before(deadline) {
			<-tick.C
			id := ids[n%accounts]
			n++
			a, err := e.repo.Load(ctx, id)
			if err != nil {
				a = e.repo.New(id)
				_ = a.Open("lag", 0)
			} else {
				_ = a.Deposit(1)
			}
			if err := e.repo.Save(ctx, a); err != nil {
				b.Fatal(err)
			}
			lt.commit(id, a.Version(), time.Now())
		}
		tick.Stop()
		waitForB(b, 20*time.Second, func() bool { return e.consumerIdle("snapshotter")() })
		lags = append(lags, lt.lags(threshold)...)
	}
	if len(lags) == 0 {
		b.Fatal("no snapshots taken")
	}
	slices.Sort(lags)
	q := func(p float64) float64 { return float64(lags[int(p*float64(len(lags)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(q(0.5), "lag_p50_ms")
	b.ReportMetric(q(0.99), "lag_p99_ms")
	b.ReportMetric(float64(len(lags)), "snapshots")
}

func waitForB(b *testing.B, timeout time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lagTracker remembers when each version was committed and when each
// snapshot was stored.
type lagTracker struct {
	mu      sync.Mutex
	commits map[uuid.UUID]map[int64]time.Time
	last    map[uuid.UUID]int64
	stores  []stored
}

type stored struct {
	id      uuid.UUID
	version int64
	at      time.Time
}

func (l *lagTracker) commit(id uuid.UUID, v int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.commits[id] == nil {
		l.commits[id] = map[int64]time.Time{}
	}
	l.commits[id][v] = at
}

func (l *lagTracker) stored(id uuid.UUID, v int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stores = append(l.stores, stored{id, v, time.Now()})
}

// lags pairs each stored snapshot with the commit of the version at which
// the previous snapshot became threshold behind.
func (l *lagTracker) lags(threshold int64) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := map[uuid.UUID]int64{}
	var out []time.Duration
	for _, s := range l.stores {
		due := prev[s.id] + threshold
		if c, ok := l.commits[s.id][due]; ok && s.version >= due {
			out = append(out, s.at.Sub(c))
		}
		prev[s.id] = s.version
	}
	return out
}

// BenchmarkSweepCatchUp measures the reconciliation sweep's catch-up rate:
// 500 accounts 150 events past their (absent) snapshots, committed with no
// notices, swept with the rate limit out of the way. It reports
// aggregates/s; in production SweepRate (default 50/s) caps it.
//
//	EVSNAP_TEST_POSTGRES_URL=... EVSNAP_TEST_NATS_URL=... go test -run '^$' -bench SweepCatchUp -benchtime 1x ./lib/snapshotter/
func BenchmarkSweepCatchUp(b *testing.B) {
	e, kind := benchEnv(b)
	b.Logf("backend: %s", kind)
	ctx := context.Background()
	silent, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		b.Fatal(err)
	}
	defer silent.Close(ctx)
	var swept int
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for range 500 {
			a := silent.New(uuid.New())
			_ = a.Open("lost", 0)
			for range 149 {
				_ = a.Deposit(1)
			}
			if err := silent.Save(ctx, a); err != nil {
				b.Fatal(err)
			}
		}
		w := e.worker(100, func(c *snapshotter.Config) { c.SweepRate = 1e6; c.SweepBatch = 1000; c.Concurrency = 4 })
		b.StartTimer()
		start := time.Now()
		n, err := sweepAll(ctx, w, 500)
		elapsed += time.Since(start)
		b.StopTimer()
		_ = w.Close(ctx)
		if err != nil {
			b.Fatal(err)
		}
		swept += n
	}
	b.ReportMetric(float64(swept)/elapsed.Seconds(), "aggregates/s")
}

// sweepAll runs sweep passes of w until they have snapshotted want
// aggregates (at most a minute): one pass does it unless a transaction
// open elsewhere on the server holds the change order back (PostgreSQL;
// decision 37), when the next passes catch up.
func sweepAll(ctx context.Context, w *snapshotter.Worker, want int) (int, error) {
	total := 0
	for deadline := time.Now().Add(time.Minute); total < want && time.Now().Before(deadline); {
		n, err := w.Sweep(ctx)
		if err != nil {
			return total, err
		}
		if total += n; n == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return total, nil
}

// BenchmarkSweepRecovery measures how long the reconciliation sweep takes
// to bring back aggregates whose notices were all lost: 500 Accounts of 30
// events each, saved without notices and without snapshots (threshold 20,
// so every one is due), then one Sweep pass with SweepBatch 500 at each
// SweepRate. It reports the pass's seconds and aggregates snapshotted per
// second; a fleet adds up to one SweepInterval (plus a fifth of jitter)
// before the pass starts, and a lease handover after the holder died adds
// up to 4/3 of the lease TTL.
//
//	EVSNAP_TEST_POSTGRES_URL=... EVSNAP_TEST_NATS_URL=... go test -run '^$' -bench SweepRecovery -benchtime 1x ./lib/snapshotter/
func BenchmarkSweepRecovery(b *testing.B) {
	const lost = 500
	for _, rate := range []float64{50, 200, 800, 100000} {
		b.Run(fmt.Sprintf("rate=%g", rate), func(b *testing.B) {
			e, setup := benchEnv(b)
			b.Logf("setup: %s", setup)
			quiet, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
			if err != nil {
				b.Fatal(err)
			}
			w := e.worker(20, func(c *snapshotter.Config) {
				c.SweepRate, c.SweepBatch, c.SweepInterval = rate, lost, time.Hour
			})
			ctx := context.Background()
			var took time.Duration
			for range b.N {
				b.StopTimer()
				ids := saveAccounts(b, quiet, lost, 30)
				b.StartTimer()
				t0 := time.Now()
				n, err := sweepAll(ctx, w, lost)
				took += time.Since(t0)
				if err != nil || n != lost {
					b.Fatalf("Sweep = %d, %v; want %d snapshotted", n, err, lost)
				}
				for _, id := range ids[:10] {
					if v := e.snapshotVersion(id); v != 30 {
						b.Fatalf("aggregate %s has a snapshot at v%d after the sweep, want v30", id, v)
					}
				}
			}
			b.ReportMetric(took.Seconds()/float64(b.N), "s/recovery")
			b.ReportMetric(float64(lost*b.N)/took.Seconds(), "aggregates/s")
		})
	}
}
