package exampleapp

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/progress"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// DemoConfig is what [Demo] is asked to do.
type DemoConfig struct {
	Config
	Sizes   []int // event counts for the performance comparison
	Workers int   // in-process snapshotter workers for the external mode
}

// DemoDB is the demo's SQLite file under Config.DataDir, recreated on
// every run.
const DemoDB = "demo.db"

type demo struct {
	DemoConfig
	out io.Writer
	in  *infra
	reg *eventsource.Registry
}

// Demo walks through the tutorial as a report on out: load times with and
// without snapshots, the snapshot modes, schema versioning, and external
// mode with in-process workers. It leaves nothing running.
func Demo(ctx context.Context, c DemoConfig, out io.Writer) error {
	in, err := openInfra(ctx, c.Config, DemoDB, true, true)
	if err != nil {
		return err
	}
	defer in.Close()
	d := &demo{DemoConfig: c, out: out, in: in, reg: exampledomain.NewRegistry()}
	d.h1("evsnap: Tutorial 14, aggregate snapshotting, end to end")
	d.p("store: %s", in.store)
	d.p("bus:   %s", in.natsWhere)
	for _, step := range []func(context.Context) error{d.performance, d.modes, d.schemaVersioning, d.external} {
		if err := step(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	d.h1("Tutorial 14 complete")
	d.p("1. Snapshots make loads of long streams fast and flat: replay only the tail.")
	d.p("2. sync, background and manual modes share one policy (threshold / milestones).")
	d.p("3. Each schema version keeps its own snapshots: a new one starts by replaying, a rollback loads fast; prune old ones later.")
	d.p("4. In external mode saves only publish a notice; scaled-out workers take snapshots.")
	d.p("5. Events stay the source of truth: every snapshot can be deleted and rebuilt.")
	return nil
}

func (d *demo) h1(title string) {
	fmt.Fprintf(d.out, "\n%s\n%s\n", title, strings.Repeat("=", len(title)))
}

func (d *demo) p(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

// accountRepo is a repository of the tutorial's Account (schema version 1).
type accountRepo = eventsource.Repository[exampledomain.Account, *exampledomain.Account]

func (d *demo) accounts(opts ...eventsource.Option) (*accountRepo, error) {
	return eventsource.NewRepository[exampledomain.Account](d.in.store.Store, d.reg, append([]eventsource.Option{eventsource.WithLogger(d.Logger)}, opts...)...)
}

// performance is the tutorial's table, measured: load time without and
// with a snapshot (threshold 100, saves of 100 events).
func (d *demo) performance(ctx context.Context) error {
	d.h1("1. Performance: load time with and without snapshots")
	plain, err := d.accounts(eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		return err
	}
	defer plain.Close(ctx)
	snap, err := d.accounts(eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
	if err != nil {
		return err
	}
	defer snap.Close(ctx)
	type row struct {
		n             int
		without, with time.Duration
		replayed      int64
	}
	var rows []row
	for _, n := range d.Sizes {
		id, err := d.writeStream(ctx, snap, n)
		if err != nil {
			return err
		}
		reps := max(3, min(50, 200_000/n))
		without, _, err := medianLoad(ctx, reps, func() (*exampledomain.Account, error) { return plain.Load(ctx, id) })
		if err != nil {
			return err
		}
		with, replayed, err := medianLoad(ctx, reps, func() (*exampledomain.Account, error) { return snap.Load(ctx, id) })
		if err != nil {
			return err
		}
		rows = append(rows, row{n, without, with, replayed})
	}
	fmt.Fprintln(d.out)
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "events\twithout snapshot\twith snapshot (every 100)\tevents replayed\tspeed-up\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0fx\t\n", commas(r.n), ms(r.without), ms(r.with), r.replayed, float64(r.without)/float64(r.with))
	}
	_ = tw.Flush()
	d.p("\n(median of repeated loads on %s; the tutorial's Python library: 10,000 events ~5 s without, ~60 ms with)", d.in.store.Kind)
	return nil
}

// writeStream saves a new account of n events through repo, 100 events
// a save, showing progress, and returns its id.
func (d *demo) writeStream(ctx context.Context, repo *accountRepo, n int) (uuid.UUID, error) {
	id := uuid.New()
	a := repo.New(id)
	_ = a.Open("Performance Test Account", 1000)
	start := time.Now()
	line := progress.New(d.out)
	for v := 2; v <= n; v++ {
		if v%2 == 0 {
			_ = a.Deposit(10)
		} else {
			_ = a.Withdraw(5)
		}
		if v%100 == 0 || v == n {
			if err := repo.Save(ctx, a); err != nil {
				return id, err
			}
			line.Update("  writing %s events: %3d%%", commas(n), v*100/n)
		}
	}
	if n == 1 {
		if err := repo.Save(ctx, a); err != nil {
			return id, err
		}
	}
	line.Done("  wrote %s events in %v (saves of 100, snapshot every 100)", commas(n), time.Since(start).Round(time.Millisecond))
	return id, nil
}

func medianLoad(ctx context.Context, reps int, load func() (*exampledomain.Account, error)) (time.Duration, int64, error) {
	times := make([]time.Duration, reps)
	var replayed int64
	for i := range times {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		a, err := load()
		if err != nil {
			return 0, 0, err
		}
		times[i] = time.Since(start)
		_, replayed = a.LoadedFromSnapshot()
	}
	slices.Sort(times)
	return times[len(times)/2], replayed, nil
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + " ms"
}

func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// snapAt says which version of account id's snapshot is stored.
func (d *demo) snapAt(ctx context.Context, id uuid.UUID) string {
	s, err := d.in.store.GetSnapshot(ctx, exampledomain.AccountType, id, 1)
	switch {
	case err != nil:
		return "error: " + err.Error()
	case s == nil:
		return "none"
	}
	return fmt.Sprintf("v%d", s.Version)
}

// openAccount saves a new account named name through repo: opened with
// balance, then deposits deposits of amount, in one save.
func openAccount(ctx context.Context, repo *accountRepo, name string, balance float64, deposits int, amount float64) (*exampledomain.Account, error) {
	a := repo.New(uuid.New())
	_ = a.Open(name, balance)
	for range deposits {
		_ = a.Deposit(amount)
	}
	return a, repo.Save(ctx, a)
}

// modes walks through sync, background and manual snapshots.
func (d *demo) modes(ctx context.Context) error {
	d.h1("2. Snapshot modes: sync, background, manual")
	for _, step := range []func(context.Context) error{d.syncMode, d.backgroundMode, d.manualMode} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) syncMode(ctx context.Context) error {
	d.p("\nSYNC (threshold 10): one save of 16 events")
	sync, err := d.accounts(eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}), eventsource.WithSnapshotMode(eventsource.ModeSync))
	if err != nil {
		return err
	}
	defer sync.Close(ctx)
	a, err := openAccount(ctx, sync, "Sync Mode Account", 100, 15, 1)
	if err != nil {
		return err
	}
	d.p("  snapshot right after Save returns: %s", d.snapAt(ctx, a.ID()))
	return nil
}

