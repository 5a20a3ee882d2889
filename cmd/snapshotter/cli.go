package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/backend"
	"github.com/evsnap/evsnap/internal/envflag"
	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconn"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	errUsage = errors.New("usage")
	errHelp  = errors.New("help")
)

const usage = `snapshotter keeps evsnap snapshots current and administers them.

Usage:
  snapshotter run       [flags]   consume notices and write snapshots
  snapshotter migrate   [flags]   create or upgrade the tables and the JetStream stream
  snapshotter rebuild   --type T [--id ID] [flags]   regenerate snapshots, rate-limited
  snapshotter prune     --type T --schema-below N    delete snapshots of old schema versions
  snapshotter stats     --type T [--top N]           snapshot coverage of a type
  snapshotter verify    --type T [--sample N]        compare snapshots with a full replay
  snapshotter healthcheck [--url URL]                exit 0 if a running worker is ready: connected to NATS,
                                                     bound, pulling (for images without curl)

Run 'snapshotter <command> -h' for a command's flags. Every flag can also be
set by the EVSNAP_* environment variable shown in its help; flags win.
`

// commands lists the subcommands and the flag sets they accept.
var commands = map[string]func(*options) *flag.FlagSet{
	"run":         runFlags,
	"migrate":     migrateFlags,
	"rebuild":     rebuildFlags,
	"prune":       pruneFlags,
	"stats":       statsFlags,
	"verify":      verifyFlags,
	"healthcheck": healthcheckFlags,
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return fmt.Errorf("%w: no command given", errUsage)
		}
		return errHelp
	}
	name := args[0]
	mk, ok := commands[name]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, name)
	}
	o := &options{stdout: stdout, stderr: stderr}
	fs := mk(o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected arguments %q", errUsage, name, fs.Args())
	}
	if err := o.finish(); err != nil {
		return fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	switch name {
	case "run":
		return o.run(ctx)
	case "migrate":
		return o.migrate(ctx)
	case "rebuild":
		return o.rebuild(ctx)
	case "prune":
		return o.prune(ctx)
	case "verify":
		return o.verify(ctx)
	case "healthcheck":
		return o.healthcheck(ctx)
	default:
		return o.stats(ctx)
	}
}

// options holds every flag of every command; each command registers the
// ones it uses.
type options struct {
	stdout, stderr io.Writer
	envErrs        []error // env values that did not parse; finish reports them

	postgresURL string
	sqlitePath  string
	nats        natsconn.Options
	stream      string
	consumer    string
	prefix      string
	logFormat   string
	logLevel    string

	// run (runConfig is set when the run flags were registered, so the
	// worker takes them; the admin commands keep the worker defaults)
	runConfig       bool
	concurrency     int
	writeBatch      int
	readBatch       int
	batchSize       int
	linger          time.Duration
	ackWait         time.Duration
	maxDeliveries   int
	policies        policyFlag
	sweepInterval   time.Duration
	sweepRate       float64
	sweepBatch      int
	drainTimeout    time.Duration
	summaryInterval time.Duration
	metricsAddr     string
	maxSnapshot     int

	// migrate
	replicas  int
	dupWindow time.Duration
	maxBytes  int64
	maxAge    time.Duration

	// rebuild, prune, stats
	typ         string
	id          string
	rate        float64
	schemaBelow int
	top         int
	sample      int
	url         string
	timeout     time.Duration

	logger *slog.Logger
}

// flagEnv registers a string flag defaulting to an env var; help never
// shows a secret the variable holds (see envflag).
func flagEnv(fs *flag.FlagSet, p *string, name, env, def, help string) {
	envflag.String(fs, p, name, env, def, help)
}

// envParse returns the env var parsed by parse, or def when it is unset.
// A value that does not parse is recorded in errs (finish reports it,
// saying what was wanted) and def is used meanwhile. The errors belong to
// one command's options, so two commands parsed at once never share them.
func envParse[T any](errs *[]error, name string, def T, parse func(string) (T, error), want string) T {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	x, err := parse(strings.TrimSpace(v))
	if err != nil {
		*errs = append(*errs, fmt.Errorf("env %s=%q: want %s", name, v, want))
		return def
	}
	return x
}

func (o *options) envInt(name string, def int) int {
	return envParse(&o.envErrs, name, def, strconv.Atoi, "a whole number")
}

func (o *options) envFloat(name string, def float64) float64 {
	return envParse(&o.envErrs, name, def, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }, "a number")
}

func (o *options) envDuration(name string, def time.Duration) time.Duration {
	return envParse(&o.envErrs, name, def, time.ParseDuration, "a duration such as 30s")
}

