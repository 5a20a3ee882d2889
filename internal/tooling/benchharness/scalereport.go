package benchharness

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/evsnap/evsnap/lib/snapshotter"
)

// Scale-out targets, from issue 16.
var scaleSpeedupTargets = map[int]float64{2: 1.9, 4: 3.7, 8: 7}

const (
	targetScaleShare = 1.2 // max/min of the replicas' work
	// snapshots per worker CPU-second at the most replicas / at one
	targetScaleEfficiency = 1.0
)

// percent formats a share: "42%".
func percent(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", x*100)
}

// row returns the row of n replicas.
func (s *ScaleReport) row(n int) (ScaleRow, bool) {
	for _, r := range s.Rows {
		if r.Replicas == n {
			return r, true
		}
	}
	return ScaleRow{}, false
}

// Speedup is the row's speed-up against one replica, timed from the
// drain's start: its median per-round ratio when the step measured
// one, else its snapshots/s over one replica's row's.
func (s *ScaleReport) Speedup(r ScaleRow) float64 {
	if r.Speedup > 0 {
		return r.Speedup
	}
	one, ok := s.row(1)
	if !ok || one.SnapshotsPerSec <= 0 {
		return math.NaN()
	}
	return r.SnapshotsPerSec / one.SnapshotsPerSec
}

// SteadySpeedup is [ScaleReport.Speedup] for the steady rates (10% to
// 90% of the backlog).
func (s *ScaleReport) SteadySpeedup(r ScaleRow) float64 {
	if r.SteadySpeedup > 0 {
		return r.SteadySpeedup
	}
	one, ok := s.row(1)
	if !ok || one.SteadySnapshotsPerSec <= 0 || r.SteadySnapshotsPerSec <= 0 {
		return math.NaN()
	}
	return r.SteadySnapshotsPerSec / one.SteadySnapshotsPerSec
}

// Targets evaluates issue 16's scale-out targets.
func (s *ScaleReport) Targets() []Target {
	if s == nil || len(s.Rows) == 0 {
		return nil
	}
	var ts []Target
	one, ok := s.row(1)
	for _, r := range s.Rows {
		goal, has := scaleSpeedupTargets[r.Replicas]
		if !has || !ok {
			continue
		}
		x := s.SteadySpeedup(r)
		ts = append(ts, Target{
			What: fmt.Sprintf("%d replicas ≥ %s× one (steady rate: 10%% to 90%% of the backlog)", r.Replicas, sig(goal)),
			Measured: fmt.Sprintf("%s vs %s snapshots/s steady; over the whole drain %s vs %s, %s (median runs; ratios are medians of each round's)",
				rate(r.SteadySnapshotsPerSec), rate(one.SteadySnapshotsPerSec), rate(r.SnapshotsPerSec), rate(one.SnapshotsPerSec), times(s.Speedup(r))),
			Ratio: x, Goal: fmt.Sprintf("≥ %s×", sig(goal)), Met: x >= goal,
			Note: s.Diagnose(r),
		})
	}
	// Shares: judged while every replica had work (the steady window),
	// with the whole run's shown beside.
	worst, worstRow, wholeWorst := 0.0, ScaleRow{}, 0.0
	for _, r := range s.Rows {
		if r.Replicas < 2 {
			continue
		}
		wholeWorst = max(wholeWorst, r.NoticeShare(), r.SnapshotShare())
		if x := r.SteadyShare(); x > worst || math.IsNaN(x) {
			worst, worstRow = x, r
		}
	}
	if worstRow.Replicas > 0 {
		t := Target{
			What: "each replica's share of the work within 1.2× of the others (max / min of snapshots stored from 10% to 80% of the backlog), worst replica count",
			Measured: fmt.Sprintf("at %d replicas: %s snapshots (notices acked %s, %s); over the whole drain, its tail included, worst %s", worstRow.Replicas, joinInts(worstRow.SteadyPerReplica),
				joinInts(worstRow.SteadyNoticesPerReplica), times(share(worstRow.SteadyNoticesPerReplica)), times(wholeWorst)),
			Ratio: worst, Goal: "≤ 1.2×", Met: worst <= targetScaleShare,
		}
		t.Note = fmt.Sprintf("every replica was ready before the drain started; each pulls notices in batches of up to %d and keeps up to %d pulled ahead",
			snapshotter.DefaultConfig().BatchSize, 2*snapshotter.DefaultConfig().BatchSize)
		if c := worstRow.PerReplicaCPU; len(c) == len(worstRow.PerReplicaNotices) && len(c) > 1 {
			var per []float64
			for i := range c {
				per = append(per, float64(worstRow.PerReplicaNotices[i])/c[i].Seconds())
			}
			t.Note += fmt.Sprintf("; over the whole drain each replica's CPU ranged %s to %s s (max / min %s) and its notices per CPU-second %s to %s (%s)",
				sig(slices.Min(c).Seconds()), sig(slices.Max(c).Seconds()), times(float64(slices.Max(c))/float64(slices.Min(c))),
				rate(slices.Min(per)), rate(slices.Max(per)), times(slices.Max(per)/slices.Min(per)))
		}
		ts = append(ts, t)
	}
	last := s.Rows[len(s.Rows)-1]
	if ok && last.Replicas > 1 {
		x := last.PerWorkerCPUSecond() / one.PerWorkerCPUSecond()
		ts = append(ts, Target{
			What:     fmt.Sprintf("snapshots per worker CPU-second at %d replicas no worse than at 1", last.Replicas),
			Measured: fmt.Sprintf("%s vs %s, over the drain", rate(last.PerWorkerCPUSecond()), rate(one.PerWorkerCPUSecond())),
			Ratio:    x, Goal: "≥ 1×", Met: x >= targetScaleEfficiency,
			Note: fmt.Sprintf("start-up, before the drain, took %s CPU s at %d replicas (to each /readyz), %s at 1 (%s and %s of the drain's worker CPU); rebuilds per snapshot stored %s vs %s",
				sig(last.StartCPU.Seconds()), last.Replicas, sig(one.StartCPU.Seconds()), percent(last.StartCPU.Seconds()/last.WorkerCPU.Seconds()), percent(one.StartCPU.Seconds()/one.WorkerCPU.Seconds()),
				sig(float64(last.Rebuilds)/float64(last.Snapshots)), sig(float64(one.Rebuilds)/float64(one.Snapshots))),
		})
	}
	if s.Quick {
		for i := range ts {
			ts[i].NA = true
			ts[i].Note = strings.TrimSuffix("judged on the full form's backlog: the quick form's drains in a few seconds; "+ts[i].Note, "; ")
		}
	}
	return ts
}

