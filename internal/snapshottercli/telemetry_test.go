package snapshottercli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
)

// otlpReceiver is an OTLP/HTTP collector that counts the requests to each
// path (/v1/traces, /v1/metrics).
type otlpReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]int
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{got: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.got[req.URL.Path]++
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) requests(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[path]
}

// otelEnv sets the OTEL_* variables the telemetry reads to env's values,
// and every other one to "" (unset, for autoexport and the exporters).
func otelEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_METRICS_PRODUCERS",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} {
		t.Setenv(k, env[k])
	}
}

// exercise records a span and a counter through tel, runs before (if not
// nil) and shuts tel down, which flushes what is exported.
func exercise(t *testing.T, tel *Telemetry, before func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, span := tel.TracerProvider.Tracer("test").Start(ctx, "work")
	span.End()
	c, err := tel.MeterProvider.Meter("test").Int64Counter("evsnap_test_total")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(ctx, 1)
	if before != nil {
		before()
	}
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// With no OTEL_* variable nothing is exported and tracing is a no-op
// (autoexport on its own would export OTLP to localhost), while the
// Prometheus registry has the metrics.
func TestTelemetryIsOffByDefault(t *testing.T) {
	otelEnv(t, nil)
	tel, err := NewTelemetry(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tel.TracerProvider.(noop.TracerProvider); !ok {
		t.Errorf("tracing is on with no OTEL_* variable: %T", tel.TracerProvider)
	}
	var names []string
	exercise(t, tel, func() {
		families, err := tel.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			names = append(names, f.GetName())
		}
	})
	if all := strings.Join(names, " "); !strings.Contains(all, "evsnap_test_total") || !strings.Contains(all, "go_goroutines") {
		t.Errorf("the registry lacks the counter or the Go collector: %s", all)
	}
}

func TestTelemetryFollowsTheOTELEnv(t *testing.T) {
	for _, c := range []struct {
		name            string
		env             map[string]string // ENDPOINT is replaced by the receiver's URL
		traces, metrics bool
	}{
		{"an OTLP endpoint turns spans on", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "ENDPOINT"}, true, false},
		{"a traces endpoint turns spans on", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ENDPOINT/v1/traces"}, true, false},
		{"none wins over an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "ENDPOINT", "OTEL_TRACES_EXPORTER": "none"}, false, false},
		{"metrics pushed when asked", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "ENDPOINT", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "otlp"}, false, true},
		{"both", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "ENDPOINT", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp"}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newOTLPReceiver(t)
			env := map[string]string{}
			for k, v := range c.env {
				env[k] = strings.Replace(v, "ENDPOINT", r.srv.URL, 1)
			}
			otelEnv(t, env)
			tel, err := NewTelemetry(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			exercise(t, tel, nil)
			if got := r.requests("/v1/traces") > 0; got != c.traces {
				t.Errorf("spans exported: %v, want %v", got, c.traces)
			}
			if got := r.requests("/v1/metrics") > 0; got != c.metrics {
				t.Errorf("metrics pushed: %v, want %v", got, c.metrics)
			}
		})
	}
}

// A value autoexport does not know is an error naming the variable and
// the value, not a silent default.
func TestTelemetryRejectsUnknownExporters(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"} {
		otelEnv(t, map[string]string{k: "carrier-pigeon"})
		tel, err := NewTelemetry(context.Background())
		if err == nil {
			_ = tel.Shutdown(context.Background())
			t.Fatalf("%s=carrier-pigeon: no error", k)
		}
		if !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), "carrier-pigeon") {
			t.Errorf("%s=carrier-pigeon: error %q does not name the variable and its value", k, err)
		}
	}
}
