// Command example-app walks through evsnap's snapshotting end to end on the
// tutorial's scenario, and generates steady load for the compose demo and
// the benchmarks.
//
//	example-app            the tutorial as a report (default: embedded NATS, SQLite under ./data)
//	example-app demo       the same
//	example-app load       steady saves of accounts and orders, printing throughput
//
// EVSNAP_NATS_URL and EVSNAP_POSTGRES_URL (or --nats-url, --postgres-url)
// switch to real servers. This package parses the command line
// (flags.go); what each command does is internal/exampleapp's.
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

	"github.com/evsnap/evsnap/internal/exampleapp"
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

// Main runs the command line and returns the exit code: 0 on success, 1 on
// failure, 2 on bad usage.
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
		var c exampleapp.DemoConfig
		if c, err = parseDemo(args, stderr); err == nil {
			err = exampleapp.Demo(ctx, c, stdout)
		}
	case "load":
		var c exampleapp.LoadConfig
		if c, err = parseLoad(args, stderr); err == nil {
			err = exampleapp.Load(ctx, c, stdout, stderr)
		}
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