func joinInts(xs []int64) string {
	var out []string
	for _, x := range xs {
		out = append(out, thousands(x))
	}
	return strings.Join(out, " / ")
}

// Diagnose says what held a replica count back, from the figures that
// show it: the machine's cores, the workers' quota, or PostgreSQL.
func (s *ScaleReport) Diagnose(r ScaleRow) string {
	var parts []string
	use := r.QuotaUse(s.CPU)
	switch {
	case use >= 0.9:
		// They had their quota: whatever else ran on the machine, the
		// work per snapshot decides the rate.
		parts = append(parts, fmt.Sprintf("the workers were CPU-bound (%s of their quota, throttled in %s of periods; machine %s busy)", percent(use), percent(r.Throttled), percent(r.MachineBusy)))
	case r.MachineBusy >= 0.9:
		parts = append(parts, fmt.Sprintf("the workers got %s of their quota while the machine's cores were %s busy (PostgreSQL %s CPU s, NATS %s, workers %s in %s s): they waited for a core",
			percent(use), percent(r.MachineBusy), sig(r.PGCPU.Seconds()), sig(r.NATSCPU.Seconds()), sig(r.WorkerCPU.Seconds()), sig(r.Elapsed.Seconds())))
	default:
		parts = append(parts, fmt.Sprintf("the workers used %s of their quota (throttled in %s of periods) with cores to spare (machine %s busy): they waited on PostgreSQL or NATS", percent(use), percent(r.Throttled), percent(r.MachineBusy)))
	}
	if one, ok := s.row(1); ok && r.Replicas > 1 && one.PerWorkerCPUSecond() > 0 {
		parts = append(parts, fmt.Sprintf("snapshots per worker CPU-second %s (1 replica: %s)", rate(r.PerWorkerCPUSecond()), rate(one.PerWorkerCPUSecond())))
	}
	if w := s.waits(r); w != "" {
		parts = append(parts, "PostgreSQL backends "+w)
	}
	return strings.Join(parts, "; ")
}

