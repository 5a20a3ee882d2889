// Command evsnap-scale builds a large PostgreSQL dataset with bulk SQL and
// measures the snapshotter's sweep, stats, verify --sample and prune, a
// snapshot load and a one-event save at each size
// (internal/tooling/scaleharness). It prints progress, then the page
// section, and writes it with a log-log chart.
//
//	go run ./internal/tooling/scaleharness/cmd/evsnap-scale [--sizes 100000,1000000,10000000]
//	    [--postgres-url URL] [--out docs/benchmarks-store-scale.md] [--keep]
//	    [--sqlite-size 1000000] [--sqlite-dir DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/scaleharness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "evsnap-scale:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("evsnap-scale", flag.ContinueOnError)
	url := fs.String("postgres-url", envOr("EVSNAP_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL server to build on, in a schema of its own (env EVSNAP_TEST_POSTGRES_URL)")
	sizes := fs.String("sizes", "100000,1000000,10000000", "aggregate counts to measure at, ascending")
	out := fs.String("out", "docs/benchmarks-store-scale.md", "page to write (the chart goes next to it as benchmarks-store-scale.svg); empty writes none")
	keep := fs.Bool("keep", false, "keep the schema at the end")
	maxOp := fs.Duration("max-op-time", 3*time.Minute, "skip an operation at a size where its time projected linearly from the previous size is above this (reported as projected)")
	sqliteSize := fs.Int64("sqlite-size", 1_000_000, "also measure the sweep, stats and verify on a SQLite file of this many aggregates (0: not)")
	sqliteDir := fs.String("sqlite-dir", "", "directory for the SQLite file (the system's temporary directory when empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cfg scaleharness.Config
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(strings.ReplaceAll(s, "_", "")), 10, 64)
		if err != nil {
			return fmt.Errorf("--sizes %q: %w", *sizes, err)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	cfg.PostgresURL, cfg.Keep, cfg.Progress, cfg.MaxOpTime = *url, *keep, os.Stderr, *maxOp
	cfg.SQLiteSize, cfg.SQLiteDir = *sqliteSize, *sqliteDir
	rep, err := scaleharness.Run(ctx, cfg)
	if err != nil {
		return err
	}
	chart := ""
	if *out != "" {
		chart = strings.TrimSuffix(filepath.Base(*out), ".md") + ".svg"
		svg, err := rep.ChartSVG()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(*out), chart), svg, 0o644); err != nil {
			return err
		}
	}
	page := "# Store scale\n\nThis page is written by `make scale` (not run in CI). The main benchmarks page is [benchmarks.md](benchmarks.md).\n\n" + rep.Markdown(chart)
	fmt.Print(page)
	if *out != "" {
		if old, err := os.ReadFile(*out); err == nil {
			if i := strings.Index(string(old), keptMarker); i >= 0 {
				page += "\n" + string(old[i:])
			}
		}
		return os.WriteFile(*out, []byte(page), 0o644)
	}
	return nil
}

// keptMarker starts the part of the page written by hand (comparisons
// with earlier runs, say), which a new run keeps below its own.
const keptMarker = "<!-- kept by make scale: written by hand from here on -->"

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
