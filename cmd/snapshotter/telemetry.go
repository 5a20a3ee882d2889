package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// telemetry is the OpenTelemetry SDK wiring of the binary: metrics through
// the Prometheus exporter (served on /metrics). The library packages only
// use the API.
type telemetry struct {
	meterProvider  metric.MeterProvider
	tracerProvider trace.TracerProvider
	registry       *prometheus.Registry
	shutdown       func(context.Context) error
}

func newTelemetry() (*telemetry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	tp, shutdownTraces, err := newTracerProvider()
	if err != nil {
		return nil, err
	}
	return &telemetry{
		meterProvider:  mp,
		tracerProvider: tp,
		registry:       reg,
		shutdown: func(ctx context.Context) error {
			return errors.Join(mp.Shutdown(ctx), shutdownTraces(ctx))
		},
	}, nil
}

// newTracerProvider returns a no-op provider; traces are exported when the
// OTLP exporter is configured (see tracing.go when built with it).
var newTracerProvider = func() (trace.TracerProvider, func(context.Context) error, error) {
	return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
}

// serveHTTP serves health and metrics on addr until ctx ends. It returns
// the listener's address (useful with ":0") and a function that waits for
// the server to stop.
func serveHTTP(ctx context.Context, addr string, health http.Handler, reg *prometheus.Registry, log *slog.Logger) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics listener on %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "error", err)
		}
	}()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}()
	return ln.Addr().String(), func() { <-stopped }, nil
}
