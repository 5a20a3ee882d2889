package snapshotter

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/logattr"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
)

// Bucket boundaries, in seconds, of the worker's duration histograms.
// OpenTelemetry's default boundaries (0, 5, 10 ... 10000) are meant for
// milliseconds: with them every observation in seconds lands in the first
// bucket.
var (
	// rebuildBuckets (evsnap.worker.rebuild.duration): 100 µs to 10 s,
	// from a rebuild that replays a few events onto a snapshot to one that
	// replays a long stream from PostgreSQL.
	rebuildBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// lagBuckets (evsnap.worker.snapshot.lag): 1 ms to 10 min, from a
	// worker keeping up (the publisher's linger plus a rebuild) to notices
	// retried through an outage.
	lagBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// The worker's gauges. The backlog is read from JetStream's consumer info
// by the worker's own goroutine every Config.BacklogInterval and cached;
// the gauges' callback only reads the cache. A callback that asked
// JetStream itself would make every scrape (from every Prometheus, at its
// own rate) a JetStream API request on every replica, and would block the
// scrape for as long as NATS takes to answer, or to time out in an
// outage. A cached value older than three intervals is not reported, so
// the series goes absent instead of showing a stale figure.
const (
	metricPending    = "evsnap.worker.consumer.pending"
	metricAckPending = "evsnap.worker.consumer.ack_pending"
	metricBehind     = "evsnap.worker.aggregate.behind"
	metricReady      = "evsnap.worker.ready"
	metricLeader     = "evsnap.worker.sweep.leader"
)

// backlog is the last sample of the durable consumer's counts.
type backlog struct {
	pending, ackPending atomic.Int64
	at                  atomic.Int64 // unix ns of the sample; 0: none
}

// initGauges registers the backlog, behind and ready gauges and their
// callback.
func (w *Worker) initGauges(m metric.Meter) error {
	pending, err := m.Int64ObservableGauge(metricPending, metric.WithUnit("{notice}"),
		metric.WithDescription("Notices in the stream the durable consumer has not delivered yet (JetStream's num_pending), sampled every backlog interval."))
	if err != nil {
		return err
	}
	ackPending, err := m.Int64ObservableGauge(metricAckPending, metric.WithUnit("{notice}"),
		metric.WithDescription("Notices delivered to the workers and not yet acknowledged (JetStream's num_ack_pending), sampled every backlog interval."))
	if err != nil {
		return err
	}
	behind, err := m.Int64ObservableGauge(metricBehind, metric.WithUnit("{aggregate}"),
		metric.WithDescription("Aggregates the last reconciliation sweep pass found at least the threshold behind, among those it examined (at most the sweep batch), by type."))
	if err != nil {
		return err
	}
	ready, err := m.Int64ObservableGauge(metricReady,
		metric.WithDescription("1 while the worker is ready (what /readyz answers 200 for: connected, bound to the consumer, pulling), else 0."))
	if err != nil {
		return err
	}
	leader, err := m.Int64ObservableGauge(metricLeader,
		metric.WithDescription("1 while this replica holds the sweep lease (it runs the fleet's reconciliation sweep), else 0; absent when the lease is off."))
	if err != nil {
		return err
	}
	w.gauges, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(ready, boolInt(w.Ready()))
		if w.lease != nil {
			o.ObserveInt64(leader, boolInt(w.lease.leader.Load()))
		}
		if at := w.backlog.at.Load(); at != 0 && time.Since(time.Unix(0, at)) <= 3*w.cfg.BacklogInterval {
			o.ObserveInt64(pending, w.backlog.pending.Load())
			o.ObserveInt64(ackPending, w.backlog.ackPending.Load())
		}
		for _, t := range w.targets {
			if n := t.behind.Load(); n >= 0 {
				o.ObserveInt64(behind, n, metric.WithAttributes(attrType.String(t.name)))
			}
		}
		return nil
	}, pending, ackPending, behind, ready, leader)
	return err
}

