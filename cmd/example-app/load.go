package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/backend"
	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"golang.org/x/time/rate"
)

// loadConfig is what `example-app load` is asked to do.
type loadConfig struct {
	aggregates  int
	rate        float64
	duration    time.Duration // 0: until ctx ends
	orderShare  float64
	maxEvents   int
	concurrency int
	record      string // file of one line per successful save; "" records nothing
	noMigrate   bool
}

// saveTimeout bounds one save. A save runs to its end even after the load
// stops (at --duration or on a signal), so that nothing it committed goes
// uncounted, unrecorded or unannounced; this keeps a hung store from
// holding the exit for ever.
const saveTimeout = 30 * time.Second

// runLoad drives steady traffic: saves of accounts and orders in external
// mode at a target rate, printing throughput every second.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var lc loadConfig
	fs := newFlagSet("example-app load [flags]", "Steady saves of accounts and orders in external mode at a target rate,\nprinting throughput every second.", stderr)
	c.register(fs, backend.DefaultSQLiteFile)
	fs.IntVar(&lc.aggregates, "aggregates", 100, "how many aggregates to spread the saves over")
	fs.Float64Var(&lc.rate, "rate", 200, "saves per second (all goroutines together)")
	fs.DurationVar(&lc.duration, "duration", 30*time.Second, "how long to run; 0 runs until interrupted")
	fs.Float64Var(&lc.orderShare, "orders", 0.3, "share of aggregates that are orders (the rest are accounts)")
	fs.IntVar(&lc.maxEvents, "max-events", 3, "events per account save: 1 to this many")
	fs.IntVar(&lc.concurrency, "concurrency", 8, "saving goroutines")
	fs.StringVar(&lc.record, "record", "", "append one line per successful save (type id first last) to this file")
	fs.BoolVar(&lc.noMigrate, "no-migrate", false, "do not create or upgrade the tables (run as a role without schema privileges, after 'snapshotter migrate')")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	case lc.aggregates < 1:
		return fmt.Errorf("%w: --aggregates must be at least 1", errUsage)
	case lc.rate <= 0:
		return fmt.Errorf("%w: --rate must be positive", errUsage)
	case lc.duration < 0:
		return fmt.Errorf("%w: --duration must not be negative", errUsage)
	case lc.orderShare < 0 || lc.orderShare > 1:
		return fmt.Errorf("%w: --orders must be between 0 and 1", errUsage)
	case lc.maxEvents < 1 || lc.maxEvents > 1000:
		return fmt.Errorf("%w: --max-events must be 1-1000", errUsage)
	case lc.concurrency < 1 || lc.concurrency > 1024:
		return fmt.Errorf("%w: --concurrency must be 1-1024", errUsage)
	}
	if err := c.finish(stderr); err != nil {
		return err
	}
	in, err := openInfra(ctx, &c, backend.DefaultSQLiteFile, false, !lc.noMigrate, true)
	if err != nil {
		return err
	}
	defer in.Close()
	return generateLoad(ctx, lc, in, in.store.Store, c.logger, stdout, stderr)
}

