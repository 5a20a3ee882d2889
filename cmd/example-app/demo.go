package main

import (
	"context"
	"errors"
	"flag"
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
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

type demo struct {
	common
	sizes   []int
	workers int
	out     io.Writer
	in      *infra
	reg     *eventsource.Registry
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := &demo{out: stdout, reg: exampledomain.NewRegistry()}
	fs := newFlagSet("example-app [demo] [flags]", "The snapshotting tutorial end to end, as a report: load times with and\nwithout snapshots, the snapshot modes, schema versioning, external mode.", stderr)
	d.register(fs, "demo.db")
	sizes := fs.String("sizes", "100,1000,10000,100000", "event counts for the performance comparison, comma-separated")
	fs.IntVar(&d.workers, "workers", 2, "in-process snapshotter workers for the external mode")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1_000_000 {
			return fmt.Errorf("%w: --sizes: %q is not a count from 1 to 1000000", errUsage, s)
		}
		d.sizes = append(d.sizes, n)
	}
	if d.workers < 1 || d.workers > 16 {
		return fmt.Errorf("%w: --workers %d: want 1-16", errUsage, d.workers)
	}
	if err := d.finish(stderr); err != nil {
		return err
	}
	in, err := openInfra(ctx, &d.common, "demo.db", true, true, false)
	if err != nil {
		return err
	}
	defer in.Close()
	d.in = in
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
	d.p("3. A schema version bump makes old snapshots ignored, never fatal; prune them later.")
	d.p("4. In external mode saves only publish a notice; scaled-out workers take snapshots.")
	d.p("5. Events stay the source of truth: every snapshot can be deleted and rebuilt.")
	return nil
}

func (d *demo) h1(title string) {
	fmt.Fprintf(d.out, "\n%s\n%s\n", title, strings.Repeat("=", len(title)))
}

func (d *demo) p(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) accounts(opts ...eventsource.Option) (*eventsource.Repository[exampledomain.Account, *exampledomain.Account], error) {
	return eventsource.NewRepository[exampledomain.Account](d.in.store.Store, d.reg, append([]eventsource.Option{eventsource.WithLogger(d.logger)}, opts...)...)
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
	snap, err := d.accounts(eventsource.WithSnapshotThreshold(100))
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
	for _, n := range d.sizes {
		id := uuid.New()
		a := snap.New(id)
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
				if err := snap.Save(ctx, a); err != nil {
					return err
				}
				line.Update("  writing %s events: %3d%%", commas(n), v*100/n)
			}
		}
		if n == 1 {
			if err := snap.Save(ctx, a); err != nil {
				return err
			}
		}
		line.Done("  wrote %s events in %v (saves of 100, snapshot every 100)", commas(n), time.Since(start).Round(time.Millisecond))
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

// modes walks through sync, background and manual snapshots.
func (d *demo) modes(ctx context.Context) error {
	d.h1("2. Snapshot modes: sync, background, manual")
	snapAt := func(id uuid.UUID) string {
		s, err := d.in.store.GetSnapshot(ctx, exampledomain.AccountType, id)
		switch {
		case err != nil:
			return "error: " + err.Error()
		case s == nil:
			return "none"
		}
		return fmt.Sprintf("v%d", s.Version)
	}
	openWith := func(repo interface {
		New(uuid.UUID) *exampledomain.Account
		Save(context.Context, *exampledomain.Account) error
	}, name string, deposits int) (*exampledomain.Account, error) {
		a := repo.New(uuid.New())
		_ = a.Open(name, 100)
		for range deposits {
			_ = a.Deposit(1)
		}
		return a, repo.Save(ctx, a)
	}

	d.p("\nSYNC (threshold 10): one save of 16 events")
	sync, err := d.accounts(eventsource.WithSnapshotThreshold(10), eventsource.WithSnapshotMode(eventsource.ModeSync))
	if err != nil {
		return err
	}
	defer sync.Close(ctx)
	a, err := openWith(sync, "Sync Mode Account", 15)
	if err != nil {
		return err
	}
	d.p("  snapshot right after Save returns: %s", snapAt(a.ID()))

	d.p("\nBACKGROUND (threshold 10): one save of 16 events")
	bg, err := d.accounts(eventsource.WithSnapshotThreshold(10), eventsource.WithSnapshotMode(eventsource.ModeBackground))
	if err != nil {
		return err
	}
	defer bg.Close(ctx)
	b, err := openWith(bg, "Background Mode Account", 15)
	if err != nil {
		return err
	}
	d.p("  snapshot right after Save returns: %s (written by a background goroutine)", snapAt(b.ID()))
	n, err := bg.AwaitPendingSnapshots(ctx)
	if err != nil {
		return err
	}
	d.p("  after AwaitPendingSnapshots (%d pending): %s", n, snapAt(b.ID()))

	d.p("\nMANUAL: one save of 21 events, then CreateSnapshot")
	manual, err := d.accounts(eventsource.WithSnapshotMode(eventsource.ModeManual))
	if err != nil {
		return err
	}
	defer manual.Close(ctx)
	c, err := openWith(manual, "Manual Mode Account", 20)
	if err != nil {
		return err
	}
	d.p("  automatic snapshot after Save: %s", snapAt(c.ID()))
	s, err := manual.CreateSnapshot(ctx, c)
	if err != nil {
		return err
	}
	d.p("  CreateSnapshot: v%d (schema %d, %d bytes of state)", s.Version, s.SchemaVersion, len(s.State))
	return nil
}

