// Command snapshotter is the evsnap snapshot worker for the example domain
// (Account and Order): it consumes "events appended" notices from NATS
// JetStream and keeps snapshots current, and administers snapshots.
//
//	snapshotter run       consume notices (scale it out: replicas share one consumer)
//	snapshotter migrate   create or upgrade the tables and the JetStream stream
//	snapshotter rebuild   regenerate snapshots (--type T [--id ID]), rate-limited
//	snapshotter prune     delete snapshots of old schema versions (--type T --schema-below N)
//	snapshotter stats     snapshot coverage of a type (--type T)
//	snapshotter verify    compare sampled snapshots with a full replay (--type T [--sample N])
//	snapshotter healthcheck  exit 0 if a running worker's /readyz answers 200 (--url)
//
// Run `snapshotter <command> -h` for a command's flags. Every flag has an
// EVSNAP_* environment variable; flags win.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the command line and returns the exit code: 0 on success, 1 on
// failure, 2 on bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "snapshotter:", err)
		return 2
	case errors.Is(err, errHelp):
		return 0
	default:
		fmt.Fprintln(stderr, "snapshotter:", err)
		return 1
	}
}