func (d *demo) backgroundMode(ctx context.Context) error {
	d.p("\nBACKGROUND (threshold 10): one save of 16 events")
	bg, err := d.accounts(eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}), eventsource.WithSnapshotMode(eventsource.ModeBackground))
	if err != nil {
		return err
	}
	defer bg.Close(ctx)
	b, err := openAccount(ctx, bg, "Background Mode Account", 100, 15, 1)
	if err != nil {
		return err
	}
	d.p("  snapshot right after Save returns: %s (written by a background goroutine)", d.snapAt(ctx, b.ID()))
	n, err := bg.AwaitPendingSnapshots(ctx)
	if err != nil {
		return err
	}
	d.p("  after AwaitPendingSnapshots (%d pending): %s", n, d.snapAt(ctx, b.ID()))
	return nil
}

func (d *demo) manualMode(ctx context.Context) error {
	d.p("\nMANUAL: one save of 21 events, then CreateSnapshot")
	manual, err := d.accounts(eventsource.WithSnapshotMode(eventsource.ModeManual))
	if err != nil {
		return err
	}
	defer manual.Close(ctx)
	c, err := openAccount(ctx, manual, "Manual Mode Account", 100, 20, 1)
	if err != nil {
		return err
	}
	d.p("  automatic snapshot after Save: %s", d.snapAt(ctx, c.ID()))
	s, err := manual.CreateSnapshot(ctx, c)
	if err != nil {
		return err
	}
	d.p("  CreateSnapshot: v%d (schema %d, %d bytes of state)", s.Version, s.SchemaVersion, len(s.State))
	return nil
}

