package exampleapp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"golang.org/x/time/rate"
)

// LoadConfig is what [Load] is asked to do.
type LoadConfig struct {
	Config
	Aggregates  int           // how many aggregates the saves are spread over
	Rate        float64       // saves per second, all goroutines together
	Duration    time.Duration // 0: until ctx ends
	OrderShare  float64       // share of the aggregates that are orders
	MaxEvents   int           // events per account save: 1 to this many
	Concurrency int           // saving goroutines
	Record      string        // file of one line per save (see recorder); "" records nothing
	NoMigrate   bool          // leave the tables alone (a role without schema privileges)
	// AccountSchema is the release of the example Account the load runs
	// as: 1 (exampledomain.Account) or 2 (exampledomain.AccountV2); 0
	// means 1. Each loads and writes its own schema version's snapshots.
	AccountSchema int
	// IDSeed, when not 0, derives the aggregates' ids from it (the same
	// seed, the same ids), so that two loads (v1 and v2 of the app, say)
	// save the same aggregates; 0 draws random ids.
	IDSeed uint64
	// RecordLoads is a file of one line per Account load, "unix-nanos
	// Account id version snapshot|replay"; "" records none.
	RecordLoads string
}

// saveTimeout bounds one save. A save runs to its end even after the load
// stops (at Duration or on a signal), so that nothing it committed goes
// uncounted, unrecorded or unannounced; this keeps a hung store from
// holding the exit for ever.
const saveTimeout = 30 * time.Second

// Load drives steady traffic: saves of accounts and orders in external
// mode at lc.Rate, printing throughput to stdout every second and the
// first failed saves to stderr. With nothing configured it uses SQLite at
// storeopen.DefaultSQLitePath under lc.DataDir, the file snapshotter run
// reads by default. Failed saves make it an error.
func Load(ctx context.Context, lc LoadConfig, stdout, stderr io.Writer) error {
	in, err := openInfra(ctx, lc.Config, storeopen.DefaultSQLiteFile, false, !lc.NoMigrate)
	if err != nil {
		return err
	}
	defer in.Close()
	return generateLoad(ctx, lc, in, in.store.Store, stdout, stderr)
}

