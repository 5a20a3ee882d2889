package snapshotter

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
)

// The summary reports what happened since the last line, with the lag's
// quantiles over those snapshots only, and logs nothing for an interval
// without work.
func TestLogSummary(t *testing.T) {
	var buf bytes.Buffer
	cfg := DefaultConfig()
	store := memstore.New()
	cfg.Store = store
	cfg.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
	w, err := New(cfg, For[exampledomain.Account](exampledomain.NewRegistry(), eventsource.DefaultPolicy()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	start := time.Now()
	w.sum.last.at = start
	for i := 1; i <= 100; i++ {
		w.sum.written.Add(1)
		w.sum.lag.record(float64(i) / 1000) // 1ms .. 100ms
	}
	w.sum.swept.Add(2)
	w.logSummary(context.Background(), start.Add(30*time.Second))
	w.logSummary(context.Background(), start.Add(60*time.Second)) // nothing since: no line
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1:\n%s", len(lines), buf.String())
	}
	var l map[string]any
	if err := json.Unmarshal(lines[0], &l); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"msg": "snapshotter summary", "level": "INFO", "interval_seconds": 30.0, "notices": 0.0,
		"snapshots_written": 100.0, "swept": 2.0, "terminated": 0.0, "lag_p50_seconds": 0.05, "lag_p99_seconds": 0.099}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, l[k], v, lines[0])
		}
	}
	// The next line counts only what came after.
	buf.Reset()
	w.sum.written.Add(1)
	w.sum.lag.record(0.5)
	w.logSummary(context.Background(), start.Add(90*time.Second))
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &l); err != nil {
		t.Fatal(err)
	}
	if l["snapshots_written"] != 1.0 || l["lag_p99_seconds"] != 0.5 || l["interval_seconds"] != 30.0 {
		t.Errorf("second line %s: want 1 snapshot, lag p99 0.5s over 30s", buf.String())
	}
}
