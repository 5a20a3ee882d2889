package eventsource_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
)

// buildAccount writes the tutorial's workload into r: an account opened,
// then alternating deposits and withdrawals, saved 100 events at a time,
// n events in all. If snapshotAt > 0 a snapshot is created at that version.
func buildAccount(tb testing.TB, r *accountRepo, n, snapshotAt int) uuid.UUID {
	tb.Helper()
	ctx := context.Background()
	a := r.New(uuid.New())
	if err := a.Open("Bench", 1000); err != nil {
		tb.Fatal(err)
	}
	for v := 2; v <= n; v++ {
		if v%2 == 0 {
			_ = a.Deposit(10)
		} else {
			_ = a.Withdraw(5)
		}
		if v%100 == 0 || v == n || v == snapshotAt {
			if err := r.Save(ctx, a); err != nil {
				tb.Fatal(err)
			}
		}
		if v == snapshotAt {
			if _, err := r.CreateSnapshot(ctx, a); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if n == 1 {
		if err := r.Save(ctx, a); err != nil {
			tb.Fatal(err)
		}
	}
	if snapshotAt == n && n == 1 {
		if _, err := r.CreateSnapshot(ctx, a); err != nil {
			tb.Fatal(err)
		}
	}
	return a.ID()
}

// BenchmarkLoad measures Repository.Load on memstore for the tutorial's
// table: 100 to 100,000 events, without a snapshot, with one at the head
// (what a threshold of 100 with saves of 100 leaves) and with one 50
// events behind.
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{100, 1_000, 10_000, 100_000} {
		for _, c := range []struct {
			name   string
			snapAt int
		}{{"none", 0}, {"head", n}, {"behind50", n - 50}} {
			b.Run(fmt.Sprintf("memstore/events=%d/snapshot=%s", n, c.name), func(b *testing.B) {
				store := memstore.New()
				opts := []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeManual)}
				r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), opts...)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close(context.Background())
				id := buildAccount(b, r, n, c.snapAt)
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				var replayed int64
				for b.Loop() {
					a, err := r.Load(ctx, id)
					if err != nil {
						b.Fatal(err)
					}
					_, replayed = a.LoadedFromSnapshot()
				}
				b.ReportMetric(float64(replayed), "events_replayed")
				if replayed > 0 {
					perEvent := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(replayed)
					b.ReportMetric(perEvent, "ns/event")
					b.ReportMetric(1e9/perEvent, "events/s")
				}
			})
		}
	}
}

// BenchmarkSave measures Repository.Save of one event on memstore per mode.
func BenchmarkSave(b *testing.B) {
	for _, mode := range []string{"none", "sync", "background"} {
		b.Run("memstore/mode="+mode, func(b *testing.B) {
			store := memstore.New()
			opts := []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeOff)}
			if mode != "none" {
				opts = []eventsource.Option{eventsource.WithSnapshotMode(eventsource.SnapshotMode(mode)), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100})}
			}
			r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(context.Background())
			ctx := context.Background()
			a := r.New(uuid.New())
			_ = a.Open("Bench", 0)
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Deposit(1)
				if err := r.Save(ctx, a); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := r.AwaitPendingSnapshots(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkLoadTrigger measures what WithLoadTrigger adds to a load that
// does not ask: off, on but below its count (idle), and on and past it
// but held back by its interval (limited: the aggregate asked on the
// first load). Compare with BenchmarkLoad's same rows.
func BenchmarkLoadTrigger(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []eventsource.Option
	}{
		{"off", []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync)}},
		{"idle", []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithLoadTrigger(1 << 30)}},
		{"limited", []eventsource.Option{eventsource.WithAppendNotifier(&requestingNotifier{}), eventsource.WithLoadTrigger(1), eventsource.WithLoadTriggerInterval(time.Hour)}},
	} {
		for _, snap := range []string{"head", "behind50"} {
			b.Run(fmt.Sprintf("memstore/events=1000/snapshot=%s/trigger=%s", snap, c.name), func(b *testing.B) {
				store := memstore.New()
				writer, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeManual))
				if err != nil {
					b.Fatal(err)
				}
				defer writer.Close(context.Background())
				at := 1000
				if snap == "behind50" {
					at = 950
				}
				id := buildAccount(b, writer, 1000, at)
				r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), c.opts...)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close(context.Background())
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if _, err := r.Load(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkLoadTriggerHook measures the load path's hook alone, on an
// aggregate loaded by replaying 20 events: without a trigger, with one
// whose count the load did not reach (idle), and with one it reached but
// whose interval holds it back (limited). A whole load is noisier than
// what the hook costs.
func BenchmarkLoadTriggerHook(b *testing.B) {
	store := memstore.New()
	writer, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		b.Fatal(err)
	}
	defer writer.Close(context.Background())
	id := buildAccount(b, writer, 20, 0)
	for _, c := range []struct {
		name string
		opts []eventsource.Option
	}{
		{"off", nil},
		{"idle", []eventsource.Option{eventsource.WithLoadTrigger(21)}},
		{"limited", []eventsource.Option{eventsource.WithAppendNotifier(&requestingNotifier{}), eventsource.WithLoadTrigger(20), eventsource.WithLoadTriggerInterval(time.Hour)}},
	} {
		b.Run("trigger="+c.name, func(b *testing.B) {
			r, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(context.Background())
			ctx := context.Background()
			a, err := r.Load(ctx, id) // limited: this load asks
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				eventsource.AskIfReplayedEnough(ctx, r, a)
			}
		})
	}
}