// generateLoad saves to store (the infra's, or a wrapper of it) and
// publishes notices on the infra's JetStream, as lc says.
//
// At the deadline, or when ctx ends, no new save starts; every save
// already started runs to its end (with a context that neither cancels,
// bounded by saveTimeout) and is counted and recorded.
// Then the publisher is flushed and closed, so each committed save's
// notice is published before generateLoad returns.
func generateLoad(ctx context.Context, lc LoadConfig, in *infra, store eventsource.Store, stdout, stderr io.Writer) error {
	rec, closeRec, err := openRecorder(lc.Record, "--record")
	if err != nil {
		return err
	}
	defer closeRec()
	loads, closeLoads, err := openRecorder(lc.RecordLoads, "--record-loads")
	if err != nil {
		return err
	}
	defer closeLoads()
	pub, closePub, err := in.publisher(ctx, lc.Logger)
	if err != nil {
		return err
	}
	defer closePub()
	l, err := newLoadRun(ctx, lc, store, pub, rec, loads, stderr)
	if err != nil {
		return err
	}
	defer l.close(context.WithoutCancel(ctx))
	fmt.Fprintf(stdout, "load: %d aggregates (%.0f%% orders), %.0f saves/s, %s; Account schema version %d; store %s, bus %s\n",
		lc.Aggregates, lc.OrderShare*100, lc.Rate, durationText(lc.Duration), l.accountSchema, in.store, in.natsWhere)

	// runCtx only decides when saves stop starting; saves run on saveCtx.
	runCtx := ctx
	if lc.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, lc.Duration)
		defer cancel()
	}
	lim := rate.NewLimiter(rate.Limit(lc.Rate), max(1, int(lc.Rate/20)))
	var wg sync.WaitGroup
	for range lc.Concurrency {
		wg.Go(func() { l.saver(runCtx, context.WithoutCancel(ctx), lim) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	start := time.Now()
	l.report(done, pub, stdout)
	elapsed := time.Since(start)
	fctx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	_ = pub.Flush(fctx) // so the counts below are final
	cancelFlush()
	ps, st := pub.Stats(), &l.st
	fmt.Fprintf(stdout, "done: %d saves (%d events) in %v = %.0f saves/s; %d conflicts, %d errors; notices published %d, dropped %d\n",
		st.saves.Load(), st.events.Load(), elapsed.Round(time.Millisecond), float64(st.saves.Load())/elapsed.Seconds(), st.conflicts.Load(), st.errors.Load(), ps.Published, ps.Dropped)
	if n := st.errors.Load(); n > 0 {
		return fmt.Errorf("%d saves failed", n)
	}
	return nil
}

// loadRun is one load: the repositories, the aggregates saved and the
// counts.
type loadRun struct {
	lc            LoadConfig
	accounts      accountSaver
	accountSchema int
	orders        *orderRepo
	ids           []uuid.UUID  // ids[i] is only read and replaced under locks[i]
	isOrder       []bool       // the first OrderShare of the slots hold orders
	locks         []sync.Mutex // one saver per aggregate at a time keeps conflicts rare
	st            loadStats
	rec           *recorder
	stderr        io.Writer
}

func newLoadRun(ctx context.Context, lc LoadConfig, store eventsource.Store, pub *natsnotice.Publisher, rec, loads *recorder, stderr io.Writer) (*loadRun, error) {
	reg := exampledomain.NewRegistry()
	opts := []eventsource.Option{eventsource.WithLogger(lc.Logger), eventsource.WithAppendNotifier(pub)}
	schema := cmp.Or(lc.AccountSchema, exampledomain.AccountSchemaVersion)
	if err := exampledomain.CheckAccountSchema(schema); err != nil {
		return nil, err
	}
	var accounts accountSaver
	var err error
	if schema == exampledomain.AccountSchemaVersionV2 {
		accounts, err = newAccountSaver[exampledomain.AccountV2](store, reg, opts, loads)
	} else {
		accounts, err = newAccountSaver[exampledomain.Account](store, reg, opts, loads)
	}
	if err != nil {
		return nil, err
	}
	orders, err := eventsource.NewRepository[exampledomain.Order](store, reg, opts...)
	if err != nil {
		_ = accounts.close(ctx)
		return nil, err
	}
	l := &loadRun{lc: lc, accounts: accounts, accountSchema: schema, orders: orders, rec: rec, stderr: stderr,
		ids: make([]uuid.UUID, lc.Aggregates), isOrder: make([]bool, lc.Aggregates), locks: make([]sync.Mutex, lc.Aggregates)}
	for i := range l.ids {
		l.ids[i] = aggregateID(lc.IDSeed, i)
		l.isOrder[i] = float64(i) < lc.OrderShare*float64(lc.Aggregates)
	}
	return l, nil
}

func (l *loadRun) close(ctx context.Context) {
	_ = l.accounts.close(ctx)
	_ = l.orders.Close(ctx)
}

// saver saves, as fast as lim allows, until runCtx ends. Each save runs
// on saveCtx, bounded by saveTimeout, and is counted.
func (l *loadRun) saver(runCtx, saveCtx context.Context, lim *rate.Limiter) {
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for lim.Wait(runCtx) == nil {
		sctx, cancel := context.WithTimeout(saveCtx, saveTimeout)
		typ, id, first, last, err := l.saveOne(sctx, r)
		cancel()
		switch {
		case err == nil:
			l.st.saves.Add(1)
			l.st.events.Add(last - first + 1)
			l.rec.write(typ, id, first, last)
		case errors.Is(err, eventsource.ErrConcurrencyConflict):
			l.st.conflicts.Add(1)
		default:
			if l.st.errors.Add(1) <= 5 {
				fmt.Fprintln(l.stderr, "load: save failed:", err)
			}
			l.rec.writeFailed(typ, id, first, last, time.Now(), err)
		}
	}
}

// saveOne saves one random aggregate and returns what it saved. When the
// save fails, first..last are the versions it tried to append (0, 0 when
// it failed before that, loading the aggregate).
func (l *loadRun) saveOne(ctx context.Context, r *rand.Rand) (typ string, id uuid.UUID, first, last int64, err error) {
	i := r.IntN(len(l.ids))
	l.locks[i].Lock()
	defer l.locks[i].Unlock()
	if l.isOrder[i] {
		first, last, err = saveOrder(ctx, l.orders, l.ids[i], r)
		if errors.Is(err, errShipped) {
			l.ids[i] = uuid.New() // a shipped order is done; a new order takes its slot
			first, last, err = saveOrder(ctx, l.orders, l.ids[i], r)
		}
		return exampledomain.OrderType, l.ids[i], first, last, err
	}
	first, last, err = l.accounts.save(ctx, l.ids[i], 1+r.IntN(l.lc.MaxEvents), r)
	return exampledomain.AccountType, l.ids[i], first, last, err
}

// report prints the throughput every second until done is closed.
func (l *loadRun) report(done <-chan struct{}, pub *natsnotice.Publisher, stdout io.Writer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	var prevSaves, prevEvents int64
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			st := &l.st
			s, e := st.saves.Load(), st.events.Load()
			ps := pub.Stats()
			fmt.Fprintf(stdout, "%6.0fs  %6d saves/s  %7d events/s  total %d saves  conflicts %d  errors %d  notices published %d dropped %d\n",
				time.Since(start).Seconds(), s-prevSaves, e-prevEvents, s, st.conflicts.Load(), st.errors.Load(), ps.Published, ps.Dropped)
			prevSaves, prevEvents = s, e
		}
	}
}

