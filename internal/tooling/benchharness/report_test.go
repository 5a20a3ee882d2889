package benchharness

import (
	"slices"
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

// The allocation and telemetry tables render, and issue 20's targets are
// judged from the memstore rows: the load's time and allocations, the
// sync save's p50, and what an unsampled SDK adds over telemetry off.
func TestAllocationsAndHotPathTargets(t *testing.T) {
	r := &Report{Runs: 3, Machine: Machine{Cores: 2}}
	r.Load = []LoadRow{{Backend: Memstore, Events: 100, None: 10 * time.Microsecond, Head: 1400 * time.Nanosecond}}
	r.Save = []SaveRow{{Backend: Memstore, Mode: "sync", Goroutines: 1, P50: 1300 * time.Nanosecond}}
	r.Allocs = []AllocRow{{Backend: Memstore, Op: opLoadHead, Allocs: 8, Bytes: 592}, {Backend: Memstore, Op: opSaveSync, Allocs: 6.02, Bytes: 455.4}}
	r.Telemetry = []TelemetryRow{
		{Setup: "off", LoadP50: 1400 * time.Nanosecond, SaveP50: 1000 * time.Nanosecond, LoadAllocs: 8, SaveAllocs: 6},
		{Setup: "sdk", LoadP50: 1600 * time.Nanosecond, SaveP50: 1450 * time.Nanosecond, LoadAllocs: 10, SaveAllocs: 8},
	}
	md := r.Markdown("", "")
	for _, want := range []string{"## 7. Allocations per operation", opLoadHead, " 592 |", " 455 |", "+0.200", "+0.450", "## Targets (issue 20"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	met := map[string]bool{}
	for _, x := range r.hotPathTargets() {
		met[strings.Fields(x.What)[1]+" "+strings.Fields(x.What)[2]] = x.Met
	}
	want := map[string]bool{
		"snapshot load":  true,  // 1.4 µs, and 8 allocations (both rows share the key: both met)
		"one-event save": false, // 1.3 µs > 1.2 µs
		"an SDK":         false, // the save's +0.45 µs > 0.3 µs
	}
	for k, v := range want {
		if got, ok := met[k]; !ok || got != v {
			t.Errorf("target %q: met %v (present %v), want %v; all: %v", k, got, ok, v, met)
		}
	}
}

// BenchmarkTelemetryOff's output is read into medians per operation and
// setup, and judged: off within 50 ns of none.
func TestTelemetryBench(t *testing.T) {
	out := `goos: linux
BenchmarkTelemetryOff/op=load/telemetry=global-2         	  500000	      1000 ns/op	        30.00 added-cpu-ns/op	       990.0 none-cpu-ns/op	      1020 off-cpu-ns/op	     592 B/op	       8 allocs/op
BenchmarkTelemetryOff/op=save/telemetry=global-2         	  500000	       900 ns/op	        80.00 added-cpu-ns/op	       900.0 none-cpu-ns/op	       980 off-cpu-ns/op	     420 B/op	       5 allocs/op
BenchmarkTelemetryOff/op=load/telemetry=global-2         	  500000	      1000 ns/op	        20.00 added-cpu-ns/op	       995.0 none-cpu-ns/op	      1015 off-cpu-ns/op	     592 B/op	       8 allocs/op
BenchmarkTelemetryOff/op=load/telemetry=global-2         	  500000	      1000 ns/op	       900.00 added-cpu-ns/op	       100.0 none-cpu-ns/op	      1000 off-cpu-ns/op	     592 B/op	       8 allocs/op
BenchmarkTelemetryOff/op=load/telemetry=control-2        	  500000	      1000 ns/op	        -2.00 added-cpu-ns/op	      1000 none-cpu-ns/op	       998 off-cpu-ns/op	     592 B/op	       8 allocs/op
PASS
`
	rows, err := parseTelemetryBench(out)
	if err != nil {
		t.Fatal(err)
	}
	r := &Report{Runs: 3, TelemetryBench: rows}
	load, ok := r.telemetryBenchRow("load", "global")
	if len(rows) != 3 || !ok || load.AddedNs != 30 || load.NoneNs != 990 || load.Allocs != 8 {
		t.Fatalf("rows %+v", rows)
	}
	met := map[string]bool{}
	for _, x := range r.hotPathTargets() {
		met[x.What] = x.Met
	}
	for what, m := range met {
		want := strings.Contains(what, "a load") // load +30 ns; save +80 ns
		if m != want {
			t.Errorf("%s: met %v, want %v", what, m, want)
		}
	}
	if len(met) != 2 {
		t.Errorf("targets %v, want a load's and a save's", met)
	}
	if md := r.Markdown("", ""); !strings.Contains(md, "| load      | global    |") || !strings.Contains(md, "+30.0") || !strings.Contains(md, "control -2.0 ns") {
		t.Errorf("markdown lacks the load's global row, its +30 ns or the control's -2 ns:\n%s", md)
	}
	if _, err := parseTelemetryBench("PASS\n"); err == nil {
		t.Error("output without results parsed")
	}
}

// The append targets judge the rows of the ids a repository gives, and
// the section and the issue 20 targets appear on the page.
func TestAppendTargetsJudgeTheRepositorysIDs(t *testing.T) {
	micro := func(n int) time.Duration { return time.Duration(n) * time.Microsecond }
	per := func(a, b, c int) map[int]time.Duration {
		return map[int]time.Duration{1000: micro(a), 10_000: micro(b), 100_000: micro(c)}
	}
	r := &Report{Runs: 3, Machine: Machine{Cores: 2}, AppendSizes: []int{1000, 10_000, 100_000}, RepositoryIDs: 4}
	r.Append = []AppendRow{
		{Backend: SQLite, Writer: "store", IDs: "v4", PerEvent: per(18, 33, 44), Ratio: 2.5, Typical: per(17, 30, 40), TypicalRatio: 2.4, Slowest: per(900, 6000, 6100), Stream: 3 * time.Second, VsRaw: 1.15},
		{Backend: SQLite, Writer: "raw", IDs: "v4", PerEvent: per(19, 29, 43), Ratio: 2.3, Typical: per(18, 28, 40), TypicalRatio: 2.2, Stream: 2 * time.Second},
		{Backend: SQLite, Writer: "store", IDs: "v7", PerEvent: per(17, 15, 25), Ratio: 1.45, Typical: per(17, 15, 15), TypicalRatio: 0.9, Slowest: per(1200, 5700, 5800), Stream: time.Second, VsRaw: 1.6},
		{Backend: SQLite, Writer: "raw", IDs: "v7", PerEvent: per(16, 15, 12), Ratio: 0.75, Typical: per(16, 15, 12), TypicalRatio: 0.7, Stream: time.Second},
	}
	judge := func() (flat, vsRaw Target) {
		for _, x := range r.Issue20Targets() {
			switch {
			case strings.Contains(x.What, "costs within 1.3×"):
				flat = x
			case strings.Contains(x.What, "of the raw driver"):
				vsRaw = x
			}
		}
		return flat, vsRaw
	}
	flat, vsRaw := judge()
	if flat.Ratio != 2.4 || flat.Met || vsRaw.Ratio != 1.15 || !vsRaw.Met {
		t.Errorf("with v4 ids: flat %+v, vs raw %+v; want 2.4 not met, 1.15 met", flat, vsRaw)
	}
	r.RepositoryIDs = 7
	flat, vsRaw = judge()
	if flat.Ratio != 0.9 || !flat.Met || vsRaw.Ratio != 1.6 || vsRaw.Met {
		t.Errorf("with v7 ids: flat %+v, vs raw %+v; want 0.9 met (the median save's ratio, not the means' 1.45), 1.6 not met", flat, vsRaw)
	}
	if !strings.Contains(flat.Note, "the means: 1.45×") || !strings.Contains(flat.Note, "slowest save 5.80 ms at 100,000") {
		t.Errorf("the flat target's note does not give the means and the slowest save: %q", flat.Note)
	}
	md := r.Markdown("", "")
	for _, want := range []string{"## 8. Append cost as the stream grows", "## Targets (issue 20: stores and the worker)", "| sqlite  | store  | v4", "2.40×"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// tableRow returns the cells of md's first table row whose first cell is
// first, trimmed (nil if there is none).
func tableRow(md, first string) []string {
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == first {
			return cells
		}
	}
	return nil
}

// workerFloorCPUReport is a report whose one worker stays below pgbench
// (ratio 0.72) while spending 700 µs of CPU per snapshot against
// pgbench's 500 µs per transaction.
func workerFloorCPUReport() *Report {
	u := time.Microsecond
	r := &Report{Runs: 3, Machine: Machine{Cores: 2}}
	r.Worker = []WorkerRow{
		{Backend: SQLite, Replicas: 1, SnapshotsPerSec: 5000, CPU: CPUSplit{Go: 150 * u, NATS: 90 * u, GoMeasured: true, NATSMeasured: true, Busy: 0.8}},
		{Backend: Postgres, Replicas: 1, SnapshotsPerSec: 2828, CPU: CPUSplit{Go: 300 * u, PG: 250 * u, NATS: 150 * u, GoMeasured: true, PGMeasured: true, NATSMeasured: true, Busy: 0.97}},
		{Backend: Postgres, Replicas: 2, SnapshotsPerSec: 3000, CPU: CPUSplit{Go: 320 * u, PG: 260 * u, NATS: 140 * u, GoMeasured: true, PGMeasured: true, NATSMeasured: true, Busy: 0.99}},
	}
	r.Floor = []FloorRow{
		{Clients: 4, TPS: 3926, Replicas: 1, WorkerRatio: 0.72, CPU: CPUSplit{PG: 420 * u, Client: 80 * u, PGMeasured: true, ClientMeasured: true, Busy: 0.95}},
		{Clients: 8, TPS: 4100, Replicas: 2, WorkerRatio: 0.73, CPU: CPUSplit{PG: 430 * u, Client: 90 * u, PGMeasured: true, ClientMeasured: true, Busy: 0.96}},
	}
	return r
}

func workerFloorTarget(t *testing.T, r *Report) Target {
	t.Helper()
	for _, x := range r.Issue20Targets() {
		if strings.Contains(x.What, "one worker ≥ 1.0×") {
			return x
		}
	}
	t.Fatal("no target for one worker against the pgbench floor")
	return Target{}
}

// The target's note gives the measured reason when the worker stays below
// pgbench, from the figures; none when the target is met.
func TestWorkerFloorNoteSaysWhereTheCPUGoes(t *testing.T) {
	r := workerFloorCPUReport()
	x := workerFloorTarget(t, r)
	// 500/700 × 0.97/0.95 = 0.729.
	want := "CPU-bound like pgbench: the worker run spends 700 µs of CPU per snapshot (Go 300, PostgreSQL 250, NATS 150) against pgbench's 500 µs per transaction (PostgreSQL 420, pgbench client 80.0), 1.40× as much, with the machine 97% busy (during pgbench: 95%); at those busy shares that CPU allows 0.729× pgbench's rate; even without the NATS server's 150 µs (the notices, which pgbench does not read), the worker's 550 µs is 1.10× pgbench's; to match it with PostgreSQL and NATS as they are, the Go process (which pulls, decodes and acks 10 notices, decodes and applies the events and encodes the state) would have 100 µs per snapshot, against its 300 µs and the 80.0 µs pgbench's client spends only to send the statements"
	if x.Met || x.Note != want {
		t.Errorf("met %v, note\n%q\nwant\n%q", x.Met, x.Note, want)
	}

	r.Worker[1].CPU.PG = 400 * time.Microsecond
	if x := workerFloorTarget(t, r); !strings.HasSuffix(x.Note, "; PostgreSQL's and NATS's 550 µs per snapshot alone pass pgbench's 500 µs, so no Go process could match it") {
		t.Errorf("PostgreSQL 400 µs: note %q", x.Note)
	}
	r.Worker[1].CPU.PG = 250 * time.Microsecond

	r.Worker[1].CPU.Go = 200 * time.Microsecond
	if x := workerFloorTarget(t, r); !strings.HasSuffix(x.Note, "without the NATS server's 150 µs (the notices, which pgbench does not read), the worker's 450 µs is 0.900× pgbench's: the notices are what stands between the two") {
		t.Errorf("Go 200 µs: note %q", x.Note)
	}
	r.Worker[1].CPU.Go = 300 * time.Microsecond
	r.Worker[1].CPU.Busy = 0.6
	if x := workerFloorTarget(t, r); !strings.HasPrefix(x.Note, "not only CPU, the worker left the machine idler than pgbench did: ") || !strings.Contains(x.Note, "machine 60% busy") {
		t.Errorf("machine 60%% busy: note %q", x.Note)
	}
	r.Worker[1].CPU.Busy = 0.91 // within 5 points of pgbench's 95%: 500/700 × 0.91/0.95 = 0.684
	if x := workerFloorTarget(t, r); !strings.HasPrefix(x.Note, "CPU-bound like pgbench: ") || !strings.Contains(x.Note, "allows 0.684× pgbench's rate") {
		t.Errorf("machine 91%% busy: note %q", x.Note)
	}
	r.Worker[1].CPU.Busy = 0.97
	r.Worker[1].CPU.Go = 50 * time.Microsecond // 450 µs per snapshot < 500
	if x := workerFloorTarget(t, r); !strings.HasPrefix(x.Note, "not explained by CPU") || !strings.Contains(x.Note, "spends 450 µs") {
		t.Errorf("cheaper snapshot: note %q", x.Note)
	}
	r.Floor[0].CPU = CPUSplit{}
	if x := workerFloorTarget(t, r); x.Note != "" {
		t.Errorf("pgbench's CPU not measured: note %q, want none", x.Note)
	}
	r = workerFloorCPUReport()
	r.Floor[0].WorkerRatio = 1.05
	if x := workerFloorTarget(t, r); !x.Met || x.Note != "" {
		t.Errorf("met: %v, note %q; want met without a note", x.Met, x.Note)
	}
}

// Section 4 shows each worker run's CPU per snapshot beside pgbench's per
// transaction, and section 3 the CPU columns of every backend.
func TestWorkerFloorCPUTable(t *testing.T) {
	md := workerFloorCPUReport().Markdown("", "")
	sec4 := md[strings.Index(md, "## 4. The worker's floor"):]
	for first, want := range map[string][]string{
		"worker, 1 replica(s)": {"worker, 1 replica(s)", "4", "snapshot", "300", "250", "150", "—", "700", "1.40×", "97%"},
		"pgbench":              {"pgbench", "4", "transaction", "—", "420", "—", "80.0", "500", "", "95%"},
	} {
		if got := tableRow(sec4, first); !slices.Equal(got, want) {
			t.Errorf("section 4 row %q = %q, want %q", first, got, want)
		}
	}
	if got := tableRow(sec4[strings.Index(sec4, "| worker, 2"):], "worker, 2 replica(s)"); !slices.Equal(got, []string{"worker, 2 replica(s)", "8", "snapshot", "320", "260", "140", "—", "720", "1.38×", "99%"}) {
		t.Errorf("section 4, 2 replicas: %q", got)
	}
	sec3 := md[strings.Index(md, "## 3. The snapshotter worker"):]
	if got := tableRow(sec3, SQLite); !slices.Equal(got[len(got)-4:], []string{"150", "—", "90.0", "80%"}) {
		t.Errorf("section 3 sqlite row: %q", got)
	}
	if got := tableRow(sec3, Postgres); !slices.Equal(got[len(got)-4:], []string{"300", "250", "150", "97%"}) {
		t.Errorf("section 3 postgres row: %q", got)
	}
	if !strings.Contains(md, "| CPU-bound like pgbench: the worker run spends 700 µs") {
		t.Error("the targets table lacks the worker's CPU note")
	}
}

// The head load's target, when not met, says how much of the gap is the
// client's CPU and how much the rest; none when met.
func TestHeadLoadNoteSplitsTheGap(t *testing.T) {
	u := time.Microsecond
	r := &Report{Runs: 3, Machine: Machine{Cores: 2}, Load: []LoadRow{
		{Backend: Postgres, Events: 100, Head: 122 * u, FloorHeadBatch: 103 * u, HeadCPU: 70 * u, FloorHeadBatchCPU: 64 * u},
		{Backend: Postgres, Events: 1000, Head: 110 * u, FloorHeadBatch: 105 * u, HeadCPU: 68 * u, FloorHeadBatchCPU: 65 * u},
	}}
	var head Target
	for _, x := range r.Issue20Targets() {
		if strings.Contains(x.What, "within 1.1× of the pgx.Batch floor") {
			head = x
		}
	}
	want := "of the +19.0 µs between them, the client's CPU is +6.00 µs (70.0 µs against 64.0 µs) and the rest, the round trip and PostgreSQL's execution of the load's one statement against the floor's two, +13.0 µs (52.0 µs against 39.0 µs)"
	if head.Met || head.Note != want {
		t.Errorf("met %v, note\n%q\nwant\n%q", head.Met, head.Note, want)
	}
	var cpu Target
	for _, x := range r.Issue20Targets() {
		if strings.Contains(x.What, "client CPU per snapshot load at the head halved") {
			cpu = x
		}
	}
	if !strings.HasPrefix(cpu.Note, "below what raw pgx spends: the batch floor's own client CPU, 64.0 µs, is 1.58× the goal of 40.5 µs; ") {
		t.Errorf("client CPU note %q", cpu.Note)
	}
	r.Load[0].Head = 108 * u
	for _, x := range r.Issue20Targets() {
		if strings.Contains(x.What, "within 1.1× of the pgx.Batch floor") && (!x.Met || x.Note != "") {
			t.Errorf("met %v, note %q; want met without a note", x.Met, x.Note)
		}
	}
}