func commonFlags(o *options, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("snapshotter "+name, flag.ContinueOnError)
	flagEnv(fs, &o.postgresURL, "postgres-url", "EVSNAP_POSTGRES_URL", "", "PostgreSQL URL; empty uses SQLite")
	flagEnv(fs, &o.sqlitePath, "sqlite-path", "EVSNAP_SQLITE_PATH", backend.DefaultSQLitePath, "SQLite database file when no PostgreSQL URL is set")
	flagEnv(fs, &o.logFormat, "log-format", "EVSNAP_LOG_FORMAT", "json", "log format: json or text")
	flagEnv(fs, &o.logLevel, "log-level", "EVSNAP_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	return fs
}

func natsFlags(fs *flag.FlagSet, o *options) {
	flagEnv(fs, &o.nats.URL, "nats-url", "EVSNAP_NATS_URL", natsconn.DefaultURL, "NATS server URL(s), comma-separated")
	flagEnv(fs, &o.nats.CredsFile, "nats-creds", "EVSNAP_NATS_CREDS", "", "NATS credentials (JWT + NKey) file")
	flagEnv(fs, &o.nats.NKeySeedFile, "nats-nkey", "EVSNAP_NATS_NKEY", "", "NATS NKey seed file")
	flagEnv(fs, &o.nats.User, "nats-user", "EVSNAP_NATS_USER", "", "NATS user")
	flagEnv(fs, &o.nats.Password, "nats-password", "EVSNAP_NATS_PASSWORD", "", "NATS password (prefer the env var)")
	flagEnv(fs, &o.nats.Token, "nats-token", "EVSNAP_NATS_TOKEN", "", "NATS token (prefer the env var)")
	flagEnv(fs, &o.nats.CAFile, "nats-ca", "EVSNAP_NATS_CA", "", "CA certificate file to verify the NATS server")
	flagEnv(fs, &o.nats.CertFile, "nats-cert", "EVSNAP_NATS_CERT", "", "client certificate file (mutual TLS)")
	flagEnv(fs, &o.nats.KeyFile, "nats-key", "EVSNAP_NATS_KEY", "", "client key file (mutual TLS)")
	flagEnv(fs, &o.stream, "stream", "EVSNAP_STREAM", natsnotice.DefaultStream, "JetStream stream of notices")
	flagEnv(fs, &o.prefix, "subject-prefix", "EVSNAP_SUBJECT_PREFIX", natsnotice.DefaultSubjectPrefix, "notice subject prefix")
}

func runFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "run")
	o.runConfig = true
	natsFlags(fs, o)
	d := snapshotter.DefaultConfig()
	flagEnv(fs, &o.consumer, "consumer", "EVSNAP_CONSUMER", d.Consumer, "durable consumer shared by every replica")
	fs.IntVar(&o.concurrency, "concurrency", o.envInt("EVSNAP_CONCURRENCY", d.Concurrency), "aggregates rebuilt at once per replica (env EVSNAP_CONCURRENCY)")
	fs.IntVar(&o.writeBatch, "write-batch", o.envInt("EVSNAP_WRITE_BATCH", d.WriteBatch), "most snapshots written with one statement and one commit; 1 writes each on its own (env EVSNAP_WRITE_BATCH)")
	fs.IntVar(&o.readBatch, "read-batch", o.envInt("EVSNAP_READ_BATCH", d.ReadBatch), "most aggregates whose snapshots are read with one statement for the policy's decision; 1 reads each on its own (env EVSNAP_READ_BATCH)")
	fs.IntVar(&o.batchSize, "batch-size", o.envInt("EVSNAP_BATCH_SIZE", d.BatchSize), "notices per fetch (env EVSNAP_BATCH_SIZE)")
	fs.DurationVar(&o.linger, "linger", o.envDuration("EVSNAP_LINGER", d.Linger), "how long a batch waits to fill (env EVSNAP_LINGER)")
	fs.DurationVar(&o.ackWait, "ack-wait", o.envDuration("EVSNAP_ACK_WAIT", d.AckWait), "JetStream ack wait (env EVSNAP_ACK_WAIT)")
	fs.IntVar(&o.maxDeliveries, "max-deliveries", o.envInt("EVSNAP_MAX_DELIVERIES", d.MaxDeliveries), "deliveries of a notice that keeps failing with transient errors before it is terminated; one that can never succeed is terminated on its first (env EVSNAP_MAX_DELIVERIES)")
	o.policies = policyFlag{}
	if v := os.Getenv("EVSNAP_POLICY"); v != "" {
		if err := o.policies.Set(v); err != nil {
			o.envErrs = append(o.envErrs, fmt.Errorf("env EVSNAP_POLICY: %w", err))
		}
		o.policies.fromEnv = true
	}
	fs.Var(&o.policies, "policy", "per-type policy Type=threshold:N[,milestones:A|B], repeatable or ';'-separated (env EVSNAP_POLICY; default Account=threshold:100;Order=threshold:100,milestones:OrderPaid|OrderShipped)")
	fs.DurationVar(&o.sweepInterval, "sweep-interval", o.envDuration("EVSNAP_SWEEP_INTERVAL", d.SweepInterval), "reconciliation sweep period; 0 disables (env EVSNAP_SWEEP_INTERVAL)")
	fs.Float64Var(&o.sweepRate, "sweep-rate", o.envFloat("EVSNAP_SWEEP_RATE", d.SweepRate), "sweep rebuilds per second at most (env EVSNAP_SWEEP_RATE)")
	fs.IntVar(&o.sweepBatch, "sweep-batch", o.envInt("EVSNAP_SWEEP_BATCH", d.SweepBatch), "aggregates per type per sweep at most (env EVSNAP_SWEEP_BATCH)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", o.envDuration("EVSNAP_DRAIN_TIMEOUT", d.DrainTimeout), "how long SIGTERM may take to finish in-flight work (env EVSNAP_DRAIN_TIMEOUT)")
	fs.IntVar(&o.maxSnapshot, "max-snapshot-bytes", o.envInt("EVSNAP_MAX_SNAPSHOT_BYTES", d.MaxSnapshotBytes), "largest encoded state to snapshot; larger ones are refused and reported (env EVSNAP_MAX_SNAPSHOT_BYTES)")
	fs.DurationVar(&o.summaryInterval, "summary-interval", o.envDuration("EVSNAP_SUMMARY_INTERVAL", d.SummaryInterval), "how often to log a summary line of the work done (at info; none for an interval without work); 0 disables (env EVSNAP_SUMMARY_INTERVAL)")
	flagEnv(fs, &o.metricsAddr, "metrics-addr", "EVSNAP_METRICS_ADDR", ":9090", "address serving /healthz, /readyz and /metrics; empty disables. /readyz answers 200 while the worker is connected to NATS, bound to its consumer, and its pull was answered within "+snapshotter.ReadyWithin.String()+" (3 times the 5s pull expiry), else 503")
	return fs
}

func migrateFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "migrate")
	natsFlags(fs, o)
	fs.IntVar(&o.replicas, "stream-replicas", o.envInt("EVSNAP_STREAM_REPLICAS", 1), "stream replicas (3 on a 3-node cluster) (env EVSNAP_STREAM_REPLICAS)")
	fs.DurationVar(&o.dupWindow, "duplicate-window", o.envDuration("EVSNAP_DUPLICATE_WINDOW", natsnotice.DefaultDuplicates), "stream duplicate window (env EVSNAP_DUPLICATE_WINDOW)")
	fs.Int64Var(&o.maxBytes, "stream-max-bytes", int64(o.envInt("EVSNAP_STREAM_MAX_BYTES", int(natsnotice.DefaultMaxBytes))), "stream size cap, reserved on the server; oldest notices go first; -1 unlimited (env EVSNAP_STREAM_MAX_BYTES)")
	fs.DurationVar(&o.maxAge, "stream-max-age", o.envDuration("EVSNAP_STREAM_MAX_AGE", natsnotice.DefaultMaxAge), "discard notices older than this; 0 keeps them until consumed (env EVSNAP_STREAM_MAX_AGE)")
	return fs
}

func typeFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.typ, "type", "", "aggregate type: "+strings.Join(knownTypes(), " or "))
}

func rebuildFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "rebuild")
	typeFlags(fs, o)
	fs.StringVar(&o.id, "id", "", "rebuild only this aggregate id")
	fs.Float64Var(&o.rate, "rate", o.envFloat("EVSNAP_REBUILD_RATE", 100), "rebuilds per second at most (env EVSNAP_REBUILD_RATE)")
	return fs
}

func pruneFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "prune")
	typeFlags(fs, o)
	fs.IntVar(&o.schemaBelow, "schema-below", 0, "delete snapshots with a schema version below N (required, 1 to "+strconv.Itoa(eventsource.MaxSchemaVersion)+")")
	return fs
}

func healthcheckFlags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("snapshotter healthcheck", flag.ContinueOnError)
	flagEnv(fs, &o.url, "url", "EVSNAP_HEALTHCHECK_URL", "http://127.0.0.1:9090/readyz", "URL to check; 200 means healthy. A worker's /readyz is 200 while it is connected to NATS, bound to its consumer, and its pull was answered within "+snapshotter.ReadyWithin.String()+" (3 times the 5s pull expiry)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	o.logLevel, o.logFormat = "error", "text"
	return fs
}

func verifyFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "verify")
	typeFlags(fs, o)
	fs.IntVar(&o.sample, "sample", 100, "how many aggregates to check, chosen at random; 0 checks all")
	return fs
}

func statsFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "stats")
	typeFlags(fs, o)
	fs.IntVar(&o.top, "top", 10, "how many of the stalest aggregates to list")
	return fs
}

