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
	md := r.Markdown("benchmarks-load.svg")
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
