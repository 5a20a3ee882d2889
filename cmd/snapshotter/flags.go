package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/envflag"
	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/internal/snapshottercli"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// options is one command's configuration as its flags and their EVSNAP_*
// variables (named in each flag's help: see envflag) give it; each command
// registers the flags it uses, the others keep cfg's defaults.
type options struct {
	cfg snapshottercli.Config

	stream, prefix, consumer string // "" keeps the default
	logFormat, logLevel      string
	policies                 policyFlag

	// rebuild, prune, stats, verify, healthcheck
	typ         string
	id          string
	parsedID    uuid.UUID
	resumeAfter string
	parsedAfter uuid.UUID
	rate        float64
	schemaBelow int
	batch       int
	top         int
	sample      int
	exact       bool
	url         string
	timeout     time.Duration
}

func newOptions(stdout, stderr io.Writer) *options {
	o := &options{cfg: snapshottercli.DefaultConfig()}
	o.cfg.Stdout, o.cfg.Stderr = stdout, stderr
	return o
}

// parse builds command name's flag set, parses args and the environment
// into it, and checks the result as far as can be done before any I/O.
func parse(name string, args []string, stdout, stderr io.Writer) (*options, error) {
	o := newOptions(stdout, stderr)
	fs := commands[name](o)
	fs.SetOutput(stderr)
	if err := envflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: %s: unexpected arguments %q", errUsage, name, fs.Args())
	}
	if err := o.finish(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	if err := o.check(name); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return o, nil
}

func commonFlags(o *options, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("snapshotter "+name, flag.ContinueOnError)
	if name != "migrate" && name != "prune" { // the commands that build Account's repository
		fs.IntVar(&o.cfg.AccountSchema, "account-schema", exampledomain.AccountSchemaVersion, "release of the example Account the worker is built with: 1 (the tutorial's state) or 2 (AccountV2, balance in cents); it reads and writes the snapshots of that schema version only (env EVSNAP_ACCOUNT_SCHEMA)")
	}
	fs.StringVar(&o.cfg.Store.PostgresURL, "postgres-url", "", "PostgreSQL URL; empty uses SQLite (env EVSNAP_POSTGRES_URL)")
	fs.StringVar(&o.cfg.Store.SQLitePath, "sqlite-path", storeopen.DefaultSQLitePath, "SQLite database file when no PostgreSQL URL is set (env EVSNAP_SQLITE_PATH)")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or text (env EVSNAP_LOG_FORMAT)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error (env EVSNAP_LOG_LEVEL)")
	return fs
}

func natsFlags(fs *flag.FlagSet, o *options) {
	n := &o.cfg.NATS
	fs.StringVar(&n.URL, "nats-url", natsconnect.DefaultURL, "NATS server URL(s), comma-separated (env EVSNAP_NATS_URL)")
	fs.StringVar(&n.CredsFile, "nats-creds", "", "NATS credentials (JWT + NKey) file (env EVSNAP_NATS_CREDS)")
	fs.StringVar(&n.NKeySeedFile, "nats-nkey", "", "NATS NKey seed file (env EVSNAP_NATS_NKEY)")
	fs.StringVar(&n.User, "nats-user", "", "NATS user (env EVSNAP_NATS_USER)")
	fs.StringVar(&n.Password, "nats-password", "", "NATS password (prefer the env var) (env EVSNAP_NATS_PASSWORD)")
	fs.StringVar(&n.Token, "nats-token", "", "NATS token (prefer the env var) (env EVSNAP_NATS_TOKEN)")
	fs.StringVar(&n.CAFile, "nats-ca", "", "CA certificate file to verify the NATS server (env EVSNAP_NATS_CA)")
	fs.StringVar(&n.CertFile, "nats-cert", "", "client certificate file (mutual TLS) (env EVSNAP_NATS_CERT)")
	fs.StringVar(&n.KeyFile, "nats-key", "", "client key file (mutual TLS) (env EVSNAP_NATS_KEY)")
	fs.DurationVar(&n.PingInterval, "nats-ping-interval", natsconnect.DefaultPingInterval, "how often to ping NATS; a connection that leaves 2 pings unanswered (dead in silence: a partition) is given up and the client reconnects, to another node of a cluster (env EVSNAP_NATS_PING_INTERVAL)")
	fs.StringVar(&o.stream, "stream", natsnotice.DefaultStream, "JetStream stream of notices (env EVSNAP_STREAM)")
	fs.StringVar(&o.prefix, "subject-prefix", natsnotice.DefaultSubjectPrefix, "notice subject prefix (env EVSNAP_SUBJECT_PREFIX)")
}

func runFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "run")
	natsFlags(fs, o)
	w, d := &o.cfg.Worker, snapshotter.DefaultConfig()
	fs.StringVar(&o.consumer, "consumer", d.Consumer, "durable consumer shared by every replica (env EVSNAP_CONSUMER)")
	fs.IntVar(&w.Concurrency, "concurrency", d.Concurrency, "aggregates rebuilt at once per replica (env EVSNAP_CONCURRENCY)")
	fs.IntVar(&w.WriteBatch, "write-batch", d.WriteBatch, "most snapshots written with one statement and one commit; 1 writes each on its own (env EVSNAP_WRITE_BATCH)")
	fs.IntVar(&w.ReadBatch, "read-batch", d.ReadBatch, "most aggregates whose snapshots are read with one statement for the policy's decision; 1 reads each on its own (env EVSNAP_READ_BATCH)")
	fs.IntVar(&w.BatchSize, "batch-size", d.BatchSize, "notices per fetch (env EVSNAP_BATCH_SIZE)")
	fs.DurationVar(&w.Linger, "linger", d.Linger, "how long a batch waits to fill (env EVSNAP_LINGER)")
	fs.DurationVar(&w.AckWait, "ack-wait", d.AckWait, "JetStream ack wait (env EVSNAP_ACK_WAIT)")
	fs.IntVar(&w.MaxDeliveries, "max-deliveries", d.MaxDeliveries, "deliveries of a notice that keeps failing with transient errors before it is terminated; one that can never succeed is terminated on its first (env EVSNAP_MAX_DELIVERIES)")
	fs.Var(&o.policies, "policy", "per-type policy Type=threshold:N[,milestones:A|B], repeatable or ';'-separated; default Account=threshold:100;Order=threshold:100,milestones:OrderPaid|OrderShipped (env EVSNAP_POLICY)")
	fs.DurationVar(&w.SweepInterval, "sweep-interval", d.SweepInterval, "reconciliation sweep period; 0 disables (env EVSNAP_SWEEP_INTERVAL)")
	fs.Float64Var(&w.SweepRate, "sweep-rate", d.SweepRate, "sweep rebuilds per second at most (env EVSNAP_SWEEP_RATE)")
	fs.IntVar(&w.SweepBatch, "sweep-batch", d.SweepBatch, "aggregates per type per sweep at most (env EVSNAP_SWEEP_BATCH)")
	leaseFlags(fs, w)
	fs.DurationVar(&w.DrainTimeout, "drain-timeout", d.DrainTimeout, "how long SIGTERM may take to finish in-flight work (env EVSNAP_DRAIN_TIMEOUT)")
	fs.IntVar(&w.MaxSnapshotBytes, "max-snapshot-bytes", d.MaxSnapshotBytes, "largest encoded state to snapshot; larger ones are refused and reported (env EVSNAP_MAX_SNAPSHOT_BYTES)")
	fs.DurationVar(&w.SummaryInterval, "summary-interval", d.SummaryInterval, "how often to log a summary line of the work done (at info; none for an interval without work); 0 disables (env EVSNAP_SUMMARY_INTERVAL)")
	fs.StringVar(&o.cfg.MetricsAddr, "metrics-addr", ":9090", "address serving /healthz, /readyz and /metrics; empty disables. /readyz answers 200 while the worker is connected to NATS, bound to its consumer, and its pull was answered within "+snapshotter.ReadyWithin.String()+" (3 times the 5s pull expiry), else 503 (env EVSNAP_METRICS_ADDR)")
	return fs
}