// generateLoad saves to store (the infra's, or a wrapper of it) and
// publishes notices on the infra's JetStream, as lc says.
//
// At the deadline, or when ctx ends, no new save starts; every save
// already started runs to its end (with a context that neither cancels,
// bounded by saveTimeout) and is counted, and recorded if it succeeded.
// Then the publisher is flushed and closed, so each committed save's
// notice is published before generateLoad returns.
func generateLoad(ctx context.Context, lc loadConfig, in *infra, store eventsource.Store, logger *slog.Logger, stdout, stderr io.Writer) error {
	var rec *recorder
	if lc.record != "" {
		f, err := os.OpenFile(lc.record, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("--record: %w", err)
		}
		defer f.Close()
		rec = &recorder{w: f}
	}
	pub, closePub, err := in.publisher(ctx, logger)
	if err != nil {
		return err
	}
	defer closePub()
	reg := exampledomain.NewRegistry()
	opts := []eventsource.Option{eventsource.WithLogger(logger), eventsource.WithAppendNotifier(pub)}
	accounts, err := eventsource.NewRepository[exampledomain.Account](store, reg, opts...)
	if err != nil {
		return err
	}
	defer accounts.Close(context.WithoutCancel(ctx))
	orders, err := eventsource.NewRepository[exampledomain.Order](store, reg, opts...)
	if err != nil {
		return err
	}
	defer orders.Close(context.WithoutCancel(ctx))

	ids := make([]uuid.UUID, lc.aggregates)
	isOrder := make([]bool, lc.aggregates)
	for i := range ids {
		ids[i] = uuid.New()
		isOrder[i] = float64(i) < lc.orderShare*float64(lc.aggregates)
	}
	fmt.Fprintf(stdout, "load: %d aggregates (%.0f%% orders), %.0f saves/s, %s; store %s, bus %s\n",
		lc.aggregates, lc.orderShare*100, lc.rate, durationText(lc.duration), in.store, in.natsWhere)

	// runCtx only decides when saves stop starting; saves run on saveCtx.
	runCtx := ctx
	if lc.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, lc.duration)
		defer cancel()
	}
	saveCtx := context.WithoutCancel(ctx)
	lim := rate.NewLimiter(rate.Limit(lc.rate), max(1, int(lc.rate/20)))
	var st loadStats
	locks := make([]sync.Mutex, len(ids)) // one saver per aggregate at a time keeps conflicts rare
	var wg sync.WaitGroup
	for range lc.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			for lim.Wait(runCtx) == nil {
				i := r.IntN(len(ids))
				sctx, cancel := context.WithTimeout(saveCtx, saveTimeout)
				locks[i].Lock() // ids[i] is only read and replaced under its lock
				var first, last int64
				var typ string
				var err error
				if isOrder[i] {
					typ = exampledomain.OrderType
					first, last, err = saveOrder(sctx, orders, ids[i], r)
					if errors.Is(err, errShipped) {
						ids[i] = uuid.New() // a shipped order is done; a new order takes its slot
						first, last, err = saveOrder(sctx, orders, ids[i], r)
					}
				} else {
					typ = exampledomain.AccountType
					first, last, err = saveAccount(sctx, accounts, ids[i], 1+r.IntN(lc.maxEvents), r)
				}
				id := ids[i]
				locks[i].Unlock()
				cancel()
				switch {
				case err == nil:
					st.saves.Add(1)
					st.events.Add(last - first + 1)
					rec.write(typ, id, first, last)
				case errors.Is(err, eventsource.ErrConcurrencyConflict):
					st.conflicts.Add(1)
				default:
					if st.errors.Add(1) <= 5 {
						fmt.Fprintln(stderr, "load: save failed:", err)
					}
				}
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	var prevSaves, prevEvents int64
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
			s, e := st.saves.Load(), st.events.Load()
			ps := pub.Stats()
			fmt.Fprintf(stdout, "%6.0fs  %6d saves/s  %7d events/s  total %d saves  conflicts %d  errors %d  notices published %d dropped %d\n",
				time.Since(start).Seconds(), s-prevSaves, e-prevEvents, s, st.conflicts.Load(), st.errors.Load(), ps.Published, ps.Dropped)
			prevSaves, prevEvents = s, e
		}
	}
	elapsed := time.Since(start)
	fctx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	_ = pub.Flush(fctx) // so the counts below are final
	cancelFlush()
	ps := pub.Stats()
	fmt.Fprintf(stdout, "done: %d saves (%d events) in %v = %.0f saves/s; %d conflicts, %d errors; notices published %d, dropped %d\n",
		st.saves.Load(), st.events.Load(), elapsed.Round(time.Millisecond), float64(st.saves.Load())/elapsed.Seconds(), st.conflicts.Load(), st.errors.Load(), ps.Published, ps.Dropped)
	if n := st.errors.Load(); n > 0 {
		return fmt.Errorf("%d saves failed", n)
	}
	return nil
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

type accountRepo = eventsource.Repository[exampledomain.Account, *exampledomain.Account]
type orderRepo = eventsource.Repository[exampledomain.Order, *exampledomain.Order]

func saveAccount(ctx context.Context, repo *accountRepo, id uuid.UUID, events int, r *rand.Rand) (int64, int64, error) {
	a, err := repo.Load(ctx, id)
	if errors.Is(err, eventsource.ErrAggregateNotFound) {
		a = repo.New(id)
		_ = a.Open("load "+id.String()[:8], 100)
		events--
	} else if err != nil {
		return 0, 0, err
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
		return 0, 0, err
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
		return 0, 0, err
	}
	return first, o.Version(), nil
}
