package snapshotter_test

// Tests of what an operator sees: readiness, logs and gauges.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/internal/tooling/syncbuf"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// logBuffer collects JSON log lines from any goroutine.
type logBuffer struct{ syncbuf.Buffer }

// lines returns the JSON lines whose msg contains msg.
func (b *logBuffer) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		if m, _ := line["msg"].(string); strings.Contains(m, msg) {
			out = append(out, line)
		}
	}
	return out
}

func jsonLogger(b *logBuffer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: level}))
}

// A notice judged permanent (malformed, of an unknown aggregate type, or
// for an aggregate that does not exist) is terminated on its first
// delivery, with the default MaxDeliveries, and logged exactly once with
// its stream sequence, message id and reason; a good notice published
// after them is handled.
func TestPermanentFailuresTerminatedOnFirstDelivery(t *testing.T) {
	forEachSetup(t, testPermanentFailuresTerminatedOnFirstDelivery)
}

func testPermanentFailuresTerminatedOnFirstDelivery(t *testing.T, e *env) {
	var logs logBuffer
	e.start(e.worker(5, func(c *snapshotter.Config) { c.Logger = jsonLogger(&logs, slog.LevelInfo) }))
	ctx := context.Background()
	missing := uuid.New()
	notice := func(typ string, id uuid.UUID) []byte {
		data, err := natsnotice.Notice{Version: 1, AggregateType: typ, AggregateID: id, FirstVersion: 1, LastVersion: 10, CommittedAt: time.Now()}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	poison := []struct {
		msgID, subject string
		data           []byte
		reason         string
	}{
		{"poison-malformed", e.prefix + ".Account." + missing.String(), []byte(`{"v":1,"aggregate_type":"Account"`), "malformed notice"},
		{"poison-unknown-type", e.prefix + ".Invoice." + missing.String(), notice("Invoice", missing), "unknown aggregate type"},
		{"poison-not-found", e.prefix + ".Account." + missing.String(), notice(exampledomain.AccountType, missing), "not found"},
	}
	for _, p := range poison {
		m := &nats.Msg{Subject: p.subject, Data: p.data, Header: nats.Header{}}
		m.Header.Set(natsnotice.HeaderMsgID, p.msgID)
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	good := uuid.New()
	e.save(good, 5)
	waitFor(t, 10*time.Second, "the good notice handled despite the poison", func() bool { return e.snapshotVersion(good) == 5 })
	waitFor(t, 10*time.Second, "every notice settled", e.consumerIdle("snapshotter"))

	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := e.js.Consumer(cctx, e.stream, "snapshotter")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.Delivered.Stream != 4 {
		t.Errorf("consumer: %d redelivered, delivered up to stream seq %d; want none redelivered, 4 delivered", info.NumRedelivered, info.Delivered.Stream)
	}
	terminated := logs.lines(t, "notice terminated")
	for i, p := range poison {
		var mine []map[string]any
		for _, l := range terminated {
			if l["msg_id"] == p.msgID {
				mine = append(mine, l)
			}
		}
		if len(mine) != 1 {
			t.Errorf("%s: %d termination lines, want 1; logs:\n%s", p.msgID, len(mine), logs.String())
			continue
		}
		l := mine[0]
		if l["level"] != "WARN" || l["stream_seq"] != float64(i+1) || l["deliveries"] != float64(1) ||
			!strings.Contains(l["reason"].(string), p.reason) {
			t.Errorf("%s: termination line %v; want level WARN, stream_seq %d, deliveries 1, a reason with %q", p.msgID, l, i+1, p.reason)
		}
	}
	if len(terminated) != len(poison) {
		t.Errorf("%d termination lines, want %d; logs:\n%s", len(terminated), len(poison), logs.String())
	}
	if retried := logs.lines(t, "retrying later"); len(retried) != 0 {
		t.Errorf("permanent failures were retried: %v", retried)
	}
}

// get returns the status and body of url's answer (0 when it cannot be
// reached).
func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitStatus(t *testing.T, url string, want int, within time.Duration) string {
	t.Helper()
	var code int
	var body string
	deadline := time.Now().Add(within)
	for code, body = get(url); code != want; code, body = get(url) {
		if time.Now().After(deadline) {
			t.Fatalf("%s answered %d %q for %v, want %d", url, code, body, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return body
}

// /readyz follows NATS: 503 soon after the server stops under a running
// worker, 200 again once it is back and the worker's pull is answered; a
// worker started during the outage is not ready either.
func TestReadyzFollowsNATSOutage(t *testing.T) {
	srv := natstest.RunServer(t)
	e := newEnv(t, srv.ClientURL(), memstore.New(), false)
	w := e.worker(5, nil)
	e.start(w)
	hs := httptest.NewServer(w.HealthHandler())
	defer hs.Close()
	readyz := hs.URL + "/readyz"
	waitStatus(t, readyz, http.StatusOK, 10*time.Second)

	natstest.Shutdown(srv)
	body := waitStatus(t, readyz, http.StatusServiceUnavailable, 10*time.Second)
	if !strings.Contains(body, "NATS server unreachable") {
		t.Errorf("/readyz during the outage: %q, want it to say the NATS server is unreachable", body)
	}
	if code, _ := get(hs.URL + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during the outage: %d, want 200 (the process is alive)", code)
	}

	// A second worker, started during the outage.
	nc2, err := nats.Connect(srv.ClientURL(), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2 := natstest.JetStream(t, nc2)
	w2 := e.worker(5, func(c *snapshotter.Config) { c.JetStream = js2 })
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- w2.Run(ctx2) }()
	hs2 := httptest.NewServer(w2.HealthHandler())
	defer hs2.Close()
	if code, body := get(hs2.URL + "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("a worker started during the outage: /readyz %d %q, want 503", code, body)
	}
	cancel2()
	if err := <-done2; err != nil {
		t.Errorf("second worker's Run = %v", err)
	}

	srv = natstest.Restart(t, srv)
	waitStatus(t, readyz, http.StatusOK, 30*time.Second)
	// And it consumes again.
	id := uuid.New()
	e.save(id, 5)
	waitFor(t, 20*time.Second, "a snapshot after the outage", func() bool { return e.snapshotVersion(id) == 5 })
	_ = srv
}

// A worker started while no NATS server answers says so at warn, naming
// the server (without its password), with the retry delay as a number of
// seconds.
func TestNATSUnreachableIsLoggedWithTheURL(t *testing.T) {
	srv := natstest.RunServer(t)
	url := srv.ClientURL()
	natstest.Shutdown(srv)
	withCreds := strings.Replace(url, "nats://", "nats://evsnap:s3cret@", 1)
	nc, err := nats.Connect(withCreds, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js := natstest.JetStream(t, nc)
	var logs logBuffer
	cfg := snapshotter.DefaultConfig()
	store := memstore.New()
	cfg.Store, cfg.JetStream = store, js
	cfg.SweepInterval = 0
	cfg.Logger = jsonLogger(&logs, slog.LevelInfo)
	w, err := snapshotter.New(cfg, snapshotter.For[exampledomain.Account](exampledomain.NewRegistry(), eventsource.DefaultPolicy()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, 10*time.Second, "a NATS-unreachable line", func() bool { return len(logs.lines(t, "NATS server unreachable")) > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	l := logs.lines(t, "NATS server unreachable")[0]
	host := strings.TrimPrefix(url, "nats://")
	if s, _ := l["nats"].(string); l["level"] != "WARN" || !strings.Contains(s, host) || strings.Contains(s, "s3cret") {
		t.Errorf("line %v: want level WARN and the server %s named without the password", l, host)
	}
	if v, ok := l["retry_in_seconds"].(float64); !ok || v <= 0 || v > 60 {
		t.Errorf("line %v: want retry_in_seconds as a number of seconds", l)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the password reached the logs:\n%s", logs.String())
	}
}

// promScrape serves mp's metrics through the Prometheus exporter the
// binary uses and returns the provider and a scrape of /metrics.
func promScrape(t *testing.T) (*sdkmetric.MeterProvider, func() string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	hs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(hs.Close)
	return mp, func() string {
		_, body := get(hs.URL + "/metrics")
		return body
	}
}

// sample returns the value of metric name's series on /metrics whose
// labels include every one of labels (such as `evsnap_aggregate_type="Account"`).
func sample(metrics, name string, labels ...string) (float64, bool) {
	for line := range strings.SplitSeq(metrics, "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(series, l)
		}
		if match {
			v, err := strconv.ParseFloat(value, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// With rebuilds held, ten notices for ten aggregates make a known
// backlog: the pending and ack-pending gauges on /metrics add up to ten
// and agree with the consumer's info. The sweep's count of aggregates past
// the threshold is exported per type.
func TestBacklogGauges(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	mp, scrape := promScrape(t)
	block := make(chan struct{})
	e.store.mu.Lock()
	e.store.block = block
	e.store.mu.Unlock()
	defer close(block)
	w := e.worker(1, func(c *snapshotter.Config) {
		c.MeterProvider = mp
		c.BacklogInterval = 50 * time.Millisecond
		c.BatchSize, c.Concurrency = 1, 1
	})
	e.start(w)
	for range 10 {
		e.save(uuid.New(), 1)
	}
	ctx := context.Background()
	if err := e.pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := e.js.Consumer(ctx, e.stream, "snapshotter")
	if err != nil {
		t.Fatal(err)
	}
	var pending, ackPending float64
	waitFor(t, 10*time.Second, "the gauges to show the backlog JetStream reports", func() bool {
		info, err := c.Info(ctx)
		if err != nil {
			return false
		}
		m := scrape()
		var ok1, ok2 bool
		pending, ok1 = sample(m, "evsnap_worker_consumer_pending")
		ackPending, ok2 = sample(m, "evsnap_worker_consumer_ack_pending")
		return ok1 && ok2 && pending+ackPending == 10 && ackPending >= 1 &&
			pending == float64(info.NumPending) && ackPending == float64(info.NumAckPending)
	})
	t.Logf("pending %v, ack pending %v", pending, ackPending)
	if r, ok := sample(scrape(), "evsnap_worker_ready"); !ok || r != 1 {
		t.Fatalf("evsnap_worker_ready = %v (reported %v) while the worker consumes; want 1", r, ok)
	}

	// Aggregates saved without notices, 3 past the sweep threshold (5).
	silent, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close(ctx)
	for i := range 4 {
		a := silent.New(uuid.New())
		_ = a.Open("behind", 0)
		for range 3 + i {
			_ = a.Deposit(1)
		}
		if err := silent.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	admin := e.worker(5, func(c *snapshotter.Config) { c.MeterProvider = mp; c.SweepRate = 1000; c.JetStream = nil })
	defer admin.Close(ctx)
	e.store.mu.Lock()
	e.store.block = nil
	e.store.mu.Unlock()
	if _, err := admin.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	m := scrape()
	if v, ok := sample(m, "evsnap_worker_aggregate_behind", `evsnap_aggregate_type="Account"`); !ok || v != 3 {
		t.Errorf("evsnap_worker_aggregate_behind for Account = %v (present %v), want the 3 silent aggregates past the threshold; /metrics:\n%s", v, ok, grepLines(m, "aggregates_behind"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// At info, a running worker logs a one-line summary of its work every
// SummaryInterval: notices, how they were settled, snapshots written and
// the lag's p50 and p99, durations as numbers of seconds.
func TestSummaryLine(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	var logs logBuffer
	e.start(e.worker(5, func(c *snapshotter.Config) {
		c.Logger = jsonLogger(&logs, slog.LevelInfo)
		c.SummaryInterval = 100 * time.Millisecond
	}))
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for _, id := range ids {
		e.save(id, 5)
	}
	waitFor(t, 10*time.Second, "every notice acked", e.consumerIdle("snapshotter"))
	var notices, written, acked float64
	var withLag map[string]any
	waitFor(t, 10*time.Second, "summary lines covering the three notices", func() bool {
		notices, written, acked, withLag = 0, 0, 0, nil
		for _, l := range logs.lines(t, "snapshotter summary") {
			if l["level"] != "INFO" {
				t.Fatalf("summary line at %v: %v", l["level"], l)
			}
			notices += l["notices"].(float64)
			written += l["snapshots_written"].(float64)
			acked += l["acked"].(float64)
			if _, ok := l["lag_p50_seconds"]; ok {
				withLag = l
			}
		}
		return notices == 3 && written == 3 && acked == 3
	})
	if withLag == nil {
		t.Fatalf("no summary line has the lag; logs:\n%s", logs.String())
	}
	p50, ok1 := withLag["lag_p50_seconds"].(float64)
	p99, ok2 := withLag["lag_p99_seconds"].(float64)
	iv, ok3 := withLag["interval_seconds"].(float64)
	if !ok1 || !ok2 || !ok3 || p50 <= 0 || p99 < p50 || p99 > 60 || iv <= 0 {
		t.Fatalf("summary line %v: want lag_p50_seconds <= lag_p99_seconds and interval_seconds as numbers of seconds", withLag)
	}
}
