// Command example-app walks through evsnap's snapshotting end to end on the
// tutorial's scenario, and generates steady load for the compose demo and
// the benchmarks.
//
//	example-app            the tutorial as a report (default: embedded NATS, SQLite under ./data)
//	example-app demo       the same
//	example-app load       steady saves of accounts and orders, printing throughput
//
// EVSNAP_NATS_URL and EVSNAP_POSTGRES_URL (or --nats-url, --postgres-url)
// switch to real servers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/evsnap/evsnap/internal/backend"
	"github.com/evsnap/evsnap/internal/envflag"
	"github.com/evsnap/evsnap/internal/natsconn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

var errUsage = errors.New("usage")

const usage = `example-app walks through evsnap's snapshotting on the tutorial's scenario,
and generates steady load for the snapshotter.

Usage:
  example-app [demo] [flags]   the tutorial as a report (the default command)
  example-app load [flags]     steady saves of accounts and orders, printing throughput

Without EVSNAP_NATS_URL and EVSNAP_POSTGRES_URL (or --nats-url,
--postgres-url) both run on an embedded NATS server and SQLite under ./data.
Run 'example-app <command> -h' for a command's flags.
`

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

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd := "demo"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "demo":
		err = runDemo(ctx, args, stdout, stderr)
	case "load":
		err = runLoad(ctx, args, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		err = fmt.Errorf("%w: unknown command %q (want demo or load)", errUsage, cmd)
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "example-app:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "example-app:", err)
		return 1
	}
}

// common holds the flags every command has.
type common struct {
	postgresURL string
	sqlitePath  string
	natsURL     string
	dataDir     string
	logLevel    string
	logger      *slog.Logger
}

// register adds the common flags to fs. Their defaults come from EVSNAP_*
// variables; envflag keeps secrets out of help.
func (c *common) register(fs *flag.FlagSet, defaultDB string) {
	envflag.String(fs, &c.postgresURL, "postgres-url", "EVSNAP_POSTGRES_URL", "", "PostgreSQL URL; empty uses SQLite")
	envflag.String(fs, &c.sqlitePath, "sqlite-path", "EVSNAP_SQLITE_PATH", "", "SQLite file (default <data-dir>/"+defaultDB+dbNote(defaultDB)+")")
	natsHelp := "NATS URL; empty starts an embedded server"
	if defaultDB == backend.DefaultSQLiteFile { // load: shared with snapshotter run
		natsHelp = "NATS URL; empty uses the server at " + natsconn.DefaultURL + ", where snapshotter run looks by default, starting an embedded one there if none answers"
	}
	envflag.String(fs, &c.natsURL, "nats-url", "EVSNAP_NATS_URL", "", natsHelp)
	envflag.String(fs, &c.dataDir, "data-dir", "EVSNAP_DATA_DIR", backend.DefaultDataDir, "directory for the embedded default's files")
	envflag.String(fs, &c.logLevel, "log-level", "EVSNAP_LOG_LEVEL", "error", "log level for library logs on stderr: debug, info, warn, error")
}

// dbNote says, in help, which default database is shared with snapshotter.
func dbNote(defaultDB string) string {
	if defaultDB == backend.DefaultSQLiteFile {
		return ", the file snapshotter uses by default"
	}
	return ", recreated on every run"
}

func (c *common) finish(stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, c.logLevel)
	}
	c.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return nil
}
