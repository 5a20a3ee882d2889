// Package snapshottercli is what the commands of cmd/snapshotter do, for
// the example domain (Account and Order): run the worker with its HTTP
// endpoints and telemetry, migrate the tables and the stream, and print
// the admin reports (rebuild, prune, stats, verify, healthcheck).
//
// cmd/snapshotter parses the command line and the EVSNAP_* variables
// into a [Config] and calls one function here; what a command prints,
// serves or exports is decided here and tested beside it.
//
// # Telemetry
//
// [NewTelemetry] is the OpenTelemetry SDK of the worker (the library
// packages use only the API). Metrics always go to a Prometheus registry
// that [Run] serves on /metrics. Everything else follows the standard
// OTEL_* variables through go.opentelemetry.io/contrib/exporters/autoexport,
// and is off unless asked for: spans go out when OTEL_TRACES_EXPORTER
// names an exporter (otlp, console), or, with it unset, when an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; metrics are pushed as well
// only when OTEL_METRICS_EXPORTER names an exporter.
package snapshottercli

import (
	"io"
	"log/slog"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
)

// Config is what a command runs with.
type Config struct {
	// Stdout takes a command's report; Stderr what it says while it works
	// (migrate's waits for a cluster).
	Stdout, Stderr io.Writer
	// Logger takes the logs (the worker's, the stores', NATS's).
	Logger *slog.Logger

	// Store selects the backend (its Logger is set from Logger).
	Store storeopen.Options
	// NATS is the connection run and migrate make (its Logger is set
	// from Logger).
	NATS natsconnect.Options

	// Worker configures the worker run starts and the admin commands
	// use; its stores, JetStream, Logger and providers are set here.
	Worker snapshotter.Config
	// Policies replaces the default policy of the aggregate types it
	// names (see [NewWorker]).
	Policies map[string]eventsource.Policy
	// AccountSchema is the release of the example Account the worker is
	// built with: 1 (exampledomain.Account, the default) or 2
	// (exampledomain.AccountV2). It reads and writes the snapshots of that
	// schema version only.
	AccountSchema int
	// MetricsAddr is where run serves /healthz, /readyz and /metrics;
	// "" serves nothing.
	MetricsAddr string

	// Stream is the notice stream migrate creates or updates.
	Stream natsnotice.StreamConfig
}

// DefaultConfig returns the defaults of every command: SQLite at
// storeopen.DefaultSQLitePath, NATS at natsconnect.DefaultURL, the worker's
// and the stream's defaults, /metrics on :9090, logs discarded.
func DefaultConfig() Config {
	return Config{
		Stdout:        io.Discard,
		Stderr:        io.Discard,
		Logger:        slog.New(slog.DiscardHandler),
		NATS:          natsconnect.Options{URL: natsconnect.DefaultURL, Name: "evsnap-snapshotter"},
		Worker:        snapshotter.DefaultConfig(),
		AccountSchema: exampledomain.AccountSchemaVersion,
		MetricsAddr:   ":9090",
		Stream:        natsnotice.DefaultStreamConfig(),
	}
}

// KnownTypes lists the aggregate types the worker snapshots.
func KnownTypes() []string { return []string{exampledomain.AccountType, exampledomain.OrderType} }
