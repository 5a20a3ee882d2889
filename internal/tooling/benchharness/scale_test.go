package benchharness

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseMountinfo(t *testing.T) {
	// This machine's kind: cpu and cpuacct mounted separately, cgroup2 on
	// the side without the cpu controller (hybrid).
	hybrid := `24 30 0:21 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
25 24 0:22 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
26 24 0:23 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
27 24 0:24 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	comounted := `30 24 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
31 24 0:26 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
`
	v2 := `40 1 0:27 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate
`
	escaped := `50 24 0:28 / /mnt/my\040cgroups rw - cgroup cgroup rw,cpuacct,cpu
`
	controllers := func(cpu bool) func(string) string {
		return func(string) string {
			if cpu {
				return "cpuset cpu io memory pids"
			}
			return "memory pids"
		}
	}
	for _, tc := range []struct {
		name, text string
		cpu        bool
		want       cgroupSetup
		err        bool
	}{
		{"hybrid", hybrid, true, cgroupSetup{CPU: "/sys/fs/cgroup/cpu", Acct: "/sys/fs/cgroup/cpuacct"}, false},
		{"co-mounted", comounted, false, cgroupSetup{CPU: "/sys/fs/cgroup/cpu,cpuacct", Acct: "/sys/fs/cgroup/cpu,cpuacct"}, false},
		{"v2", v2, true, cgroupSetup{V2: true, CPU: "/sys/fs/cgroup", Acct: "/sys/fs/cgroup"}, false},
		{"v2 without cpu", v2, false, cgroupSetup{}, true},
		{"escaped mount point", escaped, false, cgroupSetup{CPU: "/mnt/my cgroups", Acct: "/mnt/my cgroups"}, false},
		{"none", "", false, cgroupSetup{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMountinfo(tc.text, controllers(tc.cpu))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCgroupQuota(t *testing.T) {
	for _, tc := range []struct {
		cpus          float64
		period        time.Duration
		quota, perUS  int64
		quotaForLimit float64
	}{
		{0.1, 100 * time.Millisecond, 10_000, 100_000, 0.1},
		{0.05, 100 * time.Millisecond, 5_000, 100_000, 0.05},
		{1.5, 100 * time.Millisecond, 150_000, 100_000, 1.5},
		{0.001, 100 * time.Millisecond, 1_000, 100_000, 0.01}, // the kernel's 1 ms minimum
	} {
		q, p := cgroupQuota(tc.cpus, tc.period)
		if q != tc.quota || p != tc.perUS {
			t.Errorf("cgroupQuota(%v, %v) = %d, %d; want %d, %d", tc.cpus, tc.period, q, p, tc.quota, tc.perUS)
		}
	}
}

// The join script puts the very process that runs the command into the
// cgroup: the pid it writes is the command's own.
func TestJoinScriptWritesTheCommandsPID(t *testing.T) {
	dir := t.TempDir()
	g := &cgroup{cpu: filepath.Join(dir, "cpu"), acct: filepath.Join(dir, "acct")}
	for _, d := range []string{g.cpu, g.acct} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	argv := g.command("/bin/sh", "-c", "echo $$")
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	pid := strings.TrimSpace(string(out))
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("output %q is not a pid", out)
	}
	for _, f := range g.procsFiles() {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != pid {
			t.Errorf("%s holds %q, want the command's pid %s", f, got, pid)
		}
	}
	// A cgroup that cannot be joined stops the command from running.
	g = &cgroup{cpu: filepath.Join(dir, "missing")}
	argv = g.command("/bin/sh", "-c", "echo ran")
	out, err = exec.Command(argv[0], argv[1:]...).Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 97 || strings.Contains(string(out), "ran") {
		t.Errorf("joining a missing cgroup: output %q, err %v; want exit 97 and no output", out, err)
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (post gres) x) S 1 4242 4242 0 -1 4194560 600 0 0 0 150 25 7 3 20 0 1 0 100 1000 50 18446744073709551615"
	got, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	want := procTimes{Comm: "post gres) x", Self: 1750 * time.Millisecond, Children: 100 * time.Millisecond}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseProcStat("4242 (short) S 1 2"); err == nil {
		t.Error("a truncated line parsed")
	}
	self, err := readProcTimes(os.Getpid())
	if err != nil || self.Comm == "" {
		t.Errorf("readProcTimes(self) = %+v, %v", self, err)
	}
}

func TestCPUDelta(t *testing.T) {
	before := cpuSample{1: time.Second, 2: 2 * time.Second, 3: time.Second}
	// 1 used 0.5 s, 2 is gone (its time went to its parent's children),
	// 4 started in between and counts whole.
	after := cpuSample{1: 1500 * time.Millisecond, 4: 300 * time.Millisecond, 3: time.Second}
	if got := cpuDelta(before, after); got != 800*time.Millisecond {
		t.Errorf("cpuDelta = %v, want 800ms", got)
	}
}

func TestParseMachineCPU(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	got, err := parseMachineCPU("cpu  100 10 50 800 40 0 0 0 30 5\ncpu0 1 2 3 4\n")
	if err != nil {
		t.Fatal(err)
	}
	want := machineCPU{Busy: 160 * clockTick, Total: 1000 * clockTick}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseMachineCPU("intr 1 2 3"); err == nil {
		t.Error("a line that is not cpu parsed")
	}
}

func TestPromSum(t *testing.T) {
	text := `# HELP evsnap_worker_notice_settled_total Notices settled, by outcome.
# TYPE evsnap_worker_notice_settled_total counter
evsnap_worker_notice_settled_total{otel_scope_name="x",evsnap_outcome="acked"} 1200
evsnap_worker_notice_settled_total{otel_scope_name="x",evsnap_outcome="naked"} 7
evsnap_worker_notice_received_total{otel_scope_name="x"} 1300
evsnap_worker_snapshot_written_total{evsnap_source="notice"} 110
evsnap_worker_snapshot_written_total{evsnap_source="sweep"} 2
plain_total 3.5
`
	for _, tc := range []struct {
		name, match string
		want        float64
	}{
		{"evsnap_worker_notice_settled_total", `evsnap_outcome="acked"`, 1200},
		{"evsnap_worker_notice_settled_total", "", 1207},
		{"evsnap_worker_notice_received_total", "", 1300},
		{"evsnap_worker_snapshot_written_total", "", 112},
		{"evsnap_worker_snapshot_written_total", `evsnap_source="notice"`, 110},
		{"plain_total", "", 3.5},
		{"evsnap_worker_notice_settled", "", 0}, // a prefix of other names, not a metric
		{"evsnap_worker_notice_settled_total", `evsnap_outcome="terminated"`, 0},
	} {
		if got := promSum(text, tc.name, tc.match); got != tc.want {
			t.Errorf("promSum(%s, %s) = %v, want %v", tc.name, tc.match, got, tc.want)
		}
	}
}

func TestBackendState(t *testing.T) {
	for _, tc := range []struct{ state, typ, ev, want string }{
		{"active", "", "", "running"},
		{"idle", "Client", "ClientRead", "idle"},
		{"active", "Lock", "transactionid", "Lock:transactionid"},
		{"active", "IO", "WALSync", "IO:WALSync"},
		{"idle in transaction", "Client", "ClientRead", "idle"},
	} {
		if got := backendState(tc.state, tc.typ, tc.ev); got != tc.want {
			t.Errorf("backendState(%q, %q, %q) = %q, want %q", tc.state, tc.typ, tc.ev, got, tc.want)
		}
	}
}

func TestSteadyRate(t *testing.T) {
	// 1,000 notices: nothing for 0.5 s (start-up), then 100 every 100 ms
	// until 1.5 s, then a slow tail. 10% (100) is crossed at 0.6 s, 90%
	// (900) at 1.4 s: 800 notices in 0.8 s.
	samples := []progressSample{{0, 0}, {500 * time.Millisecond, 0}}
	for i := 1; i <= 10; i++ {
		samples = append(samples, progressSample{500*time.Millisecond + time.Duration(i)*100*time.Millisecond, 100 * i})
	}
	samples = append(samples, progressSample{3 * time.Second, 1000})
	got, ok := steadyRate(samples, 1000)
	if !ok || math.Abs(got-1000) > 1e-6 {
		t.Errorf("steadyRate = %v, %v; want 1000/s", got, ok)
	}
	// Interpolated between coarse samples: 0 at 0 s, 1,000 at 2 s.
	if got, ok := steadyRate([]progressSample{{0, 0}, {2 * time.Second, 1000}}, 1000); !ok || math.Abs(got-500) > 1e-6 {
		t.Errorf("steadyRate over one interval = %v, %v; want 500/s", got, ok)
	}
	if _, ok := steadyRate([]progressSample{{0, 0}, {time.Second, 500}}, 1000); ok {
		t.Error("steadyRate reported a rate though 90% was never reached")
	}
}

func TestScaleGOMAXPROCS(t *testing.T) {
	for cpu, want := range map[float64]int{0.05: 1, 0.1: 1, 1: 1, 1.5: 2, 3: 3} {
		if got, why := scaleGOMAXPROCS(cpu); got != want || why == "" {
			t.Errorf("scaleGOMAXPROCS(%v) = %d, %q; want %d and a reason", cpu, got, why, want)
		}
	}
}

// scaleFixture is a scale-out report: 8 replicas at 5.6× with one replica
// doing twice another's work.
func scaleFixture() *ScaleReport {
	s := &ScaleReport{CPU: 0.05, Period: scalePeriod, GOMAXPROCS: 1, GOMAXPROCSReason: "set", Cgroups: "cgroup v1", NATSVersion: "2.15.2",
		AggregatesPerReplica: 375, Threshold: 100, Runs: 3, PGMeasured: true}
	row := func(n int, perSec float64, per []int64, cpu time.Duration, busy float64) ScaleRow {
		el := time.Duration(3000 / perSec * float64(time.Second))
		return ScaleRow{Replicas: n, Aggregates: 3000, Notices: 30000, Elapsed: el, StartUp: 100 * time.Millisecond, Snapshots: 3000, SnapshotsPerSec: perSec * 0.9, NoticesPerSec: perSec * 9,
			SteadySnapshotsPerSec: perSec, SteadyNoticesPerSec: perSec * 10,
			PerReplicaNotices: per, PerReplicaSnapshots: per, SteadyPerReplica: per,
			Rebuilds: 3000, WorkerCPU: cpu, StartCPU: time.Duration(n) * 15 * time.Millisecond,
			PGCPU: time.Second, NATSCPU: time.Second, MachineBusy: busy, Throttled: 0.9, PGStates: map[string]int{"running": 10, "idle": 85, "IO:WALSync": 5}}
	}
	s.Rows = []ScaleRow{
		row(1, 100, []int64{30000}, 1400*time.Millisecond, 0.3),
		row(2, 195, []int64{15100, 14900}, 1500*time.Millisecond, 0.4),
		row(4, 380, []int64{7600, 7400, 7500, 7500}, 1500*time.Millisecond, 0.6),
		row(8, 560, []int64{5000, 2500, 3750, 3750, 3750, 3750, 3750, 3750}, 1500*time.Millisecond, 0.95),
	}
	s.Rows[3].Ready = []time.Duration{200 * time.Millisecond, 300 * time.Millisecond, 736 * time.Millisecond}
	s.Rows[3].PerReplicaCPU = []time.Duration{250 * time.Millisecond, 125 * time.Millisecond, 187500 * time.Microsecond, 187500 * time.Microsecond,
		187500 * time.Microsecond, 187500 * time.Microsecond, 187500 * time.Microsecond, 187500 * time.Microsecond}
	return s
}

func TestScaleTargets(t *testing.T) {
	s := scaleFixture()
	got := map[string]Target{}
	for _, x := range s.Targets() {
		got[strings.TrimSuffix(x.What, " (steady rate: 10% to 90% of the backlog)")] = x
	}
	for what, met := range map[string]bool{
		"2 replicas ≥ 1.90× one": true,  // 1.95×
		"4 replicas ≥ 3.70× one": true,  // 3.8×
		"8 replicas ≥ 7.00× one": false, // 5.6×
		"each replica's share of the work within 1.2× of the others (max / min of snapshots stored from 10% to 80% of the backlog), worst replica count": false, // 2×
		"snapshots per worker CPU-second at 8 replicas no worse than at 1":                                                                               false, // 2,000 vs 2,143
	} {
		x, ok := got[what]
		if !ok {
			t.Errorf("no target %q in %v", what, got)
			continue
		}
		if x.Met != met {
			t.Errorf("%s: met %v, want %v (%+v)", what, x.Met, met, x)
		}
	}
	if x := got["8 replicas ≥ 7.00× one"]; math.Abs(x.Ratio-5.6) > 1e-9 || !strings.Contains(x.Note, "got 70% of their quota while the machine's cores were 95% busy") {
		t.Errorf("8 replicas: ratio %v, note %q; want 5.6 and the saturated machine named", x.Ratio, x.Note)
	}
	if x := got["each replica's share of the work within 1.2× of the others (max / min of snapshots stored from 10% to 80% of the backlog), worst replica count"]; x.Ratio != 2 || !strings.Contains(x.Measured, "at 8 replicas: 5,000 / 2,500") ||
		!strings.Contains(x.Note, "every replica was ready before the drain started") ||
		!strings.Contains(x.Note, "CPU ranged 0.125 to 0.250 s (max / min 2.00×) and its notices per CPU-second 20,000 to 20,000 (1.00×)") {
		t.Errorf("share: %+v, want 2× at 8 replicas", x)
	}
	if x := got["2 replicas ≥ 1.90× one"]; !strings.Contains(x.Note, "CPU-bound") {
		t.Errorf("2 replicas note %q: want the CPU-bound workers named", x.Note)
	}
}

// The speed-up is the median of the rounds' ratios when the step measured
// them, not the ratio of the median rows.
func TestScaleSpeedupPerRound(t *testing.T) {
	s := scaleFixture()
	s.Rows[3].SteadySpeedup = 7.1 // the rows alone say 5.6×
	s.Rows[3].Speedup = 6.5       // from the start: shown, not judged
	for _, x := range s.Targets() {
		if strings.HasPrefix(x.What, "8 replicas") && (x.Ratio != 7.1 || !x.Met || !strings.Contains(x.Measured, "6.50×")) {
			t.Errorf("8 replicas: ratio %v met %v, measured %q; want the per-round steady 7.1 met, 6.50× from the start shown", x.Ratio, x.Met, x.Measured)
		}
	}
}

// The share target judges the steady window: a replica that started late
// did less over the whole drain without the work being shared unevenly.
func TestScaleShareSteady(t *testing.T) {
	s := scaleFixture()
	s.Rows[3].SteadyPerReplica = []int64{2600, 2500, 2550, 2500, 2600, 2500, 2550, 2500} // 1.04×
	for _, x := range s.Targets() {
		if strings.HasPrefix(x.What, "each replica's share") && (!x.Met || math.Abs(x.Ratio-1.04) > 1e-9 || !strings.Contains(x.Measured, "whole drain, its tail included, worst 2.00×")) {
			t.Errorf("share target %+v: want 1.04× met, the whole drain's 2× shown", x)
		}
	}
}

func TestScaleQuickTargetsNotJudged(t *testing.T) {
	s := scaleFixture()
	s.Quick = true
	for _, x := range s.Targets() {
		if !x.NA || !strings.Contains(x.Note, "judged on the full form") {
			t.Errorf("quick form target %q: NA %v, note %q; want n/a with the reason", x.What, x.NA, x.Note)
		}
	}
}

func TestScaleMarkdown(t *testing.T) {
	r := &Report{Runs: 3, Scale: scaleFixture()}
	c := r.Scale.Rows[0]
	c.NATSCPU, c.SnapshotsPerSec = 3*time.Second, 45 // three times the one server's 1 s per 30,000 notices
	r.Scale.Cluster = &ScaleCluster{Nodes: 3, Rows: []ScaleRow{c}}
	md := r.Markdown("", "benchmarks-scale.svg")
	for _, want := range []string{"## 6. Scale-out", "**0.05 CPU**", "50m", "GOMAXPROCS=1", "|        8 |", "5.60×", "2.00× / 2.00×",
		"![Snapshots/s against replicas", "Targets (issue 16)", "not met", "10% running, 85% idle, 5% IO:WALSync",
		"### Against a 3-node cluster, the stream at 3 replicas", "|                           100 |", "3.00×"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	r.Scale = &ScaleReport{Skipped: "cannot create a cgroup under /sys/fs/cgroup/cpu as a user other than root: permission denied"}
	md = r.Markdown("", "")
	if !strings.Contains(md, "Skipped: cannot create a cgroup") || strings.Contains(md, "| replicas") {
		t.Errorf("skipped step: want the reason and no table:\n%s", md)
	}
	if svg, err := r.ScaleChartSVG(); svg != nil || err != nil {
		t.Errorf("skipped step has a chart: %q, %v", svg, err)
	}
}

func TestScaleChartSVG(t *testing.T) {
	r := &Report{Scale: scaleFixture()}
	svg, err := r.ScaleChartSVG()
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var texts, series []string
	var inText bool
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not valid XML: %v\n%s", err, svg)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			inText = el.Name.Local == "text"
			for _, a := range el.Attr {
				if a.Name.Local == "data-name" {
					series = append(series, a.Value)
				}
			}
		case xml.CharData:
			if inText {
				texts = append(texts, string(el))
			}
		case xml.EndElement:
			inText = false
		}
	}
	if strings.Join(series, "|") != "steady (10–90% of the backlog)|over the whole drain|ideal (n × 1 replica, steady)" {
		t.Errorf("series %q", series)
	}
	all := strings.Join(texts, "|")
	for _, tick := range []string{"|1|", "|2|", "|4|", "|8|"} {
		if !strings.Contains("|"+all+"|", tick) {
			t.Errorf("x tick %s missing from %q", tick, all)
		}
	}
	// The ideal line ends at 8 × one replica.
	if c := r.ScaleChart(); c.Series[2].Points[3] != (Point{8, 800}) {
		t.Errorf("ideal at 8 = %v, want (8, 800)", c.Series[2].Points[3])
	}
}
