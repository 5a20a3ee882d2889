// Command snapshotter is the evsnap snapshot worker for the example domain
// (Account and Order): it consumes "events appended" notices from NATS
// JetStream and keeps snapshots current, and administers snapshots.
//
//	snapshotter run       consume notices (scale it out: replicas share one consumer)
//	snapshotter migrate   create or upgrade the tables and the JetStream stream
//	snapshotter rebuild   regenerate snapshots (--type T [--id ID | --resume-after ID]), rate-limited
//	snapshotter prune     delete snapshots of old schema versions in batches (--type T --schema-below N [--resume-after ID])
//	snapshotter stats     snapshot coverage of a type, estimated from a sample (--type T [--exact])
//	snapshotter verify    compare sampled snapshots with a full replay (--type T [--sample N])
//	snapshotter healthcheck  exit 0 if a running worker's /readyz answers 200 (--url)
//
// Run `snapshotter <command> -h` for a command's flags. Every flag has an
// EVSNAP_* environment variable; flags win. This package parses them
// (flags.go); what each command does is internal/snapshottercli's.
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

	"github.com/evsnap/evsnap/internal/snapshottercli"
	"github.com/evsnap/evsnap/lib/snapshotter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

var (
	errUsage = errors.New("usage")
	errHelp  = errors.New("help")
)

const usage = `snapshotter keeps evsnap snapshots current and administers them.

Usage:
  snapshotter run       [flags]   consume notices and write snapshots
  snapshotter migrate   [flags]   create or upgrade the tables and the JetStream stream
  snapshotter rebuild   --type T [--id ID | --resume-after ID] [flags]
                                                     regenerate snapshots, rate-limited, in id order
  snapshotter prune     --type T --schema-below N [--batch N] [--resume-after ID]
                                                     delete snapshots of old schema versions, in short batches
  snapshotter stats     --type T [--top N] [--exact] snapshot coverage of a type: estimated from a random
                                                     sample (bounded time), exact with --exact
  snapshotter verify    --type T [--sample N]        compare randomly picked snapshots with a full replay
  snapshotter healthcheck [--url URL]                exit 0 if a running worker is ready: connected to NATS,
                                                     bound, pulling (for images without curl)

rebuild and prune go through a type in aggregate id order; stopped (Ctrl-C,
SIGTERM, an error), they print the id to pass to --resume-after.

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

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return fmt.Errorf("%w: no command given", errUsage)
		}
		return errHelp
	}
	name := args[0]
	if _, ok := commands[name]; !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, name)
	}
	o, err := parse(name, args[1:], stdout, stderr)
	if err != nil {
		return err
	}
	c := o.cfg
	switch name {
	case "run":
		return snapshottercli.Run(ctx, c)
	case "migrate":
		return snapshottercli.Migrate(ctx, c)
	case "rebuild":
		return snapshottercli.Rebuild(ctx, c, o.typ, snapshotter.RebuildOptions{ID: o.parsedID, After: o.parsedAfter, Rate: o.rate})
	case "prune":
		return snapshottercli.Prune(ctx, c, o.typ, o.schemaBelow, snapshotter.PruneOptions{Batch: o.batch, After: o.parsedAfter})
	case "verify":
		return snapshottercli.Verify(ctx, c, o.typ, o.sample)
	case "healthcheck":
		return snapshottercli.Healthcheck(ctx, c.Stdout, o.url, o.timeout)
	default:
		return snapshottercli.Stats(ctx, c, o.typ, snapshotter.StatsOptions{Stalest: o.top, Exact: o.exact, Sample: o.sample})
	}
}
