package natsnotice_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/cputime"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchIDs are the aggregates the benchmarks notify about; versions keep
// every message id unique.
var benchIDs = func() []uuid.UUID {
	ids := make([]uuid.UUID, 1024)
	for i := range ids {
		ids[i] = uuid.New()
	}
	return ids
}()

var benchVersion atomic.Int64

func benchNotify(b *testing.B, p *natsnotice.Publisher, ctx context.Context) {
	v := benchVersion.Add(1)
	if err := p.Notify(ctx, appended("Account", benchIDs[v%int64(len(benchIDs))], v, v, "MoneyDeposited")); err != nil {
		b.Fatalf("Notify: %v", err)
	}
}

func benchFlush(b *testing.B, p *natsnotice.Publisher) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		b.Fatalf("Flush: %v (stats %+v)", err, p.Stats())
	}
}

// BenchmarkNotify measures the publisher against an embedded server:
//
//   - enqueue: the time a save spends on its notice (ns/op) while the
//     sender publishes concurrently on the same two cores (the buffer is
//     large enough that nothing is dropped);
//   - enqueue/sender-idle: Notify's own cost, with the sender blocked
//     (NATS down), so nothing is woken;
//   - enqueue/paced: one Notify every ~200µs (the sleep often takes
//     longer), like one goroutine saving to a database, with linger 0
//     (the sender has gone to sleep before each notice), 1ms and 5ms, and
//     about one aggregate saved again and again, without and with
//     coalescing (notify-p50-ns is the save's cost; cpu-µs/notice is the
//     whole process's CPU per notice, embedded server included);
//   - end-to-end: Notify b.N notices and Flush until JetStream acknowledged
//     them all (notices/s), from one goroutine or from parallel savers, and
//     with different in-flight limits.
func BenchmarkNotify(b *testing.B) {
	ctx := context.Background()
	b.Run("enqueue", func(b *testing.B) {
		e := newEnv(b)
		p := e.publisher(natsnotice.WithBufferSize(min(max(b.N, 1024), natsnotice.MaxBufferSize)))
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			benchNotify(b, p, ctx)
		}
		b.StopTimer()
		benchFlush(b, p)
		if st := p.Stats(); st.Dropped != 0 {
			b.Fatalf("dropped: %+v", st)
		}
	})
	b.Run("enqueue/sender-idle", func(b *testing.B) {
		// NATS down and one publish in flight that never times out: the
		// sender idles, so this is Notify's own CPU cost.
		e := newEnv(b)
		p := e.publisher(natsnotice.WithBufferSize(min(max(b.N+1, 1024), natsnotice.MaxBufferSize)),
			natsnotice.WithMaxInFlight(1), natsnotice.WithPublishTimeout(time.Hour))
		natstestShutdown(e)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			benchNotify(b, p, ctx)
		}
		b.StopTimer()
		closeCtx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer cancel()
		_ = p.Close(closeCtx) // drops what NATS never got
	})
	for _, c := range []struct {
		name string
		opts []natsnotice.PublisherOption
		one  bool // every notice about one aggregate, the next versions each time
	}{
		{"linger=0s", []natsnotice.PublisherOption{natsnotice.WithLinger(0)}, false},
		{"linger=1ms", []natsnotice.PublisherOption{natsnotice.WithLinger(time.Millisecond)}, false},
		{"linger=5ms", []natsnotice.PublisherOption{natsnotice.WithLinger(5 * time.Millisecond)}, false},
		{"one-aggregate/linger=5ms/no-coalescing", []natsnotice.PublisherOption{natsnotice.WithLinger(5 * time.Millisecond), natsnotice.WithCoalescing(false)}, true},
		{"one-aggregate/linger=5ms/coalescing", []natsnotice.PublisherOption{natsnotice.WithLinger(5 * time.Millisecond), natsnotice.WithCoalescing(true)}, true},
	} {
		b.Run("enqueue/paced/"+c.name, func(b *testing.B) {
			e := newEnv(b)
			p := e.publisher(c.opts...)
			id := uuid.New()
			took := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cputime.Process()
			for i := range b.N {
				t := time.Now()
				if c.one {
					if err := p.Notify(ctx, appended("Account", id, int64(i+1), int64(i+1), "MoneyDeposited")); err != nil {
						b.Fatalf("Notify: %v", err)
					}
				} else {
					benchNotify(b, p, ctx)
				}
				took = append(took, time.Since(t))
				time.Sleep(200 * time.Microsecond)
			}
			benchFlush(b, p)
			cpu = cputime.Process() - cpu
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "notify-p50-ns")
			b.ReportMetric(float64(took[len(took)*9/10].Nanoseconds()), "notify-p90-ns")
			b.ReportMetric(cpu.Seconds()*1e6/float64(b.N), "cpu-µs/notice")
			b.ReportMetric(float64(b.N)/float64(max(b.N-int(p.Stats().Coalesced), 1)), "notices/msg")
		})
	}
	for _, inFlight := range []int{64, 256, natsnotice.DefaultMaxInFlight, 4096} {
		b.Run("end-to-end/in-flight="+strconv.Itoa(inFlight), func(b *testing.B) {
			e := newEnv(b)
			p := e.publisher(natsnotice.WithMaxInFlight(inFlight),
				natsnotice.WithBufferSize(min(max(b.N, 1024), natsnotice.MaxBufferSize)))
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu := time.Now(), cputime.Process()
			for range b.N {
				benchNotify(b, p, ctx)
			}
			benchFlush(b, p)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notices/s")
			b.ReportMetric((cputime.Process()-cpu).Seconds()*1e6/float64(b.N), "cpu-µs/notice")
		})
	}
	b.Run("end-to-end/parallel-savers", func(b *testing.B) {
		e := newEnv(b)
		p := e.publisher(natsnotice.WithBufferSize(min(max(b.N, 1024), natsnotice.MaxBufferSize)))
		b.ReportAllocs()
		b.SetParallelism(4)
		b.ResetTimer()
		start, cpu := time.Now(), cputime.Process()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				benchNotify(b, p, ctx)
			}
		})
		benchFlush(b, p)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notices/s")
		b.ReportMetric((cputime.Process()-cpu).Seconds()*1e6/float64(b.N), "cpu-µs/notice")
	})
}