// policyFlag collects Type=spec policies.
type policyFlag struct {
	m       map[string]snapshotter.Policy
	fromEnv bool
}

func (p *policyFlag) String() string {
	if p == nil || len(p.m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(p.m))
	for k := range p.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p.m[k].String()
	}
	return strings.Join(parts, ";")
}

func (p *policyFlag) Set(s string) error {
	if p.fromEnv { // flags replace the env var's policies
		p.m, p.fromEnv = nil, false
	}
	parsed, err := snapshotter.ParsePolicies(s)
	if err != nil {
		return err
	}
	if p.m == nil {
		p.m = map[string]snapshotter.Policy{}
	}
	for k, v := range parsed {
		p.m[k] = v
	}
	return nil
}

func knownTypes() []string { return []string{exampledomain.AccountType, exampledomain.OrderType} }

func (o *options) finish() error {
	if len(o.envErrs) > 0 {
		return errors.Join(o.envErrs...)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "json":
		o.logger = slog.New(slog.NewJSONHandler(o.stderr, hopts))
	case "text":
		o.logger = slog.New(slog.NewTextHandler(o.stderr, hopts))
	default:
		return fmt.Errorf("--log-format %q: want json or text", o.logFormat)
	}
	o.nats.Logger = o.logger
	o.nats.Name = "evsnap-snapshotter"
	for t := range o.policies.m {
		if !slices.Contains(knownTypes(), t) {
			return fmt.Errorf("--policy for unknown aggregate type %q (known: %s)", t, strings.Join(knownTypes(), ", "))
		}
	}
	if o.typ != "" && !slices.Contains(knownTypes(), o.typ) {
		return fmt.Errorf("--type %q: unknown aggregate type (known: %s)", o.typ, strings.Join(knownTypes(), ", "))
	}
	return nil
}

func (o *options) openBackend(ctx context.Context) (*backend.Backend, error) {
	b, err := backend.Open(ctx, backend.Options{PostgresURL: o.postgresURL, SQLitePath: o.sqlitePath, Logger: o.logger})
	if err != nil {
		return nil, err
	}
	o.logger.Debug("store opened", "backend", b.String())
	return b, nil
}

func (o *options) connectNATS(ctx context.Context) (*nats.Conn, jetstream.JetStream, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(cctx, o.nats)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// worker builds the worker for the example domain with the configured
// policies (defaults: threshold 100; Order also on its milestones).
func (o *options) worker(b *backend.Backend, js jetstream.JetStream, tel *telemetry) (*snapshotter.Worker, error) {
	cfg := snapshotter.DefaultConfig()
	cfg.Store, cfg.JetStream = b.Store, js
	if o.stream != "" {
		cfg.Stream = o.stream
	}
	if o.prefix != "" {
		cfg.SubjectPrefix = o.prefix
	}
	if o.consumer != "" {
		cfg.Consumer = o.consumer
	}
	if o.runConfig {
		cfg.Concurrency = o.concurrency
		cfg.WriteBatch = o.writeBatch
		cfg.ReadBatch = o.readBatch
		cfg.BatchSize = o.batchSize
		cfg.Linger = o.linger
		cfg.AckWait = o.ackWait
		cfg.MaxDeliveries = o.maxDeliveries
		cfg.SweepInterval = o.sweepInterval
		cfg.SweepRate = o.sweepRate
		cfg.SweepBatch = o.sweepBatch
		cfg.DrainTimeout = o.drainTimeout
		cfg.SummaryInterval = o.summaryInterval
		cfg.MaxSnapshotBytes = o.maxSnapshot
	}
	cfg.Logger = o.logger
	if tel != nil {
		cfg.MeterProvider = tel.meterProvider
		cfg.TracerProvider = tel.tracerProvider
	}
	reg := exampledomain.NewRegistry()
	account := snapshotter.For[exampledomain.Account](reg, snapshotter.DefaultPolicy())
	order := snapshotter.For[exampledomain.Order](reg, snapshotter.Policy{Threshold: 100, Milestones: exampledomain.OrderMilestones})
	if p, ok := o.policies.m[exampledomain.AccountType]; ok {
		account = account.WithPolicy(p)
	}
	if p, ok := o.policies.m[exampledomain.OrderType]; ok {
		order = order.WithPolicy(p)
	}
	return snapshotter.New(cfg, account, order)
}

func (o *options) requireType() error {
	if o.typ == "" {
		return fmt.Errorf("%w: --type is required (%s)", errUsage, strings.Join(knownTypes(), " or "))
	}
	return nil
}

func (o *options) parseID() (uuid.UUID, error) {
	if o.id == "" {
		return uuid.Nil, nil
	}
	id, err := uuid.Parse(o.id)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: --id %q is not a UUID", errUsage, o.id)
	}
	return id, nil
}