// leaseFlags registers the sweep lease's flags, which run and migrate
// (it creates the bucket) share.
func leaseFlags(fs *flag.FlagSet, w *snapshotter.Config) {
	d := snapshotter.DefaultConfig()
	fs.DurationVar(&w.SweepLeaseTTL, "sweep-lease-ttl", d.SweepLeaseTTL, "how long the sweep lease outlives a replica that died holding it: one replica of the fleet sweeps at a time, and another takes over within about 4/3 of this; 0 turns the lease off and every replica sweeps (env EVSNAP_SWEEP_LEASE_TTL)")
	fs.StringVar(&w.LeaseBucket, "lease-bucket", d.LeaseBucket, "JetStream key-value bucket of the sweep lease, one key per consumer and set of aggregate types and schema versions (env EVSNAP_LEASE_BUCKET)")
}

func migrateFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "migrate")
	natsFlags(fs, o)
	leaseFlags(fs, &o.cfg.Worker)
	s := &o.cfg.Stream
	fs.IntVar(&s.Replicas, "stream-replicas", 1, "stream replicas (3 on a 3-node cluster) (env EVSNAP_STREAM_REPLICAS)")
	fs.DurationVar(&s.Duplicates, "duplicate-window", natsnotice.DefaultDuplicates, "stream duplicate window (env EVSNAP_DUPLICATE_WINDOW)")
	fs.Int64Var(&s.MaxBytes, "stream-max-bytes", natsnotice.DefaultMaxBytes, "stream size cap, reserved on the server; oldest notices go first; -1 unlimited (env EVSNAP_STREAM_MAX_BYTES)")
	fs.DurationVar(&s.MaxAge, "stream-max-age", natsnotice.DefaultMaxAge, "discard notices older than this; 0 keeps them until consumed (env EVSNAP_STREAM_MAX_AGE)")
	return fs
}

func typeFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.typ, "type", "", "aggregate type: "+strings.Join(snapshottercli.KnownTypes(), " or "))
}

func rebuildFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "rebuild")
	typeFlags(fs, o)
	fs.StringVar(&o.id, "id", "", "rebuild only this aggregate id")
	fs.Float64Var(&o.rate, "rate", 100, "rebuilds per second at most (env EVSNAP_REBUILD_RATE)")
	resumeFlag(fs, o, "rebuild", "rebuilt")
	return fs
}

// resumeFlag registers --resume-after for rebuild and prune, which go
// through a type in aggregate id order and print where they stopped.
func resumeFlag(fs *flag.FlagSet, o *options, name, done string) {
	fs.StringVar(&o.resumeAfter, "resume-after", "", "resume a "+name+" that stopped: start after this aggregate id, the one it printed (every aggregate up to it was "+done+"); running from the start again is also safe")
}

func pruneFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "prune")
	typeFlags(fs, o)
	fs.IntVar(&o.schemaBelow, "schema-below", 0, "delete snapshots with a schema version below N (required, 1 to "+strconv.Itoa(eventsource.MaxSchemaVersion)+")")
	fs.IntVar(&o.batch, "batch", snapshotter.DefaultPruneBatch, "aggregates one delete statement covers at most, in aggregate id order: each statement is short and locks only its batch's rows (env EVSNAP_PRUNE_BATCH)")
	resumeFlag(fs, o, "prune", "pruned")
	return fs
}

func healthcheckFlags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("snapshotter healthcheck", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:9090/readyz", "URL to check; 200 means healthy. A worker's /readyz is 200 while it is connected to NATS, bound to its consumer, and its pull was answered within "+snapshotter.ReadyWithin.String()+" (3 times the 5s pull expiry) (env EVSNAP_HEALTHCHECK_URL)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	o.logLevel, o.logFormat = "error", "text"
	return fs
}

func verifyFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "verify")
	typeFlags(fs, o)
	fs.IntVar(&o.sample, "sample", 100, "how many aggregates to check, chosen at random by index probes at random ids (not a read of every aggregate); 0 checks all")
	return fs
}

func statsFlags(o *options) *flag.FlagSet {
	fs := commonFlags(o, "stats")
	typeFlags(fs, o)
	fs.IntVar(&o.top, "top", 10, "how many of the stalest aggregates to list (of the sample, without --exact)")
	fs.BoolVar(&o.exact, "exact", false, "read every aggregate of the type for exact counts and the stalest of all (seconds per million aggregates); without it the figures are estimated from a random sample, bounded in time whatever the number of aggregates, and labelled as estimates")
	fs.IntVar(&o.sample, "sample", snapshotter.DefaultStatsSample, "aggregates the estimates rest on; a type of at most twice as many is read whole")
	return fs
}