// aggregateID is the id of the load's aggregate i: drawn at random when
// seed is 0, else derived from seed and i.
func aggregateID(seed uint64, i int) uuid.UUID {
	if seed == 0 {
		return uuid.New()
	}
	return uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "evsnap example-app load %d %d", seed, i))
}

// openRecorder opens path (the file of the flag named flag) for appending
// records; "" records nothing.
func openRecorder(path, flag string) (*recorder, func(), error) {
	if path == "" {
		return nil, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", flag, err)
	}
	return &recorder{w: f}, func() { _ = f.Close() }, nil
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "until interrupted"
	}
	return "for " + d.String()
}

type loadStats struct {
	saves, events, conflicts, errors atomic.Int64
}

// recorder writes the --record file, one line per save:
//
//	Account 1b4e28ba-2fa1-11d2-883f-0016d3cca427 7 9
//	Account 1b4e28ba-2fa1-11d2-883f-0016d3cca427 10 10 failed 2025-01-02T15:04:05.123456789Z <error>
//
// A save that succeeded appended versions first to last. A failed save
// tried to append first to last (0 0 if it failed before, loading the
// aggregate) and may have committed them anyway (a connection lost
// after the commit); the time is when it returned the error (UTC,
// RFC 3339 with nanoseconds) and the error is the rest of the line.
type recorder struct {
	mu sync.Mutex
	w  io.Writer
}

func (r *recorder) write(typ string, id uuid.UUID, first, last int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "%s %s %d %d\n", typ, id, first, last)
}

func (r *recorder) writeFailed(typ string, id uuid.UUID, first, last int64, at time.Time, err error) {
	if r == nil {
		return
	}
	msg := strings.Join(strings.Fields(err.Error()), " ") // one line
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "%s %s %d %d failed %s %s\n", typ, id, first, last, at.UTC().Format(time.RFC3339Nano), msg)
}

// load records a load of aggregate typ/id, which started at start and
// gave version, from a snapshot or by replaying every event.
func (r *recorder) load(start time.Time, typ string, id uuid.UUID, version int64, fromSnapshot bool) {
	if r == nil {
		return
	}
	how := "replay"
	if fromSnapshot {
		how = "snapshot"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "%d %s %s %d %s\n", start.UnixNano(), typ, id, version, how)
}

