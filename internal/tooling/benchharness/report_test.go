package benchharness

import (
	"strings"
	"testing"
	"time"
)

func TestMarkdownTargets(t *testing.T) {
	r := &Report{Runs: 3, Machine: Machine{Cores: 2}}
	r.Load = []LoadRow{
		{Backend: Memstore, Events: 100, None: 10 * time.Microsecond, Head: 3 * time.Microsecond},
		{Backend: Memstore, Events: 100_000, None: 5 * time.Millisecond, Head: 4 * time.Microsecond},
	}
	r.Save = []SaveRow{{Backend: Memstore, Mode: "none", Goroutines: 1, P50: time.Millisecond}, {Backend: Memstore, Mode: "external", Goroutines: 1, P50: 1050 * time.Microsecond}}
	md := r.Markdown("benchmarks-load.svg", "")
	for _, want := range []string{"## 1. Load time", "## 2. Save latency", "## Targets", "![", "+5.0%"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	ts := r.Targets()
	var flat, ext, replay bool
	for _, x := range ts {
		switch {
		case strings.Contains(x.What, "within 2×"):
			flat = x.Met // 4µs / 3µs
		case strings.Contains(x.What, "external"):
			ext = x.Met // +5%
		case strings.Contains(x.What, "20× faster"):
			replay = x.Met // 50 ns per event: 52×
		}
	}
	if !flat || !ext || !replay {
		t.Errorf("targets: flat %v, external %v, replay %v; want all met: %+v", flat, ext, replay, ts)
	}
}

// The worker's floor target uses the median of the per-run ratios, not the
// ratio of the medians (taken minutes apart on a drifting box).
func TestWorkerFloorUsesPerRunRatios(t *testing.T) {
	r := &Report{Runs: 3, Machine: Machine{Cores: 2}}
	r.Worker = []WorkerRow{{Backend: Postgres, Replicas: 1, SnapshotsPerSec: 1000}, {Backend: Postgres, Replicas: 2, SnapshotsPerSec: 1100}}
	r.Floor = []FloorRow{{Clients: 4, TPS: 2000, Replicas: 1, WorkerRatio: 0.65}, {Clients: 8, TPS: 2400, Replicas: 2, WorkerRatio: 0.45}}
	var found bool
	for _, x := range r.Targets() {
		if strings.Contains(x.What, "pgbench floor") {
			found = true
			if x.Ratio != 0.65 || !x.Met {
				t.Errorf("floor target: ratio %v met %v, want 0.65 met (the per-run median, not 1000/2000)", x.Ratio, x.Met)
			}
		}
	}
	if !found {
		t.Fatal("no pgbench floor target")
	}
	md := r.Markdown("", "")
	for _, want := range []string{"## 4. The worker's floor", "0.650", "0.450"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}

func TestConfigValidateNamesUnknownSteps(t *testing.T) {
	for _, c := range []Config{
		{Steps: []string{"load", "laod"}},
		{Backends: []string{"mysql"}},
		{Backends: []string{Postgres}}, // no URL
	} {
		err := c.Validate()
		if err == nil {
			t.Errorf("%+v: no error", c)
			continue
		}
		if !strings.Contains(err.Error(), "laod") && !strings.Contains(err.Error(), "mysql") && !strings.Contains(err.Error(), "PostgreSQL URL") {
			t.Errorf("%+v: error %q does not name the problem", c, err)
		}
	}
	ok := Config{Steps: []string{StepWorker}, Backends: []string{SQLite}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid selection refused: %v", err)
	}
}

// The command the page shows is the one the harness runs, with the script
// by name and the password redacted.
func TestFloorBenchCommandMatchesArgs(t *testing.T) {
	f := &floorBench{h: &Harness{cfg: Config{Quick: true}}, script: "/tmp/x/worker-floor.sql", dsn: "postgres://u:secret@h/db"}
	got := f.command(4)
	if want := "pgbench -n -M prepared -f worker-floor.sql -c 4 -j 4 -T 1 'postgres://u:xxxxx@h/db'"; got != want {
		t.Errorf("command = %q, want %q", got, want)
	}
	if strings.Contains(got, "secret") {
		t.Errorf("command shows the password: %q", got)
	}
	args := f.args(8, f.script, f.dsn)
	if args[4] != f.script || args[len(args)-1] != f.dsn || args[6] != "8" {
		t.Errorf("args = %q", args)
	}
}
