package snapshottercli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Run runs the worker until ctx ends (SIGTERM), then drains it: it opens
// the store and connects to NATS (starting while either server is down,
// as under compose or Kubernetes, or during a database restart: it
// connects when the server is back, as it reconnects when one goes away
// later), serves /healthz, /readyz and /metrics on c.MetricsAddr, and
// exports telemetry as the OTEL_* variables say.
func Run(ctx context.Context, c Config) error {
	tel, err := NewTelemetry(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	c.Store.WaitForServer = true
	b, err := openBackend(ctx, c)
	if err != nil {
		return err
	}
	defer b.Close()
	// The worker may start before NATS: it keeps trying to connect and is
	// not ready until it consumes.
	c.NATS.WaitForServer = true
	nc, js, err := connectNATS(ctx, c)
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := NewWorker(c, b, js, tel)
	if err != nil {
		return err
	}
	wait := func() {}
	if c.MetricsAddr != "" {
		hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		addr, waitHTTP, err := ServeHTTP(hctx, c.MetricsAddr, w.HealthHandler(), tel.Registry, c.Logger)
		if err != nil {
			stop()
			return err
		}
		c.Logger.Info("serving /healthz, /readyz and /metrics", "addr", addr)
		wait = func() { stop(); waitHTTP() }
	}
	c.Logger.Info("snapshotter starting", "backend", b.String(), "stream", c.Worker.Stream, "consumer", c.Worker.Consumer,
		"concurrency", c.Worker.Concurrency, "batch_size", c.Worker.BatchSize)
	err = w.Run(ctx)
	wait()
	if err != nil {
		return err
	}
	c.Logger.Info("snapshotter stopped cleanly")
	return nil
}

// ServeHTTP serves health on /healthz and /readyz and reg on /metrics at
// addr until ctx ends. It returns the listener's address (useful with
// ":0") and a function that waits for the server to stop.
func ServeHTTP(ctx context.Context, addr string, health http.Handler, reg *prometheus.Registry, log *slog.Logger) (string, func(), error) {
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