func (d *demo) schemaVersioning(ctx context.Context) error {
	d.h1("3. Schema versioning")
	id, err := d.saveV1(ctx)
	if err != nil {
		return err
	}
	v2, err := eventsource.NewRepository[exampledomain.AccountV2](d.in.store.Store, d.reg, eventsource.WithLogger(d.Logger),
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
	if err != nil {
		return err
	}
	defer v2.Close(ctx)
	b, err := v2.Load(ctx, id)
	if err != nil {
		return err
	}
	from, replayed := b.LoadedFromSnapshot()
	d.p("v2 (AccountV2, balance in cents) loads it: snapshot used = %v, events replayed = %d (it has no schema 2 snapshot yet), balance %.2f", from, replayed, b.State().Balance())
	if err := b.Deposit(50); err != nil {
		return err
	}
	if err := v2.Save(ctx, b); err != nil {
		return err
	}
	s2, _ := d.in.store.GetSnapshot(ctx, exampledomain.AccountType, id, exampledomain.AccountSchemaVersionV2)
	d.p("v2 saves once more: snapshot v%d with schema %d, beside v1's", s2.Version, s2.SchemaVersion)
	again, _ := v2.Load(ctx, id)
	from, replayed = again.LoadedFromSnapshot()
	d.p("v2 loads again: snapshot used = %v, events replayed = %d", from, replayed)
	v1, err := d.accounts()
	if err != nil {
		return err
	}
	defer v1.Close(ctx)
	a, err := v1.Load(ctx, id)
	if err != nil {
		return err
	}
	from, replayed = a.LoadedFromSnapshot()
	d.p("rolled back to v1, it loads: snapshot used = %v, events replayed = %d (its own schema 1 snapshot is kept)", from, replayed)
	n, err := d.in.store.DeleteSnapshotsByType(ctx, exampledomain.AccountType, exampledomain.AccountSchemaVersionV2)
	if err != nil {
		return err
	}
	d.p("once no v1 runs: pruned %d Account snapshots with schema version < 2 (every v1 Account snapshot this demo wrote)", n)
	return nil
}

// saveV1 saves two accounts with the schema 1 aggregate, each past the
// threshold of 10, and returns the id of the first.
func (d *demo) saveV1(ctx context.Context) (uuid.UUID, error) {
	v1, err := d.accounts(eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
	if err != nil {
		return uuid.Nil, err
	}
	defer v1.Close(ctx)
	a, err := openAccount(ctx, v1, "Schema Test Account", 500, 15, 10)
	if err != nil {
		return uuid.Nil, err
	}
	if _, err := openAccount(ctx, v1, "Another v1 Account", 0, 11, 1); err != nil {
		return uuid.Nil, err
	}
	s1, err := d.in.store.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), exampledomain.AccountSchemaVersion)
	if err != nil || s1 == nil {
		return uuid.Nil, fmt.Errorf("v1 snapshot missing: %v", err)
	}
	d.p("v1 saved 16 events: snapshot v%d with schema %d", s1.Version, s1.SchemaVersion)
	return a.ID(), nil
}

// externalThreshold is the workers' threshold in the external mode.
const externalThreshold = 20

// tracked is an aggregate the external mode saved, with its head and
// the version of its snapshot (0: none) once awaited.
type tracked struct {
	typ        string
	id         uuid.UUID
	head, snap int64
}

// settled reports whether t has the snapshot its policy asks for.
func (t tracked) settled() bool {
	if t.typ == exampledomain.OrderType {
		if t.head >= 3 { // OrderPaid (v3) and OrderShipped (v4) are milestones
			return t.snap == t.head
		}
		return t.snap == 0
	}
	if t.head < externalThreshold {
		return t.snap == 0
	}
	return t.snap > 0 && t.head-t.snap < externalThreshold
}

