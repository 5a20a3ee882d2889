// Command evsnap-bench runs evsnap's benchmark harness
// (internal/tooling/benchharness): load times, save latency per snapshot mode, the
// snapshotter worker's throughput, lag and floor, and the memory of a full
// replay, on memstore, SQLite and PostgreSQL; and the scale-out of 1 to 8
// CPU-limited `snapshotter run` processes (root only: cgroups). It prints progress and then
// the tables, and writes them to a markdown page with an SVG chart.
//
//	go run ./internal/tooling/benchharness/cmd/evsnap-bench [--quick] [--runs N] [--out docs/benchmarks.md]
//	    [--postgres-url URL] [--nats-url URL] [--steps load,save,worker,scale,append] [--scale-cpu 0.1]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/evsnap/evsnap/internal/tooling/benchharness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr}
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "evsnap-bench:", err)
		os.Exit(2)
	}
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "evsnap-bench:", err)
		os.Exit(1)
	}
}

// Main is the program: flags in, harness run, files out.
type Main struct {
	Config benchharness.Config
	// Out is the markdown page to write ("" writes none); the charts go
	// next to it as benchmarks-load.svg and benchmarks-scale.svg.
	Out string
	// CPUProfile, when set, is where the run's CPU profile is written.
	CPUProfile     string
	Stdout, Stderr io.Writer
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// firstEnv returns the first non-empty environment variable of names.
func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// ParseFlags reads the command line.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("evsnap-bench", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	c := &m.Config
	fs.BoolVar(&c.Quick, "quick", false, "the quick form: smaller sizes, shorter runs (under a minute)")
	fs.IntVar(&c.Runs, "runs", 0, fmt.Sprintf("repeated runs per figure, the median is reported (default %d, quick %d)", benchharness.DefaultRuns, benchharness.QuickRuns))
	fs.StringVar(&m.Out, "out", "docs/benchmarks.md", "markdown page to write, with the charts beside it as benchmarks-load.svg and benchmarks-scale.svg (\"\" writes none)")
	fs.StringVar(&c.PostgresURL, "postgres-url", firstEnv("EVSNAP_POSTGRES_URL", "EVSNAP_TEST_POSTGRES_URL"),
		"PostgreSQL to measure (default $EVSNAP_POSTGRES_URL or $EVSNAP_TEST_POSTGRES_URL; empty skips PostgreSQL)")
	fs.StringVar(&c.NATSURL, "nats-url", firstEnv("EVSNAP_NATS_URL", "EVSNAP_TEST_NATS_URL"),
		"NATS with JetStream (default $EVSNAP_NATS_URL or $EVSNAP_TEST_NATS_URL; empty runs the nats-server go.mod pins as its own process)")
	var steps, backends string
	fs.StringVar(&steps, "steps", "", "comma-separated steps to run: load, save, worker, scale, append, peer (default all; a partial run says so on its page)")
	fs.StringVar(&c.PeerHallgren, "peer-hallgren", os.Getenv("EVSNAP_BENCH_PEER_HALLGREN"), "a checkout of github.com/hallgren/eventsourcing for the peer step, built by the harness in a module of its own (default $EVSNAP_BENCH_PEER_HALLGREN; \"\" skips the step)")
	fs.Float64Var(&c.ScaleCPU, "scale-cpu", benchharness.DefaultScaleCPU, "CPU quota of each worker replica in the scale-out step, in CPUs (like a Kubernetes limits.cpu)")
	fs.StringVar(&backends, "backends", "", "comma-separated backends to run: memstore, sqlite, postgres (default all)")
	fs.StringVar(&m.CPUProfile, "cpuprofile", "", "write a CPU profile of the harness process (the library and the in-process workers) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.Steps, c.Backends = splitList(steps), splitList(backends)
	if err := c.Validate(); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if c.Runs < 0 {
		return fmt.Errorf("--runs %d: must be at least 1", c.Runs)
	}
	// The command as the page shows it: flags given explicitly, no secrets.
	cmd := []string{"go run ./internal/tooling/benchharness/cmd/evsnap-bench"}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "postgres-url", "nats-url":
			cmd = append(cmd, "--"+f.Name+" '…'")
		case "quick":
			cmd = append(cmd, "--quick")
		default:
			cmd = append(cmd, "--"+f.Name+" "+f.Value.String())
		}
	})
	c.Command = strings.Join(cmd, " ")
	return nil
}

// Run runs the harness, prints the tables and writes the page and chart.
// It fails if any step failed, after writing what was measured.
func (m *Main) Run(ctx context.Context) error {
	m.Config.Progress = m.Stderr
	if m.CPUProfile != "" {
		f, err := os.Create(m.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := benchharness.Run(ctx, m.Config)
	if err != nil {
		return err
	}
	charts := map[string][]byte{}
	chartName, scaleName := "", ""
	if len(rep.Load) > 0 {
		chartName = "benchmarks-load.svg"
		if charts[chartName], err = rep.LoadChartSVG(); err != nil {
			return err
		}
	}
	if svg, err := rep.ScaleChartSVG(); err != nil {
		return err
	} else if svg != nil {
		scaleName = "benchmarks-scale.svg"
		charts[scaleName] = svg
	}
	page := rep.Markdown(chartName, scaleName)
	fmt.Fprint(m.Stdout, "\n"+page)
	if m.Out != "" {
		if err := os.MkdirAll(filepath.Dir(m.Out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(m.Out, []byte(page), 0o644); err != nil {
			return err
		}
		wrote := []string{m.Out}
		for _, name := range []string{chartName, scaleName} {
			if name == "" {
				continue
			}
			path := filepath.Join(filepath.Dir(m.Out), name)
			if err := os.WriteFile(path, charts[name], 0o644); err != nil {
				return err
			}
			wrote = append(wrote, path)
		}
		fmt.Fprintf(m.Stderr, "wrote %s\n", strings.Join(wrote, ", "))
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d step(s) failed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
	}
	return nil
}