// accountV2 is the Account after an incompatible state change: the same
// aggregate type with schema version 2.
type accountV2 struct {
	eventsource.Root[exampledomain.AccountState]
}

func (*accountV2) AggregateType() string { return exampledomain.AccountType }
func (*accountV2) SchemaVersion() int    { return 2 }

func (d *demo) schemaVersioning(ctx context.Context) error {
	d.h1("3. Schema versioning")
	v1, err := d.accounts(eventsource.WithSnapshotThreshold(10))
	if err != nil {
		return err
	}
	defer v1.Close(ctx)
	a := v1.New(uuid.New())
	_ = a.Open("Schema Test Account", 500)
	for range 15 {
		_ = a.Deposit(10)
	}
	if err := v1.Save(ctx, a); err != nil {
		return err
	}
	other := v1.New(uuid.New())
	_ = other.Open("Another v1 Account", 0)
	for range 11 {
		_ = other.Deposit(1)
	}
	if err := v1.Save(ctx, other); err != nil {
		return err
	}
	s1, err := d.in.store.GetSnapshot(ctx, exampledomain.AccountType, a.ID())
	if err != nil || s1 == nil {
		return fmt.Errorf("v1 snapshot missing: %v", err)
	}
	d.p("v1 saved 16 events: snapshot v%d with schema %d", s1.Version, s1.SchemaVersion)

	v2, err := eventsource.NewRepository[accountV2](d.in.store.Store, d.reg, eventsource.WithLogger(d.logger),
		eventsource.WithSnapshotThreshold(10))
	if err != nil {
		return err
	}
	defer v2.Close(ctx)
	b, err := v2.Load(ctx, a.ID())
	if err != nil {
		return err
	}
	from, replayed := b.LoadedFromSnapshot()
	d.p("v2 loads it: snapshot used = %v, events replayed = %d (the v1 snapshot is ignored), balance %.2f", from, replayed, b.State().Balance)
	b.Raise(exampledomain.MoneyDeposited{Amount: 50})
	if err := v2.Save(ctx, b); err != nil {
		return err
	}
	s2, _ := d.in.store.GetSnapshot(ctx, exampledomain.AccountType, a.ID())
	d.p("v2 saves once more: snapshot v%d with schema %d", s2.Version, s2.SchemaVersion)
	again, _ := v2.Load(ctx, a.ID())
	from, replayed = again.LoadedFromSnapshot()
	d.p("v2 loads again: snapshot used = %v, events replayed = %d", from, replayed)
	n, err := d.in.store.DeleteSnapshotsByType(ctx, exampledomain.AccountType, 2)
	if err != nil {
		return err
	}
	d.p("pruned %d Account snapshots with schema version < 2 (every v1 Account snapshot this demo wrote)", n)
	return nil
}