// waits summarises the sampled PostgreSQL backend states: running, idle
// and the two most frequent waits.
func (s *ScaleReport) waits(r ScaleRow) string {
	total := 0
	type kv struct {
		k string
		n int
	}
	var others []kv
	for k, n := range r.PGStates {
		total += n
		if k != "running" && k != "idle" {
			others = append(others, kv{k, n})
		}
	}
	if total == 0 {
		return ""
	}
	slices.SortFunc(others, func(a, b kv) int { return cmp.Or(b.n-a.n, strings.Compare(a.k, b.k)) })
	out := []string{percent(float64(r.PGStates["running"])/float64(total)) + " running", percent(float64(r.PGStates["idle"])/float64(total)) + " idle"}
	for i, o := range others {
		if i == 2 {
			break
		}
		out = append(out, percent(float64(o.n)/float64(total))+" "+o.k)
	}
	return strings.Join(out, ", ")
}

// ScaleChart is replicas against snapshots/s, with the ideal line
// (n × one replica's).
func (r *Report) ScaleChart() Chart {
	s := r.Scale
	c := Chart{
		Title:   fmt.Sprintf("Snapshots/s against worker replicas (%g CPU each, log scales)", s.CPU),
		XLabel:  "snapshotter run replicas",
		YLabel:  "snapshots/s",
		XFormat: func(v float64) string { return fmt.Sprint(int(v)) },
		YFormat: func(v float64) string { return thousands(int64(v)) },
	}
	steady := Series{Name: "steady (10–90% of the backlog)", Color: "#1f77b4"}
	whole := Series{Name: "over the whole drain", Color: "#ff7f0e"}
	ideal := Series{Name: "ideal (n × 1 replica, steady)", Color: "#7f7f7f", Dashed: true}
	one, ok := s.row(1)
	for _, row := range s.Rows {
		c.XTicks = append(c.XTicks, float64(row.Replicas))
		whole.Points = append(whole.Points, Point{float64(row.Replicas), row.SnapshotsPerSec})
		if row.SteadySnapshotsPerSec > 0 {
			steady.Points = append(steady.Points, Point{float64(row.Replicas), row.SteadySnapshotsPerSec})
		}
		if ok && one.SteadySnapshotsPerSec > 0 {
			ideal.Points = append(ideal.Points, Point{float64(row.Replicas), float64(row.Replicas) * one.SteadySnapshotsPerSec})
		}
	}
	for _, x := range []Series{steady, whole, ideal} {
		if len(x.Points) > 0 {
			c.Series = append(c.Series, x)
		}
	}
	return c
}

// ScaleChartSVG renders [Report.ScaleChart]; nil when the step has no
// figures.
func (r *Report) ScaleChartSVG() ([]byte, error) {
	if r.Scale == nil || len(r.Scale.Rows) == 0 {
		return nil, nil
	}
	return r.ScaleChart().SVG()
}

