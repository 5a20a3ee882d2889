package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/envflag"
	"github.com/evsnap/evsnap/internal/exampleapp"
	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/internal/storeopen"
)

// natsDefaultAddr is natsconnect.DefaultURL's host:port, where load looks
// for (or starts) NATS when none is configured; a variable so tests can
// point it at a server (or a free port) of their own.
var natsDefaultAddr = strings.TrimPrefix(natsconnect.DefaultURL, "nats://")

// newFlagSet returns a command's flag set, whose help starts with the
// command line and what the command does.
func newFlagSet(cmdline, what string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("example-app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n\nFlags:\n", cmdline, what)
		fs.PrintDefaults()
	}
	return fs
}

// common holds the flags every command has.
type common struct {
	c        exampleapp.Config
	logLevel string
}

// register adds the common flags to fs; each reads the EVSNAP_* variable
// its help names (see envflag). defaultDB is the command's SQLite file.
func (c *common) register(fs *flag.FlagSet, defaultDB string) {
	fs.StringVar(&c.c.PostgresURL, "postgres-url", "", "PostgreSQL URL; empty uses SQLite (env EVSNAP_POSTGRES_URL)")
	fs.StringVar(&c.c.SQLitePath, "sqlite-path", "", "SQLite file (default <data-dir>/"+defaultDB+dbNote(defaultDB)+") (env EVSNAP_SQLITE_PATH)")
	natsHelp := "NATS URL; empty starts an embedded server"
	if defaultDB == storeopen.DefaultSQLiteFile { // load: shared with snapshotter run
		natsHelp = "NATS URL; empty uses the server at " + natsconnect.DefaultURL + ", where snapshotter run looks by default, starting an embedded one there if none answers"
	}
	fs.StringVar(&c.c.NATS.URL, "nats-url", "", natsHelp+" (env EVSNAP_NATS_URL)")
	fs.DurationVar(&c.c.NATS.PingInterval, "nats-ping-interval", natsconnect.DefaultPingInterval, "how often to ping NATS; a connection that leaves 2 pings unanswered (dead in silence: a partition) is given up and the client reconnects, to another node of a cluster (env EVSNAP_NATS_PING_INTERVAL)")
	fs.StringVar(&c.c.DataDir, "data-dir", storeopen.DefaultDataDir, "directory for the embedded default's files (env EVSNAP_DATA_DIR)")
	fs.StringVar(&c.logLevel, "log-level", "error", "log level for library logs on stderr: debug, info, warn, error (env EVSNAP_LOG_LEVEL)")
}

// dbNote says, in help, which default database is shared with snapshotter.
func dbNote(defaultDB string) string {
	if defaultDB == storeopen.DefaultSQLiteFile {
		return ", the file snapshotter uses by default"
	}
	return ", recreated on every run"
}

// parse parses args and the environment into fs, whose flags include c's.
func (c *common) parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	if err := envflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, c.logLevel)
	}
	c.c.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// Credentials and TLS as the snapshotter takes them (env only here).
	n := &c.c.NATS
	n.CredsFile, n.NKeySeedFile = os.Getenv("EVSNAP_NATS_CREDS"), os.Getenv("EVSNAP_NATS_NKEY")
	n.User, n.Password, n.Token = os.Getenv("EVSNAP_NATS_USER"), os.Getenv("EVSNAP_NATS_PASSWORD"), os.Getenv("EVSNAP_NATS_TOKEN")
	n.CAFile, n.CertFile, n.KeyFile = os.Getenv("EVSNAP_NATS_CA"), os.Getenv("EVSNAP_NATS_CERT"), os.Getenv("EVSNAP_NATS_KEY")
	return nil
}