type orderRepo = eventsource.Repository[exampledomain.Order, *exampledomain.Order]

// accountCommands are what both releases of the example Account
// (exampledomain.Account and AccountV2) take and tell.
type accountCommands interface {
	Open(owner string, initialBalance float64) error
	Deposit(amount float64) error
	Withdraw(amount float64) error
	CommittedVersion() int64
	Version() int64
	LoadedFromSnapshot() (bool, int64)
}

// accountSaver saves random account commands through the repository of
// one release of the Account, and closes it.
type accountSaver struct {
	save  func(ctx context.Context, id uuid.UUID, events int, r *rand.Rand) (first, last int64, err error)
	close func(ctx context.Context) error
}

// newAccountSaver returns the accountSaver of Account release T.
func newAccountSaver[T any, PT interface {
	eventsource.AggregatePtr[T]
	accountCommands
}](store eventsource.Store, reg *eventsource.Registry, opts []eventsource.Option, loads *recorder) (accountSaver, error) {
	repo, err := eventsource.NewRepository[T, PT](store, reg, opts...)
	if err != nil {
		return accountSaver{}, err
	}
	return accountSaver{
		save: func(ctx context.Context, id uuid.UUID, events int, r *rand.Rand) (int64, int64, error) {
			return saveAccount(ctx, repo, id, events, r, loads)
		},
		close: repo.Close,
	}, nil
}

func saveAccount[T any, PT interface {
	eventsource.AggregatePtr[T]
	accountCommands
}](ctx context.Context, repo *eventsource.Repository[T, PT], id uuid.UUID, events int, r *rand.Rand, loads *recorder) (int64, int64, error) {
	start := time.Now()
	a, err := repo.Load(ctx, id)
	if errors.Is(err, eventsource.ErrAggregateNotFound) {
		a = repo.New(id)
		_ = a.Open("load "+id.String()[:8], 100)
		events--
	} else if err != nil {
		return 0, 0, err
	} else {
		from, _ := a.LoadedFromSnapshot()
		loads.load(start, exampledomain.AccountType, id, a.Version(), from)
	}
	for range events {
		if r.IntN(2) == 0 {
			_ = a.Deposit(float64(1 + r.IntN(100)))
		} else {
			_ = a.Withdraw(float64(1 + r.IntN(50)))
		}
	}
	first := a.CommittedVersion() + 1
	if err := repo.Save(ctx, a); err != nil {
		return first, a.Version(), err
	}
	return first, a.Version(), nil
}

// errShipped: the order is shipped and takes no more commands.
var errShipped = errors.New("order already shipped")

// saveOrder moves an order one step: items are added, then it is paid,
// then shipped. A shipped order returns errShipped.
func saveOrder(ctx context.Context, repo *orderRepo, id uuid.UUID, r *rand.Rand) (int64, int64, error) {
	o, err := repo.Load(ctx, id)
	if errors.Is(err, eventsource.ErrAggregateNotFound) {
		o = repo.New(id)
		_ = o.Place("load " + id.String()[:8])
	} else if err != nil {
		return 0, 0, err
	}
	st := o.State()
	switch {
	case st.Status == exampledomain.StatusOpen && st.Lines >= 3+r.IntN(20):
		_ = o.Pay()
	case st.Status == exampledomain.StatusPaid:
		_ = o.Ship("DHL")
	case st.Status == exampledomain.StatusShipped:
		return 0, 0, errShipped
	default:
		_ = o.AddItem(fmt.Sprintf("sku-%d", r.IntN(50)), 1+r.IntN(3), float64(1+r.IntN(40)))
	}
	first := o.CommittedVersion() + 1
	if err := repo.Save(ctx, o); err != nil {
		return first, o.Version(), err
	}
	return first, o.Version(), nil
}
