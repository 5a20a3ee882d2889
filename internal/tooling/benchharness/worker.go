package benchharness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// WorkerRow is the backlog throughput of Replicas workers on Backend.
type WorkerRow struct {
	Backend    string
	Replicas   int
	Aggregates int
	Notices    int
	// NoticesPerSec and SnapshotsPerSec are medians over the runs: the
	// notices (or stored snapshot writes) divided by the time from
	// starting the workers to the consumer having nothing pending or
	// unacknowledged.
	NoticesPerSec, SnapshotsPerSec float64
	Elapsed                        time.Duration
	// FirstSnapshot is the median time from starting the workers to the
	// first snapshot stored: their start-up (binding the consumer, the
	// first fetch, opening PostgreSQL connections, which pgxpool does on
	// first use), inside Elapsed.
	FirstSnapshot time.Duration
	// CPU is the CPU time per stored snapshot over the same time (the
	// median of each part over the runs): the harness process, where the
	// workers run, PostgreSQL's server processes and NATS's.
	CPU CPUSplit
}

// LagRow is the commit-to-snapshot lag of one worker under steady load.
type LagRow struct {
	Backend string
	// P50 and P99 are medians over the runs of each run's quantiles of
	// (snapshot stored) - (commit of the save that made it due).
	P50, P99 time.Duration
	// Snapshots is the median number of lags a run measured; SavesPerSec
	// the median save rate achieved.
	Snapshots   int
	SavesPerSec float64
	// The load: Accounts accounts starting 1 to MaxBelow events below the
	// threshold, TargetRate saves/s for Duration.
	Accounts   int
	MaxBelow   int
	TargetRate float64
	Duration   time.Duration
}

// Worker backlog and lag sizes.
const (
	backlogEvents    = 100 // per aggregate
	backlogPerNotice = 10  // events per notice: 10 notices per aggregate
	workerThreshold  = 100
)

// backlogAggregates is the backlog's size. The full form's drain lasts
// about a second on PostgreSQL here, so that the workers' start-up (a few
// tens of milliseconds, see WorkerRow.FirstSnapshot) is a small part of
// it; with 1,000 aggregates it was 5-9% of a 0.4 s drain, a cost the
// pgbench floor's tps leaves out.
func (h *Harness) backlogAggregates() int {
	if h.cfg.Quick {
		return 100
	}
	return 3000
}

// lagLoad returns the steady load of the lag measurement: accounts, saves
// per second and duration.
func (h *Harness) lagLoad() (accounts int, perSec float64, d time.Duration) {
	if h.cfg.Quick {
		return 100, 300, 750 * time.Millisecond
	}
	return 200, 400, 4 * time.Second
}

// countingStore wraps a store and counts (and reports) the snapshot
// writes that were stored.
type countingStore struct {
	eventsource.Store
	stored   *atomic.Int64
	onStored func(id uuid.UUID, version int64, at time.Time)
}

// SaveSnapshot implements eventsource.Store, as a batch of one.
func (c *countingStore) SaveSnapshot(ctx context.Context, s eventsource.Snapshot) (bool, error) {
	stored, err := c.SaveSnapshots(ctx, []eventsource.Snapshot{s})
	if err != nil {
		return false, err
	}
	return stored[0], nil
}

// SaveSnapshots implements eventsource.Store.
func (c *countingStore) SaveSnapshots(ctx context.Context, snaps []eventsource.Snapshot) ([]bool, error) {
	stored, err := c.Store.SaveSnapshots(ctx, snaps)
	if err != nil {
		return nil, err
	}
	at := time.Now()
	for i, ok := range stored {
		if ok {
			c.stored.Add(1)
			if c.onStored != nil {
				c.onStored(snaps[i].AggregateID, snaps[i].Version, at)
			}
		}
	}
	return stored, nil
}

// workerStore wraps a replica's store for the worker, counting what it
// stores.
func workerStore(store eventsource.Store, stored *atomic.Int64, onStored func(uuid.UUID, int64, time.Time)) eventsource.Store {
	return &countingStore{Store: store, stored: stored, onStored: onStored}
}

// replicaSet is N running workers, each with its own store handle and NATS
// connection, sharing one durable consumer.
type replicaSet struct {
	stored atomic.Int64
	stops  []func() error
}