// external runs the out-of-process mode: saves publish notices, workers
// snapshot.
func (d *demo) external(ctx context.Context) error {
	d.h1("4. External mode: notices on JetStream, snapshotter workers")
	pub, closePub, err := d.in.publisher(ctx, d.logger)
	if err != nil {
		return err
	}
	defer closePub()
	const threshold = 20
	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopWorkers()
		wg.Wait()
	}()
	for i := range d.workers {
		cfg := snapshotter.DefaultConfig()
		cfg.Store, cfg.JetStream = d.in.store.Store, d.in.js
		cfg.Logger = d.logger
		w, err := snapshotter.New(cfg,
			snapshotter.For[exampledomain.Account](d.reg, snapshotter.Policy{Threshold: threshold}),
			snapshotter.For[exampledomain.Order](d.reg, snapshotter.Policy{Threshold: threshold, Milestones: exampledomain.OrderMilestones}))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(wctx); err != nil {
				d.logger.Error("worker stopped", "worker", i, "error", err)
			}
		}()
	}
	d.p("%d workers share the durable consumer %q; policy: threshold %d, Order also on %s",
		d.workers, snapshotter.DefaultConsumer, threshold, strings.Join(exampledomain.OrderMilestones, ", "))

	accounts, err := d.accounts(eventsource.WithAppendNotifier(pub))
	if err != nil {
		return err
	}
	defer accounts.Close(ctx)
	orders, err := eventsource.NewRepository[exampledomain.Order](d.in.store.Store, d.reg, eventsource.WithLogger(d.logger),
		eventsource.WithAppendNotifier(pub))
	if err != nil {
		return err
	}
	defer orders.Close(ctx)

	type tracked struct {
		typ string
		id  uuid.UUID
	}
	var all []tracked
	saveStart := time.Now()
	for i := range 6 {
		a := accounts.New(uuid.New())
		_ = a.Open(fmt.Sprintf("External %d", i), 0)
		if err := accounts.Save(ctx, a); err != nil {
			return err
		}
		// Different amounts of traffic: some cross the threshold, some do not.
		for range (i + 1) * 9 {
			_ = a.Deposit(1)
			if err := accounts.Save(ctx, a); err != nil {
				return err
			}
		}
		all = append(all, tracked{exampledomain.AccountType, a.ID()})
	}
	for i := range 3 {
		o := orders.New(uuid.New())
		_ = o.Place(fmt.Sprintf("customer %d", i))
		_ = o.AddItem("book", 1, 12.5)
		if err := orders.Save(ctx, o); err != nil {
			return err
		}
		if i >= 1 {
			_ = o.Pay()
			if err := orders.Save(ctx, o); err != nil {
				return err
			}
		}
		if i >= 2 {
			_ = o.Ship("DHL")
			if err := orders.Save(ctx, o); err != nil {
				return err
			}
		}
		all = append(all, tracked{exampledomain.OrderType, o.ID()})
	}
	saves := pub.Stats()
	d.p("saved %d aggregates in %v; notices published %d, dropped %d",
		len(all), time.Since(saveStart).Round(time.Millisecond), saves.Published, saves.Dropped)

	// Wait until every aggregate has the snapshot its policy asks for.
	settled := func(t tracked, head, snap int64) bool {
		if t.typ == exampledomain.OrderType {
			if head >= 3 { // OrderPaid (v3) and OrderShipped (v4) are milestones
				return snap == head
			}
			return snap == 0
		}
		if head < threshold {
			return snap == 0
		}
		return snap > 0 && head-snap < threshold
	}
	type result struct {
		tracked
		head, snap int64
	}
	results := make([]result, len(all))
	for i, t := range all {
		head, err := d.in.store.StreamVersion(ctx, t.typ, t.id)
		if err != nil {
			return err
		}
		results[i] = result{tracked: t, head: head}
	}
	waitStart := time.Now()
	deadline := waitStart.Add(20 * time.Second)
	for {
		done := true
		for i := range results {
			s, err := d.in.store.GetSnapshot(ctx, results[i].typ, results[i].id)
			if err != nil {
				return err
			}
			results[i].snap = 0
			if s != nil {
				results[i].snap = s.Version
			}
			done = done && settled(results[i].tracked, results[i].head, results[i].snap)
		}
		if done {
			d.p("every snapshot the policy asks for was in place %v after the last save", time.Since(waitStart).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			d.p("after 20s some snapshots are still missing (see below)")
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\ntype\taggregate\thead\tsnapshot\tevents behind")
	for _, r := range results {
		snap := "none"
		if r.snap > 0 {
			snap = fmt.Sprintf("v%d", r.snap)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\n", r.typ, r.id.String()[:8], r.head, snap, r.head-r.snap)
	}
	_ = tw.Flush()
	d.p("\naccounts below %d events have no snapshot (not due); orders snapshot when paid or shipped.", threshold)
	d.p("a later save that crosses the threshold again moves the snapshot forward.")
	return nil
}