func parseDemo(args []string, stderr io.Writer) (exampleapp.DemoConfig, error) {
	var c common
	d := exampleapp.DemoConfig{}
	fs := newFlagSet("example-app [demo] [flags]", "The snapshotting tutorial end to end, as a report: load times with and\nwithout snapshots, the snapshot modes, schema versioning, external mode.", stderr)
	c.register(fs, exampleapp.DemoDB)
	sizes := fs.String("sizes", "100,1000,10000,100000", "event counts for the performance comparison, comma-separated")
	fs.IntVar(&d.Workers, "workers", 2, "in-process snapshotter workers for the external mode")
	if err := c.parse(fs, args, stderr); err != nil {
		return d, err
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1_000_000 {
			return d, fmt.Errorf("%w: --sizes: %q is not a count from 1 to 1000000", errUsage, s)
		}
		d.Sizes = append(d.Sizes, n)
	}
	if d.Workers < 1 || d.Workers > 16 {
		return d, fmt.Errorf("%w: --workers %d: want 1-16", errUsage, d.Workers)
	}
	d.Config = c.c
	return d, nil
}

func parseLoad(args []string, stderr io.Writer) (exampleapp.LoadConfig, error) {
	var c common
	var l exampleapp.LoadConfig
	fs := newFlagSet("example-app load [flags]", "Steady saves of accounts and orders in external mode at a target rate,\nprinting throughput every second.", stderr)
	c.register(fs, storeopen.DefaultSQLiteFile)
	fs.IntVar(&l.Aggregates, "aggregates", 100, "how many aggregates to spread the saves over")
	fs.Float64Var(&l.Rate, "rate", 200, "saves per second (all goroutines together)")
	fs.DurationVar(&l.Duration, "duration", 30*time.Second, "how long to run; 0 runs until interrupted")
	fs.Float64Var(&l.OrderShare, "orders", 0.3, "share of aggregates that are orders (the rest are accounts)")
	fs.IntVar(&l.MaxEvents, "max-events", 3, "events per account save: 1 to this many")
	fs.IntVar(&l.Concurrency, "concurrency", 8, "saving goroutines")
	fs.StringVar(&l.Record, "record", "", "append one line per save to this file: type id first last; a failed save adds failed, the time and the error (its events may be committed anyway)")
	fs.BoolVar(&l.NoMigrate, "no-migrate", false, "do not create or upgrade the tables (run as a role without schema privileges, after 'snapshotter migrate')")
	fs.Uint64Var(&l.IDSeed, "id-seed", 0, "derive the aggregates' ids from this seed (two loads with one seed save the same aggregates: v1 and v2 of the app side by side); 0 draws random ids")
	fs.StringVar(&l.RecordLoads, "record-loads", "", "append one line per Account load (unix-nanos Account id version snapshot|replay) to this file")
	fs.IntVar(&l.AccountSchema, "account-schema", exampledomain.AccountSchemaVersion, "release of the example Account to run as: 1 (the tutorial's state) or 2 (AccountV2, balance in cents); each keeps its own snapshots, so v1 and v2 can run side by side and v2 be rolled back (env EVSNAP_ACCOUNT_SCHEMA)")
	err := c.parse(fs, args, stderr)
	switch {
	case err != nil:
		return l, err
	case l.Aggregates < 1:
		return l, fmt.Errorf("%w: --aggregates must be at least 1", errUsage)
	case l.Rate <= 0:
		return l, fmt.Errorf("%w: --rate must be positive", errUsage)
	case l.Duration < 0:
		return l, fmt.Errorf("%w: --duration must not be negative", errUsage)
	case l.OrderShare < 0 || l.OrderShare > 1:
		return l, fmt.Errorf("%w: --orders must be between 0 and 1", errUsage)
	case l.MaxEvents < 1 || l.MaxEvents > 1000:
		return l, fmt.Errorf("%w: --max-events must be 1-1000", errUsage)
	case l.Concurrency < 1 || l.Concurrency > 1024:
		return l, fmt.Errorf("%w: --concurrency must be 1-1024", errUsage)
	}
	if err := exampledomain.CheckAccountSchema(l.AccountSchema); err != nil {
		return l, fmt.Errorf("%w: --account-schema: %v", errUsage, err)
	}
	c.c.SharedNATSAddr = natsDefaultAddr
	l.Config = c.c
	return l, nil
}