// writeScale renders the scale-out section. chart is the chart's path
// relative to the page ("" leaves it out).
func (r *Report) writeScale(b *strings.Builder, chart string) {
	s := r.Scale
	if s == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## 6. Scale-out: CPU-limited worker replicas\n\n")
	if s.Skipped != "" {
		p("Skipped: %s. The step needs root (or a delegated cgroup) to give each replica a CPU quota; no figure is reported without one.\n\n", s.Skipped)
		return
	}
	if len(s.Rows) == 0 {
		p("No figures: the step failed (see the failures above).\n\n")
		return
	}
	d := snapshotter.DefaultConfig()
	p("1 to %d `snapshotter run` processes (the real binary, built once by the step, default worker config: batches of %d notices, %d aggregates at once), ", s.Rows[len(s.Rows)-1].Replicas, d.BatchSize, d.Concurrency)
	p("each in its own cgroup with a CPU quota of **%g CPU** (%s µs per %s µs period, like a Kubernetes `limits.cpu` of %dm; %s) and `GOMAXPROCS=%d` (%s), ",
		s.CPU, thousands(int64(math.Round(s.CPU*float64(s.Period.Microseconds())))), thousands(s.Period.Microseconds()), int(math.Round(s.CPU*1000)), s.Cgroups, s.GOMAXPROCS, s.GOMAXPROCSReason)
	p("drain a backlog of %s Accounts per replica (n replicas: n × %s Accounts of %d events, %d notices each, threshold %d: one snapshot per Account; so every run lasts about as long) on a fresh stream of a nats-server %s run by the step (the version go.mod pins, a separate process), ",
		thousands(int64(s.AggregatesPerReplica)), thousands(int64(s.AggregatesPerReplica)), backlogEvents, backlogEvents/backlogPerNotice, s.Threshold, s.NATSVersion)
	p("against a database of their own on the PostgreSQL above. PostgreSQL and NATS run unconstrained. ")
	p("The replicas start on the empty stream; once every one answers `/readyz`, the step pauses the consumer, publishes the backlog and resumes it: the drain runs from there to the consumer having nothing pending or unacknowledged. *Start-up* (exec, connections, binding the consumer, to the last `/readyz`) is measured apart, as a fleet that runs for days pays it once. ")
	p("Each figure is from the run with the median drain time of %d, except the speed-up: the median of each round's ratio to that round's one replica, so that a ratio compares runs taken a minute apart. ", s.Runs)
	p("*Steady* rates are those while the backlog went from 10%% to 90%% done (interpolated between samples of the consumer's info), which the targets judge; the others are over the whole drain, its tail included. ")
	p("*Shares* are max / min over the replicas of the notices each acked and the snapshots each stored over the whole drain (their `/metrics`); the *steady share* that of the snapshots each stored from 10%% of the backlog done to 80%% (or to the last delivery if sooner): the work, as a replica whose batches held more notices of one aggregate coalesces them into fewer decisions. ")
	p("*Worker CPU* is the replicas' cgroups' usage during the drain; *start-up CPU* what they had used when their `/readyz` first answered 200; *PostgreSQL CPU* the step's database's backends plus the server's background processes during the drain (`/proc/<pid>/stat`, other databases' backends left out); *NATS CPU* the nats-server's. ")
	p("Every Account is checked to end with its snapshot at the head.\n\n")
	t := NewTable("replicas:", "Accounts:", "snapshots/s:", "notices/s:", "speed-up:", "steady snapshots/s:", "steady speed-up:", "drain s:", "steady share:", "shares notices / snapshots:", "worker CPU s:", "PostgreSQL CPU s:", "NATS CPU s:", "snapshots per worker CPU-s:", "start-up ms:", "start-up CPU s:")
	for _, row := range s.Rows {
		sp, ssp := "", ""
		if row.Replicas > 1 {
			sp, ssp = times(s.Speedup(row)), times(s.SteadySpeedup(row))
		}
		pg := "—"
		if s.PGMeasured {
			pg = sig(row.PGCPU.Seconds())
		}
		t.Add(fmt.Sprint(row.Replicas), thousands(int64(row.Aggregates)), rate(row.SnapshotsPerSec), rate(row.NoticesPerSec), sp, rate(row.SteadySnapshotsPerSec), ssp, sig(row.Elapsed.Seconds()),
			times(row.SteadyShare()), times(row.NoticeShare())+" / "+times(row.SnapshotShare()), sig(row.WorkerCPU.Seconds()), pg, sig(row.NATSCPU.Seconds()), rate(row.PerWorkerCPUSecond()), ms(row.StartUp), sig(row.StartCPU.Seconds()))
	}
	b.WriteString(t.String())
	p("\nWhere the time went: *quota used* is the workers' CPU over what their quota allowed during the drain (near 100%%: CPU-bound; well below: waiting on PostgreSQL or NATS); ")
	p("*throttled* the share of their enforcement periods in which they ran out of quota; *machine busy* every core's busy time during the drain (anything on the machine); ")
	p("*PostgreSQL cores* and *NATS cores* their CPU over the drain time (1 is a whole core: the headroom the quota is chosen to leave); ")
	p("*last delivery → drained* the end of the drain after the consumer had no notice left to deliver, when the replicas finish what they pulled (each keeps up to %d notices pulled ahead) and the first to run out idle; ", 2*d.BatchSize)
	p("*rebuilds per snapshot* the replicas' decisions that a snapshot was due (each a rebuild) over the snapshots stored: above 1, replicas rebuilt aggregates another had just stored, whose writes the store refused as no-ops; *decisions not due* the coalesced notices that found the snapshot current; ")
	p("the PostgreSQL backends' states are sampled every 100 ms from `pg_stat_activity` (*idle*: waiting for the worker).\n\n")
	t = NewTable("replicas:", "quota used:", "throttled:", "machine busy:", "PostgreSQL cores:", "NATS cores:", "PostgreSQL CPU ms per 1,000 snapshots:", "NATS CPU ms per 1,000 notices:", "last delivery → drained ms:", "rebuilds per snapshot:", "decisions not due:", "PostgreSQL backends")
	for _, row := range s.Rows {
		pg, pgCores := "—", "—"
		if s.PGMeasured && row.Snapshots > 0 {
			pg = sig(float64(row.PGCPU) / float64(time.Millisecond) / float64(row.Snapshots) * 1000)
			pgCores = sig(row.PGCPU.Seconds() / row.Elapsed.Seconds())
		}
		tail := "—"
		if row.LastDelivery > 0 {
			tail = ms(row.Elapsed - row.LastDelivery)
		}
		t.Add(fmt.Sprint(row.Replicas), percent(row.QuotaUse(s.CPU)), percent(row.Throttled), percent(row.MachineBusy), pgCores, sig(row.NATSCPU.Seconds()/row.Elapsed.Seconds()), pg,
			sig(natsPerThousand(row)), tail, sig(float64(row.Rebuilds)/float64(row.Snapshots)), thousands(row.NotDue), s.waits(row))
	}
	b.WriteString(t.String())
	if chart != "" {
		p("\n![Snapshots/s against replicas, log scales: the steady rate, the rate over the whole drain, and the ideal n × one replica (dashed)](%s)\n", chart)
	}
	if ts := s.Targets(); len(ts) > 0 {
		p("\nTargets (issue 16):\n\n")
		writeTargetTable(b, ts)
	}
	p("\n")
	s.writeCluster(b)
}

