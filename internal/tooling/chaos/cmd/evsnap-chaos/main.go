//go:build unix

// Command evsnap-chaos runs evsnap's chaos suite on real processes: two or
// more snapshotter workers and the example-app load generator against a
// PostgreSQL cluster and a nats-server of its own, with workers killed,
// NATS restarted, PostgreSQL connections terminated, PostgreSQL restarted
// and crashed, the network between a worker and NATS or PostgreSQL and
// between the load and NATS cut (as root), and workers drained while the
// load runs; then it checks that nothing was lost and no snapshot went
// wrong, and prints the counts.
//
//	go run ./internal/tooling/chaos/cmd/evsnap-chaos [--short] [--cluster] [--duration D] [--workers N] [--seed S]
//
// It needs PostgreSQL's server binaries (initdb and postgres: it runs a
// cluster of its own on a free port under a temporary directory, which it
// restarts and crashes; --postgres-url names an external server instead,
// and then those faults are skipped) and Go: it builds the nats-server
// go.mod pins once into a cache directory (or takes --nats-server). With
// --cluster it runs three nats-servers as a JetStream cluster and kills
// the notice stream's leader and followers. The exit code is
// 0 when every check passed, 1 when one failed or the run could not be
// carried out, 2 on bad usage. See docs/chaos.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/chaos"
)

func main() {
	chaos.DieWithParent()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	short := false
	for _, a := range args { // the form sets the defaults the other flags show
		if a == "--short" || a == "-short" || a == "--short=true" || a == "-short=true" {
			short = true
		}
	}
	cfg := chaos.DefaultConfig(short)
	fs := flag.NewFlagSet("evsnap-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("short", short, "the short form CI runs: about a minute, at least one fault of each kind")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long the load runs while faults are injected")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "snapshotter run processes (at least 2)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the fault schedule (default: from the clock; printed, so a run can be repeated)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "saves per second of the load generator")
	fs.IntVar(&cfg.Aggregates, "aggregates", cfg.Aggregates, "aggregates the load generator spreads its saves over")
	fs.IntVar(&cfg.Threshold, "threshold", cfg.Threshold, "snapshot threshold of both types")
	fs.DurationVar(&cfg.MeanGap, "mean-gap", cfg.MeanGap, "average time between faults")
	fs.DurationVar(&cfg.ConvergeTimeout, "converge-timeout", cfg.ConvergeTimeout, "how long the workers get to converge after the load stops")
	fs.StringVar(&cfg.PostgresURL, "postgres-url", "", "an external PostgreSQL server to create the run's database on, instead of a cluster of the suite's own (then PostgreSQL restarts and crashes are skipped)")
	fs.StringVar(&cfg.PGBinDir, "pg-bin", "", "directory of initdb and postgres for the suite's own cluster (default: initdb in PATH, else the newest /usr/lib/postgresql/*/bin)")
	fs.StringVar(&cfg.NATSServer, "nats-server", cfg.NATSServer, "nats-server binary (default: the version go.mod pins, built once into $EVSNAP_NATS_SERVER_CACHE or the user cache directory)")
	fs.BoolVar(&cfg.Cluster, "cluster", false, "run 3 nats-servers as a JetStream cluster with the stream at 3 replicas, and kill the stream's leader and followers instead of restarting one server")
	fs.DurationVar(&cfg.RollbackSideBySide, "rollback", cfg.RollbackSideBySide, "after the main load, how long v1 and v2 of the Account save side by side before v2 is rolled back; 0 skips the rollback phase")
	fs.DurationVar(&cfg.RollbackAfter, "rollback-after", cfg.RollbackAfter, "how long v1 goes on alone after the rollback, its loads counted")
	repo := fs.String("repo", ".", "a directory inside the evsnap module to build the binaries from")
	fs.BoolVar(&cfg.Sabotage, "sabotage", false, "self-test: damage the stores after the run (a snapshot moved back, an event deleted); the checks must then fail")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the work directory (logs, record file) and the database for investigation")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "evsnap-chaos: unexpected arguments %q\n", fs.Args())
		return 2
	}
	dir, err := chaos.FindRepo(*repo)
	if err != nil {
		fmt.Fprintln(stderr, "evsnap-chaos:", err)
		return 2
	}
	cfg.RepoDir = dir
	cfg.Out = stdout
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "evsnap-chaos:", err)
		return 2
	}
	// A backstop against a hang anywhere: the run plus generous room for
	// building, converging, verifying and cleaning up.
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+2*cfg.ConvergeTimeout+cfg.RollbackSideBySide+cfg.RollbackAfter+15*time.Minute)
	defer cancel()
	res, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "evsnap-chaos:", err)
		return 1
	}
	res.Print(stdout)
	if !res.OK() {
		return 1
	}
	return 0
}