// startReplicas starts n workers on st's notices and waits until they are
// ready. onStored, if set, sees every stored snapshot. started is when the
// workers' Run was called, after their stores and connections were
// opened; launching, if set, is called just before.
func (h *Harness) startReplicas(ctx context.Context, s *site, st *stream, n int, onStored func(uuid.UUID, int64, time.Time), launching func()) (rs *replicaSet, started time.Time, err error) {
	rs = &replicaSet{}
	var runs []func()
	var workers []*snapshotter.Worker
	fail := func(err error) (*replicaSet, time.Time, error) {
		_ = rs.stop()
		return nil, time.Time{}, err
	}
	for range n {
		store, closeStore, err := s.replica(ctx)
		if err != nil {
			return fail(err)
		}
		nc, err := natsconnect.Connect(ctx, natsconnect.Options{URL: h.natsURL, Name: "evsnap-bench-worker", Logger: h.log})
		if err != nil {
			closeStore()
			return fail(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			closeStore()
			return fail(err)
		}
		cfg := snapshotter.DefaultConfig()
		cfg.Store = workerStore(store, &rs.stored, onStored)
		cfg.JetStream = js
		cfg.Stream, cfg.SubjectPrefix = st.name, st.prefix
		cfg.SweepInterval = 0 // notices only: the sweep would add work the figures do not name
		cfg.Logger = h.log
		w, err := snapshotter.New(cfg, snapshotter.For[exampledomain.Account](h.reg, eventsource.Policy{Threshold: workerThreshold}))
		if err != nil {
			nc.Close()
			closeStore()
			return fail(err)
		}
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		launched := false
		runs = append(runs, func() {
			launched = true
			go func() { done <- w.Run(wctx) }()
		})
		rs.stops = append(rs.stops, func() error {
			cancel()
			var err error
			if launched {
				select {
				case err = <-done:
				case <-time.After(30 * time.Second):
					err = errors.New("worker did not stop within 30s")
				}
			}
			nc.Close()
			closeStore()
			return err
		})
		workers = append(workers, w)
	}
	if launching != nil {
		launching()
	}
	started = time.Now()
	for _, run := range runs {
		run()
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, w := range workers {
		for !w.Ready() {
			if time.Now().After(deadline) {
				return fail(errors.New("worker not ready after 15s"))
			}
			time.Sleep(time.Millisecond)
		}
	}
	return rs, started, nil
}

func (rs *replicaSet) stop() error {
	var errs []error
	for _, s := range rs.stops {
		errs = append(errs, s())
	}
	rs.stops = nil
	return errors.Join(errs...)
}

// waitDrained waits until at least want snapshots are stored and the
// consumer has nothing pending or unacknowledged.
func (st *stream) waitDrained(ctx context.Context, stored *atomic.Int64, want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if stored.Load() >= want {
			idle, err := st.idle(ctx, snapshotter.DefaultConsumer)
			if err == nil && idle {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not drained after %s: %d of %d snapshots stored", timeout, stored.Load(), want)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runWorker is steps 3 and 4 for one backend.
func (h *Harness) runWorker(ctx context.Context, b string) error {
	s, err := h.openSite(ctx, b, "worker")
	if err != nil {
		return err
	}
	defer func() {
		if err := s.close(ctx); err != nil {
			h.report.fail("worker / %s: cleanup: %v", b, err)
		}
	}()
	plain, err := h.plainRepo(s.store)
	if err != nil {
		return err
	}
	defer plain.Close(context.WithoutCancel(ctx))

	n := h.backlogAggregates()
	ids, err := h.writeBacklog(ctx, plain, n, "worker / "+b)
	if err != nil {
		return err
	}

	// On PostgreSQL each worker run is followed by its pgbench floor at
	// the worker's connection count, so that the ratio compares two
	// figures taken moments apart on a box whose speed drifts.
	var floor *floorBench
	var conns int
	noFloor := b != Postgres
	if b == Postgres {
		if conns, err = s.poolSize(ctx); err != nil {
			return err
		}
	}
	type agg struct {
		notices, snaps []float64
		elapsed, first []time.Duration
		tps, ratios    []float64
		cpu, floorCPU  []CPUSplit // per snapshot, per pgbench transaction
	}
	res := map[int]*agg{1: {}, 2: {}}
	for run := range h.cfg.Runs {
		for _, replicas := range []int{1, 2} {
			br, err := h.backlogRun(ctx, s, ids, replicas)
			if err != nil {
				return fmt.Errorf("backlog with %d replicas: %w", replicas, err)
			}
			el, snaps := br.elapsed, br.stored
			notices := n * backlogEvents / backlogPerNotice
			r := res[replicas]
			r.elapsed = append(r.elapsed, el)
			r.first = append(r.first, br.first)
			r.notices = append(r.notices, float64(notices)/el.Seconds())
			r.snaps = append(r.snaps, float64(snaps)/el.Seconds())
			per := br.cpu.per(snaps)
			r.cpu = append(r.cpu, per)
			h.progress("worker / %s: run %d/%d, %d replica(s): %d notices, %d snapshots in %s (first after %s); CPU µs per snapshot: %s", b, run+1, h.cfg.Runs, replicas, notices, snaps, el.Round(time.Millisecond), br.first.Round(100*time.Microsecond), per.brief())
			if noFloor {
				continue
			}
			if floor == nil {
				if floor, err = h.newFloorBench(ctx, s, n, ids[0]); err != nil {
					return fmt.Errorf("pgbench floor: %w", err)
				}
				if floor == nil { // no pgbench: noted, no floor for any run
					noFloor = true
					continue
				}
			}
			c := replicas * conns
			t := time.Now()
			fr, err := floor.run(ctx, c)
			if err != nil {
				return fmt.Errorf("pgbench floor: %w", err)
			}
			r.tps = append(r.tps, fr.tps)
			r.ratios = append(r.ratios, r.snaps[len(r.snaps)-1]/fr.tps)
			fper := fr.cpu.per(fr.transactions)
			r.floorCPU = append(r.floorCPU, fper)
			h.progress("worker floor / postgres: pgbench -c %d run %d/%d: %s tps (%s); worker / floor %s; CPU µs per transaction: %s", c, run+1, h.cfg.Runs, rate(fr.tps), time.Since(t).Round(time.Millisecond), sig(r.ratios[len(r.ratios)-1]), fper.brief())
		}
	}
	if floor != nil {
		floor.info.Commands = []string{floor.command(conns), floor.command(2 * conns)}
		h.report.Pgbench = floor.info
		for _, replicas := range []int{1, 2} {
			r := res[replicas]
			h.report.Floor = append(h.report.Floor, FloorRow{Clients: replicas * conns, TPS: Median(r.tps), Replicas: replicas, WorkerRatio: Median(r.ratios), CPU: medianCPU(r.floorCPU)})
		}
	}
	for _, replicas := range []int{1, 2} {
		r := res[replicas]
		h.report.Worker = append(h.report.Worker, WorkerRow{
			Backend: b, Replicas: replicas, Aggregates: n, Notices: n * backlogEvents / backlogPerNotice,
			NoticesPerSec: Median(r.notices), SnapshotsPerSec: Median(r.snaps), Elapsed: Median(r.elapsed), FirstSnapshot: Median(r.first),
			CPU: medianCPU(r.cpu),
		})
	}
	return h.runLag(ctx, s, b, plain)
}

// writeBacklog writes the worker's backlog: n Accounts (benchID 1 to n)
// of backlogEvents events each.
func (h *Harness) writeBacklog(ctx context.Context, plain *accountRepo, n int, what string) ([]uuid.UUID, error) {
	t := time.Now()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = benchID(i + 1)
		if err := writeAccount(ctx, plain, plain.New(ids[i]), backlogEvents, 0, nil); err != nil {
			return nil, err
		}
	}
	h.progress("%s: wrote %s accounts of %d events in %s", what, thousands(int64(n)), backlogEvents, time.Since(t).Round(time.Millisecond))
	return ids, nil
}

// backlogResult is one drain of the backlog.
type backlogResult struct {
	// elapsed runs from starting the workers to the consumer drained,
	// first to the first snapshot stored.
	elapsed, first time.Duration
	stored         int64
	// cpu is what the drain used in all (not per snapshot), from just
	// before the workers start to the consumer drained.
	cpu CPUSplit
}

// backlogRun announces every aggregate of ids with 10 notices of 10 events
// on a fresh stream (after deleting the snapshots), starts replicas
// workers, and times them until the consumer is drained, and until the
// first snapshot was stored, measuring the CPU the harness process,
// PostgreSQL's processes serving the workers and the NATS server use
// meanwhile. It checks that every aggregate ends with its snapshot at the
// head.
func (h *Harness) backlogRun(ctx context.Context, s *site, ids []uuid.UUID, replicas int) (res backlogResult, err error) {
	if _, err = s.store.DeleteSnapshotsByType(ctx, exampledomain.AccountType, 0); err != nil {
		return res, err
	}
	pgPIDs, err := s.serverPIDs(ctx, workerApp)
	if err != nil {
		return res, err
	}
	st, err := h.newStream(ctx)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := st.drop(); err != nil {
			h.report.fail("worker / %s: %v", s.kind, err)
		}
	}()
	if err := publishBacklog(ctx, st, ids); err != nil {
		return res, err
	}

	var firstAt atomic.Int64 // UnixNano of the first snapshot stored
	var meter *cpuMeter
	rs, start, err := h.startReplicas(ctx, s, st, replicas, func(_ uuid.UUID, _ int64, at time.Time) {
		firstAt.CompareAndSwap(0, at.UnixNano())
	}, func() { meter = startCPUMeter(true, pgPIDs, h.natsPIDs) })
	if err != nil {
		return res, err
	}
	err = st.waitDrained(ctx, &rs.stored, int64(len(ids)), 5*time.Minute)
	res.elapsed = time.Since(start)
	// The workers' connections are still open: measure before stopping.
	res.cpu = meter.stop()
	res.first = time.Unix(0, firstAt.Load()).Sub(start)
	if serr := rs.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return res, err
	}
	if err := checkBacklogDone(ctx, s.store, ids); err != nil {
		return res, err
	}
	res.stored = rs.stored.Load()
	return res, nil
}

// publishBacklog announces every aggregate of ids on st with
// backlogEvents/backlogPerNotice notices of backlogPerNotice events.
func publishBacklog(ctx context.Context, st *stream, ids []uuid.UUID) error {
	// The backlog is larger than the publisher's buffer: Notify waits for
	// room rather than dropping (checkPublisher fails on any drop). Without
	// coalescing, which would merge each aggregate's notices, published in
	// one burst, into one message: the step measures the worker on one
	// message per save, the most it can be sent.
	pub, err := st.publisher(natsnotice.WithMaxEnqueueWait(natsnotice.MaxEnqueueWaitLimit), natsnotice.WithCoalescing(false))
	if err != nil {
		return err
	}
	now := time.Now()
	for _, id := range ids {
		for from := int64(1); from <= backlogEvents; from += backlogPerNotice {
			types := []string{exampledomain.TypeMoneyDeposited, exampledomain.TypeMoneyWithdrawn}
			if from == 1 {
				types = append([]string{exampledomain.TypeAccountOpened}, types...)
			}
			if err := pub.Notify(ctx, eventsource.Appended{AggregateType: exampledomain.AccountType, AggregateID: id,
				FirstVersion: from, LastVersion: from + backlogPerNotice - 1, EventTypes: types, CommittedAt: now}); err != nil {
				_ = pub.Close(ctx)
				return err
			}
		}
	}
	if err := pub.Close(ctx); err != nil {
		return err
	}
	if err := checkPublisher(pub.Stats()); err != nil {
		return err
	}

	return nil
}

// checkBacklogDone fails unless every backlog aggregate of ids has its
// snapshot at the head.
func checkBacklogDone(ctx context.Context, store eventsource.Store, ids []uuid.UUID) error {
	want := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	behind := 0
	for info, err := range store.ListAggregates(ctx, exampledomain.AccountType, eventsource.ListOptions{MinBehind: 1}) {
		if err != nil {
			return err
		}
		if want[info.AggregateID] {
			behind++
		}
	}
	if behind > 0 {
		return fmt.Errorf("%w: %d backlog aggregates have no snapshot at the head", errSanity, behind)
	}
	return nil
}

// checkPublisher fails unless every notice was published: the backlog
// would not be the one the table describes.
func checkPublisher(st natsnotice.Stats) error {
	if st.Dropped > 0 || st.Published != st.Enqueued {
		return fmt.Errorf("%w: publisher enqueued %d notices, published %d, dropped %d", errSanity, st.Enqueued, st.Published, st.Dropped)
	}
	return nil
}

// commitLog wraps a store and remembers when each append committed (as
// the saving goroutine saw it return).
type commitLog struct {
	eventsource.Store
	mu sync.Mutex
	at map[uuid.UUID]map[int64]time.Time
}

// Append implements eventsource.Store.
func (c *commitLog) Append(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) (eventsource.AppendResult, error) {
	res, err := c.Store.Append(ctx, typ, id, expected, events)
	if err == nil {
		at := time.Now()
		c.mu.Lock()
		if c.at[id] == nil {
			c.at[id] = map[int64]time.Time{}
		}
		for v := res.FirstVersion; v <= res.LastVersion; v++ {
			c.at[id][v] = at
		}
		c.mu.Unlock()
	}
	return res, err
}

// runLag measures commit-to-snapshot lag: accounts sit just below the
// threshold (no snapshot yet), then single-event saves arrive at a steady
// rate, round robin, in external mode; each account crosses the threshold
// once, at a different moment. One worker snapshots them.
func (h *Harness) runLag(ctx context.Context, s *site, b string, plain *accountRepo) error {
	accounts, perSec, d := h.lagLoad()
	total := int(perSec * d.Seconds())
	per := max(1, total/accounts) // saves each account receives
	var p50s, p99s []time.Duration
	var counts []int
	var rates []float64
	for run := range h.cfg.Runs {
		lags, achieved, err := h.lagRun(ctx, s, plain, accounts, per, perSec, total)
		if err != nil {
			return fmt.Errorf("lag: %w", err)
		}
		p50, p99 := Quantiles(lags)
		p50s, p99s = append(p50s, p50), append(p99s, p99)
		counts = append(counts, len(lags))
		rates = append(rates, achieved)
		h.progress("worker / %s: lag run %d/%d: %d snapshots, p50 %s ms, p99 %s ms at %s saves/s", b, run+1, h.cfg.Runs, len(lags), ms(p50), ms(p99), rate(achieved))
	}
	h.report.Lag = append(h.report.Lag, LagRow{Backend: b, P50: Median(p50s), P99: Median(p99s), Snapshots: Median(counts),
		SavesPerSec: Median(rates), Accounts: accounts, MaxBelow: per, TargetRate: perSec, Duration: d})
	return nil
}

func (h *Harness) lagRun(ctx context.Context, s *site, plain *accountRepo, accounts, per int, perSec float64, total int) ([]time.Duration, float64, error) {
	st, err := h.newStream(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if err := st.drop(); err != nil {
			h.report.fail("worker / %s: %v", s.kind, err)
		}
	}()
	pub, err := st.publisher()
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = pub.Close(context.WithoutCancel(ctx)) }()
	log := &commitLog{Store: s.store, at: map[uuid.UUID]map[int64]time.Time{}}
	ext, err := h.newRepo(log, eventsource.WithSnapshotMode(eventsource.ModeExternal), eventsource.WithAppendNotifier(pub))
	if err != nil {
		return nil, 0, err
	}
	defer ext.Close(context.WithoutCancel(ctx))

	// Account i starts at version threshold-k, k = 1..per, so the save that
	// makes it due (version = threshold) comes at a different time for each.
	accts := make([]*exampledomain.Account, accounts)
	locks := make([]sync.Mutex, accounts)
	for i := range accts {
		accts[i] = plain.New(uuid.New())
		k := 1 + i%per
		if err := writeAccount(ctx, plain, accts[i], int64(workerThreshold-k), 0, nil); err != nil {
			return nil, 0, err
		}
	}

	type stored struct {
		version int64
		at      time.Time
	}
	var smu sync.Mutex
	first := map[uuid.UUID]stored{}
	rs, _, err := h.startReplicas(ctx, s, st, 1, func(id uuid.UUID, v int64, at time.Time) {
		smu.Lock()
		defer smu.Unlock()
		if _, ok := first[id]; !ok {
			first[id] = stored{v, at}
		}
	}, nil)
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = rs.stop() }()

	// The steady load: save i is due at start + i/perSec.
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		emu      sync.Mutex
		firstErr error
	)
	start := time.Now()
	for range saveGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= total || ctx.Err() != nil {
					return
				}
				time.Sleep(time.Until(start.Add(time.Duration(float64(i) / perSec * float64(time.Second)))))
				j := i % accounts
				locks[j].Lock()
				a := accts[j]
				raise(a, a.Version()+1)
				err := ext.Save(ctx, a)
				locks[j].Unlock()
				if err != nil {
					emu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					emu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	achieved := float64(total) / time.Since(start).Seconds()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	if err := st.waitDrained(ctx, &rs.stored, int64(accounts), time.Minute); err != nil {
		return nil, 0, err
	}
	if err := rs.stop(); err != nil {
		return nil, 0, err
	}
	var lags []time.Duration
	smu.Lock()
	defer smu.Unlock()
	log.mu.Lock()
	defer log.mu.Unlock()
	for id, sn := range first {
		c, ok := log.at[id][workerThreshold]
		if ok && sn.version >= workerThreshold {
			lags = append(lags, sn.at.Sub(c))
		}
	}
	if len(lags) != accounts {
		return nil, 0, fmt.Errorf("%w: %d lags for %d accounts", errSanity, len(lags), accounts)
	}
	return lags, achieved, nil
}