// policyFlag collects Type=spec policies.
type policyFlag struct{ m map[string]eventsource.Policy }

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
	parsed, err := snapshotter.ParsePolicies(s)
	if err != nil {
		return err
	}
	if p.m == nil {
		p.m = map[string]eventsource.Policy{}
	}
	for k, v := range parsed {
		p.m[k] = v
	}
	return nil
}

// finish builds the logger and completes cfg from the flags that are not
// a field of it.
func (o *options) finish() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "json":
		o.cfg.Logger = slog.New(slog.NewJSONHandler(o.cfg.Stderr, hopts))
	case "text":
		o.cfg.Logger = slog.New(slog.NewTextHandler(o.cfg.Stderr, hopts))
	default:
		return fmt.Errorf("--log-format %q: want json or text", o.logFormat)
	}
	known := snapshottercli.KnownTypes()
	for t := range o.policies.m {
		if !slices.Contains(known, t) {
			return fmt.Errorf("--policy for unknown aggregate type %q (known: %s)", t, strings.Join(known, ", "))
		}
	}
	o.cfg.Policies = o.policies.m
	if err := exampledomain.CheckAccountSchema(o.cfg.AccountSchema); err != nil {
		return fmt.Errorf("--account-schema: %v", err)
	}
	if o.typ != "" && !slices.Contains(known, o.typ) {
		return fmt.Errorf("--type %q: unknown aggregate type (known: %s)", o.typ, strings.Join(known, ", "))
	}
	if o.stream != "" {
		o.cfg.Worker.Stream, o.cfg.Stream.Name = o.stream, o.stream
	}
	if o.prefix != "" {
		o.cfg.Worker.SubjectPrefix, o.cfg.Stream.SubjectPrefix = o.prefix, o.prefix
	}
	if o.consumer != "" {
		o.cfg.Worker.Consumer = o.consumer
	}
	return nil
}

// parseResume parses --resume-after.
func (o *options) parseResume() error {
	if o.resumeAfter == "" {
		return nil
	}
	id, err := uuid.Parse(o.resumeAfter)
	if err != nil {
		return fmt.Errorf("--resume-after %q is not an aggregate id (a UUID)", o.resumeAfter)
	}
	o.parsedAfter = id
	return nil
}

// check checks the arguments of command name that no flag set can.
func (o *options) check(name string) error {
	switch name {
	case "rebuild":
		if o.id != "" {
			id, err := uuid.Parse(o.id)
			if err != nil {
				return fmt.Errorf("--id %q is not a UUID", o.id)
			}
			o.parsedID = id
		}
		if err := o.parseResume(); err != nil {
			return err
		}
		if o.id != "" && o.resumeAfter != "" {
			return errors.New("--id and --resume-after do not go together: --resume-after continues a rebuild of a whole type")
		}
	case "prune":
		if o.schemaBelow < 1 {
			return errors.New("--schema-below N is required and must be at least 1")
		}
		if o.schemaBelow > eventsource.MaxSchemaVersion {
			return fmt.Errorf("--schema-below %d is out of range: schema versions run from 1 to %d", o.schemaBelow, eventsource.MaxSchemaVersion)
		}
		if o.batch < 1 {
			return fmt.Errorf("--batch %d: a batch covers at least 1 aggregate", o.batch)
		}
		if err := o.parseResume(); err != nil {
			return err
		}
	case "stats":
		if o.top < 0 {
			return errors.New("--top must not be negative")
		}
		if o.sample < 1 {
			return fmt.Errorf("--sample %d: the estimates need a sample of at least 1 aggregate (--exact reads them all)", o.sample)
		}
	case "verify":
		if o.sample < 0 {
			return errors.New("--sample must not be negative")
		}
	case "healthcheck":
		if _, err := url.Parse(o.url); err != nil {
			return fmt.Errorf("--url %q: %v", o.url, err)
		}
		return nil
	default:
		return nil
	}
	if o.typ == "" {
		return fmt.Errorf("--type is required (%s)", strings.Join(snapshottercli.KnownTypes(), " or "))
	}
	return nil
}