// natsPerThousand is a run's NATS CPU in ms per 1,000 notices.
func natsPerThousand(r ScaleRow) float64 {
	return float64(r.NATSCPU) / float64(time.Millisecond) / float64(r.Notices) * 1000
}

// writeCluster renders the runs against the cluster beside the same
// replica counts on one server.
func (s *ScaleReport) writeCluster(b *strings.Builder) {
	c := s.Cluster
	if c == nil || len(c.Rows) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("### Against a %d-node cluster, the stream at %d replicas\n\n", c.Nodes, c.Nodes)
	p("The same replica counts, run once each against %d nats-servers of the same version clustered on loopback, the stream (and so its work-queue consumer) replicated on every node: each notice is stored, delivered and acknowledged through the stream's and the consumer's Raft groups. ", c.Nodes)
	p("*NATS CPU* is the %d servers' together; *one server* the median run above of the same replica count.\n\n", c.Nodes)
	t := NewTable("replicas:", "snapshots/s:", "one server:", "cluster / one server:", "steady snapshots/s:", "steady speed-up:", "drain s:", "NATS CPU s:", "NATS cores:", "NATS CPU ms per 1,000 notices:", "one server:", "cost per notice, R3 / R1:", "snapshots per worker CPU-s:", "quota used:")
	var one ScaleRow
	for _, row := range c.Rows {
		if row.Replicas == 1 {
			one = row
		}
	}
	for _, row := range c.Rows {
		single, ok := s.row(row.Replicas)
		vs, perOne, costRatio, ssp := "—", "—", "—", ""
		if ok {
			vs = rate(single.SnapshotsPerSec)
			perOne = sig(natsPerThousand(single))
			costRatio = times(natsPerThousand(row) / natsPerThousand(single))
		}
		if row.Replicas > 1 && one.SteadySnapshotsPerSec > 0 && row.SteadySnapshotsPerSec > 0 {
			ssp = times(row.SteadySnapshotsPerSec / one.SteadySnapshotsPerSec)
		}
		ratio := "—"
		if ok && single.SnapshotsPerSec > 0 {
			ratio = times(row.SnapshotsPerSec / single.SnapshotsPerSec)
		}
		t.Add(fmt.Sprint(row.Replicas), rate(row.SnapshotsPerSec), vs, ratio, rate(row.SteadySnapshotsPerSec), ssp, sig(row.Elapsed.Seconds()),
			sig(row.NATSCPU.Seconds()), sig(row.NATSCPU.Seconds()/row.Elapsed.Seconds()), sig(natsPerThousand(row)), perOne, costRatio, rate(row.PerWorkerCPUSecond()), percent(row.QuotaUse(s.CPU)))
	}
	b.WriteString(t.String())
	p("\n")
}
