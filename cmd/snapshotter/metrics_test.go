package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// scrape reads the samples of /metrics whose series starts with prefix
// (name and labels as Prometheus prints them), keyed by that series; nil
// while nothing listens on addr yet.
func scrape(t *testing.T, addr, prefix string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// bucket returns the cumulative count of histogram name's bucket le for
// aggregate type typ, and whether /metrics has that bucket at all.
func bucket(samples map[string]float64, name, typ, le string) (float64, bool) {
	for series, v := range samples {
		if strings.HasPrefix(series, name+"_bucket{") && strings.Contains(series, `evsnap_aggregate_type="`+typ+`"`) &&
			strings.Contains(series, `le="`+le+`"`) {
			return v, true
		}
	}
	return 0, false
}

// The binary's /metrics, from a worker that snapshotted one aggregate
// whose notice says it was committed 40s ago: the lag lands in the bucket
// of (30s, 60s], and the worker's loads in sub-second buckets, not all in
// OpenTelemetry's default first bucket (0, 5]; the snapshot write is
// labelled as external mode's, not manual.
func TestMetricsBucketsAndModeLabel(t *testing.T) {
	srv := natstest.RunServer(t)
	db := filepath.Join(t.TempDir(), "evsnap.db")
	stream := natstest.UniqueName(t, "EVSNAP_MET")
	prefix := "evsnapmet." + stream
	common := []string{"--sqlite-path", db, "--log-format", "text"}
	natsArgs := []string{"--nats-url", srv.ClientURL(), "--stream", stream, "--subject-prefix", prefix}
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if code := Main(ctx, append(append([]string{"migrate"}, common...), natsArgs...), &out, &errOut); code != 0 {
		t.Fatalf("migrate exit %d: %s%s", code, out.String(), errOut.String())
	}

	// An Account with 120 events (the default threshold is 100), saved
	// without a notice.
	store, err := sqlitestore.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	repo, err := eventsource.NewRepository[exampledomain.Account](store, exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close(ctx)
	id := uuid.New()
	a := repo.New(id)
	_ = a.Open("metrics", 0)
	for range 119 {
		_ = a.Deposit(1)
	}
	if err := repo.Save(ctx, a); err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var runErr bytes.Buffer
	go func() {
		done <- Main(rctx, append(append([]string{"run", "--metrics-addr", addr, "--sweep-interval", "0"}, common...), natsArgs...), io.Discard, &runErr)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not exit within 30s of cancellation")
		}
	}()

	// The notice, committed 40s ago as far as it says.
	nc := natstest.Connect(t, srv.ClientURL())
	js := natstest.JetStream(t, nc)
	data, err := natsnotice.Notice{Version: 1, AggregateType: exampledomain.AccountType, AggregateID: id,
		FirstVersion: 1, LastVersion: 120, EventTypes: []string{exampledomain.TypeMoneyDeposited},
		CommittedAt: time.Now().Add(-40 * time.Second)}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: prefix + ".Account." + id.String(), Data: data, Header: nats.Header{}}
	msg.Header.Set(natsnotice.HeaderMsgID, "Account/"+id.String()+"/120")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	const lag = "evsnap_worker_snapshot_lag_seconds"
	var samples map[string]float64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		samples = scrape(t, addr, "evsnap_")
		if n, _ := bucket(samples, lag, "Account", "+Inf"); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lag observed within 20s; logs:\n%s", runErr.String())
		}
	}
	in30, has30 := bucket(samples, lag, "Account", "30")
	in60, has60 := bucket(samples, lag, "Account", "60")
	if !has30 || !has60 || in30 != 0 || in60 != 1 {
		t.Errorf("a 40s lag: bucket le=30 %v (present %v), le=60 %v (present %v); want 0 and 1", in30, has30, in60, has60)
	}
	if _, ok := bucket(samples, lag, "Account", "0.001"); !ok {
		t.Errorf("the lag histogram has no 1ms bucket")
	}
	for _, h := range []string{"evsnap_load_duration_seconds", "evsnap_worker_rebuild_duration_seconds"} {
		total, _ := bucket(samples, h, "Account", "+Inf")
		sub, ok := bucket(samples, h, "Account", "1")
		if _, fine := bucket(samples, h, "Account", "0.0001"); total < 1 || !ok || !fine || sub != total {
			t.Errorf("%s: %v observations, %v of them at most 1s (bucket present %v, 100µs bucket present %v); want every one under 1s in second-scale buckets",
				h, total, sub, ok, fine)
		}
	}
	var external, manual float64
	for series, v := range samples {
		if strings.HasPrefix(series, "evsnap_snapshot_written_total{") {
			switch {
			case strings.Contains(series, `evsnap_snapshot_mode="external"`):
				external += v
			case strings.Contains(series, `evsnap_snapshot_mode="manual"`):
				manual += v
			}
		}
	}
	if external != 1 || manual != 0 {
		t.Errorf("evsnap_snapshot_written_total: mode external %v, manual %v; want the worker's write as external", external, manual)
	}
}