// external runs the out-of-process mode: saves publish notices, workers
// snapshot.
func (d *demo) external(ctx context.Context) error {
	d.h1("4. External mode: notices on JetStream, snapshotter workers")
	pub, closePub, err := d.in.publisher(ctx, d.Logger)
	if err != nil {
		return err
	}
	defer closePub()
	stopWorkers, err := d.startWorkers(ctx)
	if err != nil {
		return err
	}
	defer stopWorkers()
	d.p("%d workers share the durable consumer %q; policy: threshold %d, Order also on %s",
		d.Workers, snapshotter.DefaultConsumer, externalThreshold, strings.Join(exampledomain.OrderMilestones, ", "))
	saveStart := time.Now()
	all, err := d.saveExternal(ctx, pub)
	if err != nil {
		return err
	}
	saves := pub.Stats()
	d.p("saved %d aggregates in %v; notices published %d, dropped %d",
		len(all), time.Since(saveStart).Round(time.Millisecond), saves.Published, saves.Dropped)
	if err := d.awaitSnapshots(ctx, all); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\ntype\taggregate\thead\tsnapshot\tevents behind")
	for _, r := range all {
		snap := "none"
		if r.snap > 0 {
			snap = fmt.Sprintf("v%d", r.snap)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\n", r.typ, r.id.String()[:8], r.head, snap, r.head-r.snap)
	}
	_ = tw.Flush()
	d.p("\naccounts below %d events have no snapshot (not due); orders snapshot when paid or shipped.", externalThreshold)
	d.p("a later save that crosses the threshold again moves the snapshot forward.")
	return nil
}

// startWorkers runs d.Workers snapshotter workers until the returned
// function is called, which waits for them to stop.
func (d *demo) startWorkers(ctx context.Context) (stop func(), err error) {
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	for i := range d.Workers {
		cfg := snapshotter.DefaultConfig()
		cfg.Store, cfg.JetStream = d.in.store.Store, d.in.js
		cfg.Logger = d.Logger
		w, err := snapshotter.New(cfg,
			snapshotter.For[exampledomain.Account](d.reg, eventsource.Policy{Threshold: externalThreshold}),
			snapshotter.For[exampledomain.Order](d.reg, eventsource.Policy{Threshold: externalThreshold, Milestones: exampledomain.OrderMilestones}))
		if err != nil {
			stop()
			return nil, err
		}
		wg.Go(func() {
			if err := w.Run(wctx); err != nil {
				d.Logger.Error("worker stopped", "worker", i, "error", err)
			}
		})
	}
	return stop, nil
}

// saveExternal saves six accounts with different amounts of traffic
// (some cross the threshold, some do not) and three orders at different
// stages, publishing a notice per save, and returns them with their heads.
func (d *demo) saveExternal(ctx context.Context, pub *natsnotice.Publisher) ([]tracked, error) {
	accounts, err := d.accounts(eventsource.WithAppendNotifier(pub))
	if err != nil {
		return nil, err
	}
	defer accounts.Close(ctx)
	orders, err := eventsource.NewRepository[exampledomain.Order](d.in.store.Store, d.reg, eventsource.WithLogger(d.Logger),
		eventsource.WithAppendNotifier(pub))
	if err != nil {
		return nil, err
	}
	defer orders.Close(ctx)
	var all []tracked
	for i := range 6 {
		a, err := openAccount(ctx, accounts, fmt.Sprintf("External %d", i), 0, 0, 0)
		if err != nil {
			return nil, err
		}
		for range (i + 1) * 9 {
			_ = a.Deposit(1)
			if err := accounts.Save(ctx, a); err != nil {
				return nil, err
			}
		}
		all = append(all, tracked{typ: exampledomain.AccountType, id: a.ID(), head: a.Version()})
	}
	for i := range 3 {
		o := orders.New(uuid.New())
		_ = o.Place(fmt.Sprintf("customer %d", i))
		_ = o.AddItem("book", 1, 12.5)
		steps := []func() error{func() error { return nil }, o.Pay, func() error { return o.Ship("DHL") }}
		for _, step := range steps[:i+1] {
			_ = step()
			if err := orders.Save(ctx, o); err != nil {
				return nil, err
			}
		}
		all = append(all, tracked{typ: exampledomain.OrderType, id: o.ID(), head: o.Version()})
	}
	return all, nil
}

// awaitSnapshots waits up to 20s until every aggregate of all has the
// snapshot its policy asks for, and says how long that took; it records
// the snapshot versions in all.
func (d *demo) awaitSnapshots(ctx context.Context, all []tracked) error {
	waitStart := time.Now()
	deadline := waitStart.Add(20 * time.Second)
	for {
		done := true
		for i := range all {
			s, err := d.in.store.GetSnapshot(ctx, all[i].typ, all[i].id, 1)
			if err != nil {
				return err
			}
			all[i].snap = 0
			if s != nil {
				all[i].snap = s.Version
			}
			done = done && all[i].settled()
		}
		if done {
			d.p("every snapshot the policy asks for was in place %v after the last save", time.Since(waitStart).Round(time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			d.p("after 20s some snapshots are still missing (see below)")
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}
