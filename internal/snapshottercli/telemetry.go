package snapshottercli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ServiceName is the service.name of the worker's telemetry unless
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says
// otherwise.
const ServiceName = "evsnap-snapshotter"

// Telemetry is the OpenTelemetry SDK of the worker binary: metrics in a
// Prometheus registry (served on /metrics by [Run]) and, as the OTEL_*
// variables ask through autoexport, spans and pushed metrics (see the
// package documentation). The library packages only use the API.
type Telemetry struct {
	// MeterProvider and TracerProvider are what the worker takes;
	// TracerProvider is a no-op one when no span exporter is asked for.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// Registry holds the worker's metrics and the Go and process
	// collectors, for /metrics.
	Registry *prometheus.Registry

	shutdown func(context.Context) error
}

// NewTelemetry builds the SDK from the environment. An OTEL_* variable
// autoexport does not accept (an unknown exporter or protocol) is an
// error naming it.
func NewTelemetry(ctx context.Context) (*Telemetry, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", ServiceName)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("telemetry resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME): %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prom, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithReader(prom), sdkmetric.WithResource(res)}
	push, err := autoexport.NewMetricReader(ctx, autoexport.WithFallbackMetricReader(noMetricReader))
	if err != nil {
		return nil, fmt.Errorf("metrics exporter (OTEL_METRICS_EXPORTER=%q): %w", os.Getenv("OTEL_METRICS_EXPORTER"), err)
	}
	if push != nil && !autoexport.IsNoneMetricReader(push) {
		opts = append(opts, sdkmetric.WithReader(push))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	tp, shutdownTraces, err := newTracerProvider(ctx, res)
	if err != nil {
		_ = mp.Shutdown(ctx)
		return nil, err
	}
	return &Telemetry{
		MeterProvider:  mp,
		TracerProvider: tp,
		Registry:       reg,
		shutdown: func(ctx context.Context) error {
			return errors.Join(mp.Shutdown(ctx), shutdownTraces(ctx))
		},
	}, nil
}

// Shutdown flushes what is to be exported and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }

// noMetricReader is the metric reader when OTEL_METRICS_EXPORTER is
// unset: none (autoexport's own default is OTLP), since /metrics serves
// the metrics.
func noMetricReader(context.Context) (sdkmetric.Reader, error) { return nil, nil }

// newTracerProvider exports spans through the exporter autoexport picks,
// or is a no-op provider when there is none (see spanExporterUnset).
func newTracerProvider(ctx context.Context, res *resource.Resource) (trace.TracerProvider, func(context.Context) error, error) {
	exp, err := autoexport.NewSpanExporter(ctx, autoexport.WithFallbackSpanExporter(spanExporterUnset))
	if err != nil {
		return nil, nil, fmt.Errorf("traces exporter (OTEL_TRACES_EXPORTER=%q): %w", os.Getenv("OTEL_TRACES_EXPORTER"), err)
	}
	if exp == nil || autoexport.IsNoneSpanExporter(exp) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return tp, tp.Shutdown, nil
}

// spanExporterUnset is the span exporter when OTEL_TRACES_EXPORTER is
// unset. autoexport's default is OTLP, which would export (and fail to
// connect) with nothing configured; tracing is off instead, unless an
// OTLP endpoint is set, which has turned OTLP on since the first release
// (docker-compose.yml passes OTEL_EXPORTER_OTLP_ENDPOINT through).
func spanExporterUnset(ctx context.Context) (sdktrace.SpanExporter, error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	return autoexport.NewSpanExporter(ctx) // OTLP, over the protocol OTEL_EXPORTER_OTLP_PROTOCOL names
}