// sampleBacklog reads cons's info now and every BacklogInterval until ctx
// ends, and caches its pending and ack-pending counts for the gauges.
func (w *Worker) sampleBacklog(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(w.cfg.BacklogInterval)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, min(w.cfg.BacklogInterval, 5*time.Second))
		info, err := cons.Info(ictx)
		cancel()
		if err == nil {
			w.backlog.pending.Store(int64(info.NumPending))
			w.backlog.ackPending.Store(int64(info.NumAckPending))
			w.backlog.at.Store(time.Now().UnixNano())
		} else if ctx.Err() == nil {
			w.log.Debug("consumer info for the backlog gauges failed", "consumer", w.cfg.Consumer, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lagReservoir keeps a uniform sample (reservoir sampling) of the lags
// observed since it was last taken, for the summary line's quantiles: a
// bounded cost whatever the rate.
type lagReservoir struct {
	mu   sync.Mutex
	seen int64
	vals []float64
}

const reservoirSize = 1024

func (r *lagReservoir) record(seconds float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen++
	if len(r.vals) < reservoirSize {
		r.vals = append(r.vals, seconds)
		return
	}
	if j := rand.Int64N(r.seen); j < reservoirSize {
		r.vals[j] = seconds
	}
}

// take returns the sample and starts a new one.
func (r *lagReservoir) take() []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	vals := r.vals
	r.vals, r.seen = nil, 0
	return vals
}

// quantile returns the q-quantile (nearest rank) of sorted.
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// summary is what the periodic summary line reports: counts since the
// last line.
type summary struct {
	written, swept atomic.Int64
	lag            lagReservoir

	// what the last line reported, to log differences
	last struct {
		received, acked, naked, terminated, written, swept int64
		at                                                 time.Time
	}
}

// summaryLoop logs a summary line every SummaryInterval until ctx ends.
func (w *Worker) summaryLoop(ctx context.Context) {
	w.sum.last.at = time.Now()
	t := time.NewTicker(w.cfg.SummaryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.logSummary(ctx, now)
		}
	}
}

// logSummary logs, at info, one line with what the worker did since the
// last one: notices taken and how they were settled, snapshots written
// (from notices, and by the sweep), and the snapshot lag's p50 and p99.
// An interval without any work logs nothing: an idle worker stays quiet
// (its readiness and the consumer gauges say it is alive).
func (w *Worker) logSummary(ctx context.Context, now time.Time) {
	var c struct{ received, acked, naked, terminated int64 }
	if l := w.loop.Load(); l != nil {
		n := l.Counts()
		c.received, c.acked, c.naked, c.terminated = n.Received, n.Acked, n.Naked, n.Terminated
	}
	written, swept := w.sum.written.Load(), w.sum.swept.Load()
	last := &w.sum.last
	d := struct{ received, acked, naked, terminated, written, swept int64 }{
		c.received - last.received, c.acked - last.acked, c.naked - last.naked, c.terminated - last.terminated,
		written - last.written, swept - last.swept,
	}
	interval := now.Sub(last.at)
	last.received, last.acked, last.naked, last.terminated, last.written, last.swept = c.received, c.acked, c.naked, c.terminated, written, swept
	last.at = now
	lags := w.sum.lag.take()
	if d.received == 0 && d.written == 0 && d.terminated == 0 && d.naked == 0 {
		return
	}
	attrs := []slog.Attr{
		logattr.Seconds("interval", interval),
		slog.Int64("notices", d.received),
		slog.Int64("acked", d.acked),
		slog.Int64("retried", d.naked),
		slog.Int64("terminated", d.terminated),
		slog.Int64("snapshots_written", d.written),
		slog.Int64("swept", d.swept),
	}
	if len(lags) > 0 {
		slices.Sort(lags)
		attrs = append(attrs,
			logattr.Seconds("lag_p50", time.Duration(quantile(lags, 0.5)*float64(time.Second))),
			logattr.Seconds("lag_p99", time.Duration(quantile(lags, 0.99)*float64(time.Second))))
	}
	w.log.LogAttrs(ctx, slog.LevelInfo, "snapshotter summary", attrs...)
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