// BenchmarkJetStreamBaseline publishes notice-sized messages straight
// through jetstream, for comparison with BenchmarkNotify: synchronous
// PublishMsg from a few or many goroutines, and PublishMsgAsync with 1024
// in flight. It is how the publisher's design was chosen.
func BenchmarkJetStreamBaseline(b *testing.B) {
	data, err := natsnotice.FromAppended(appended("Account", testID, 1, 1, "MoneyDeposited")).Encode()
	if err != nil {
		b.Fatal(err)
	}
	msg := func(e *env, i int64) *nats.Msg {
		m := nats.NewMsg(natsnotice.Subject(e.cfg.SubjectPrefix, "Account", benchIDs[i%int64(len(benchIDs))]))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, "Account/x/"+strconv.FormatInt(i, 10))
		return m
	}
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("sync/goroutines=%d", par*2), func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			var n atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.js.PublishMsg(ctx, msg(e, n.Add(1))); err != nil {
						b.Errorf("publish: %v", err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
	b.Run("async/in-flight=1024", func(b *testing.B) {
		e := newEnv(b)
		js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(1024))
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			if _, err := js.PublishMsgAsync(msg(e, int64(i))); err != nil {
				b.Fatalf("publish: %v", err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("acks did not arrive")
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		b.StopTimer()
		js.CleanupPublisher()
	})
}

func natstestShutdown(e *env) { natstest.Shutdown(e.srv) }

// BenchmarkSaveMemstore is the save step of make bench in miniature: one
// goroutine saving one event at a time to one aggregate on memstore,
// without snapshotting and in the external mode with this publisher
// (default options, so the notices of consecutive saves coalesce). The
// difference is what the external mode costs a save whose own cost is a
// couple of microseconds.
func BenchmarkSaveMemstore(b *testing.B) {
	for _, mode := range []string{"none", "external"} {
		b.Run(mode, func(b *testing.B) {
			opts := []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeOff)}
			var p *natsnotice.Publisher
			if mode == "external" {
				p = newEnv(b).publisher()
				opts = []eventsource.Option{eventsource.WithSnapshotMode(eventsource.ModeExternal), eventsource.WithAppendNotifier(p)}
			}
			repo, err := eventsource.NewRepository[ticket](memstore.New(), ticketRegistry(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			tk := repo.New(uuid.New())
			tk.Raise(ticketOpened{})
			if err := repo.Save(ctx, tk); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				tk.Raise(ticketNoted{Text: "n"})
				if err := repo.Save(ctx, tk); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if p != nil {
				benchFlush(b, p)
				if st := p.Stats(); st.Dropped != 0 {
					b.Fatalf("dropped: %+v", st)
				}
			}
			if err := repo.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}
