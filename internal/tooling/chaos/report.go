package chaos

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Figures are the counts a run prints.
type Figures struct {
	Form     string
	Seed     uint64
	Workers  int
	Build    string
	Duration time.Duration // of the load
	// NATSVersion is the nats-server's version; Cluster says whether it
	// ran as a ClusterNodes-node cluster with the stream replicated.
	NATSVersion string
	Cluster     bool
	Total       time.Duration // of the whole run

	Kills        int // SIGKILLs of workers
	NATSRestarts int
	NATSKills    int // NATS restarts that used SIGKILL
	// LeaderStalls and FollowerStalls (cluster mode) hold, per SIGKILL
	// of the stream's leader or of a follower, how long notices stalled:
	// from the kill to the first notice stored after it by a live leader
	// (the node itself, back after its restart, if none was elected first).
	LeaderStalls   []time.Duration
	FollowerStalls []time.Duration
	PGRounds       int // pg_terminate_backend rounds
	// Purges and NoticesLost count the LoseNotices faults and the
	// notices they removed before any worker acknowledged them.
	Purges      int
	NoticesLost int64
	// Cuts are the partitions, in order (partition.go); PartitionSkipped
	// says why there were none.
	Cuts             []Cut
	PartitionSkipped string
	// Links counts the worker-link faults (Toxiproxy).
	Links    int
	PGConns  int // worker connections terminated
	Drains   int // graceful drains during the load
	DrainMax time.Duration
	Crashes  int // processes that exited on their own
	Refused  int // worker starts refused while NATS was down

	// PGServer describes the PostgreSQL server: the suite's own cluster,
	// or an external one (then PGSkipped says why there are no
	// PostgreSQL restarts and crashes).
	PGServer  string
	PGSkipped string
	// PGFaults are the PostgreSQL restarts and crashes, in order.
	PGFaults []PGFault
	// DiskFaults are the disk-full faults, in order; DiskSkipped says why
	// there were none.
	DiskFaults  []DiskFault
	DiskSkipped string

	LoadExitCode     int
	Saves            int64 // from the load's summary
	RecordedSaves    int64
	RecordedEvents   int64
	StoredEvents     int64
	Streams          int
	Conflicts        int64
	LoadErrors       int64
	NoticesPublished int64 // the load's last progress line
	NoticesDropped   int64
	StreamMessages   uint64 // the notice stream's last sequence
	InFlight         int64
	InFlightStreams  int
	// FailedSaves counts the saves that returned an error;
	// UnexplainedFailures those that did not fail during a PostgreSQL
	// outage (or just after one). InDoubt counts the events that failed
	// saves committed anyway, InDoubtSaves those saves.
	FailedSaves         int64
	UnexplainedFailures int
	InDoubt             int64
	InDoubtSaves        int
	// FailuresByError counts the failed saves by error text (ids and
	// numbers replaced); LatestFailureAfterReturn is the latest a save
	// failed after PostgreSQL had come back.
	FailuresByError          map[string]int
	LatestFailureAfterReturn time.Duration
	// InDoubtExamples describe the first failed saves that committed.
	InDoubtExamples []string

	SnapshotWrites   int // audit rows (inserts and updates)
	SnapshotRewrites int // writes at the version already stored
	SnapshotDeletes  int
	Snapshotted      int // aggregates with a snapshot at the end
	Swept            int64

	EventsLost     int64
	Regressions    int
	Divergences    int
	Mismatches     int
	Verified       int
	VerifyByStatus map[string]int

	Converged    bool
	ConvergeTime time.Duration
	// Rollback is the rollback phase's (zero when it was skipped).
	Rollback        RollbackFigures
	MilestoneMisses int
	LogWarnings     int
	LogErrors       int
	DrainTimeouts   int
	StartsWithoutPG int // worker starts that found PostgreSQL down and ran on
}

// Check is one pass/fail check.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// Result is the outcome of a run.
type Result struct {
	Figures Figures
	Checks  []Check
	// Evidence holds the details of failed checks: aggregates, versions,
	// log lines.
	Evidence []string
}

// OK reports whether every check passed.
func (r *Result) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return len(r.Checks) > 0
}

// Print writes the figures table, the checks and the evidence.
func (r *Result) Print(w io.Writer) {
	f := r.Figures
	fmt.Fprintf(w, "\nevsnap chaos suite — %s form, seed %d, %d workers, %s\n", f.Form, f.Seed, f.Workers, f.Build)
	if f.Cluster {
		fmt.Fprintf(w, "nats-server %s, %d-node cluster, notice stream at %d replicas\n", f.NATSVersion, ClusterNodes, ClusterNodes)
	} else {
		fmt.Fprintf(w, "nats-server %s, one server\n", f.NATSVersion)
	}
	fmt.Fprintf(w, "PostgreSQL: %s\n\n", f.PGServer)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any, note string) {
		fmt.Fprintf(tw, "  %s\t%v\t%s\n", k, v, note)
	}
	row("duration (load)", f.Duration.Round(time.Second), fmt.Sprintf("whole run %v", f.Total.Round(time.Second)))
	row("worker kills (SIGKILL)", f.Kills, "")
	if f.Cluster {
		row("NATS leader kills (SIGKILL)", len(f.LeaderStalls), "notices stalled "+formatStalls(f.LeaderStalls)+": from the kill to the next notice stored (by a new leader, or once the node was back if none was elected before its restart)")
		row("NATS follower kills (SIGKILL)", len(f.FollowerStalls), "notices stalled "+formatStalls(f.FollowerStalls))
	} else {
		row("NATS restarts", f.NATSRestarts, fmt.Sprintf("%d of them by SIGKILL", f.NATSKills))
	}
	row("PG connection terminations", f.PGConns, fmt.Sprintf("in %d pg_terminate_backend rounds", f.PGRounds))
	for _, r := range partitionRows(f) {
		row(r.name, r.value, r.note)
	}
	row("worker links (Toxiproxy)", f.Links, "each 1-50 ms of latency, a stall, then resets of every connection that sends, on the workers' links to PostgreSQL and NATS")
	row("notices lost (stream purged)", f.NoticesLost, fmt.Sprintf("in %d purges, not yet acknowledged by a worker: only the sweep brings their aggregates back", f.Purges))
	if f.PGSkipped != "" {
		row("PG restarts and crashes", "-", "skipped: "+f.PGSkipped)
	} else {
		for _, k := range []FaultKind{RestartPG, CrashPG, KillPG} {
			name := map[FaultKind]string{RestartPG: "PG clean restarts (fast)", CrashPG: "PG immediate shutdowns", KillPG: "PG postmaster SIGKILLs"}[k]
			row(name, countPG(f.PGFaults, k), summarizePG(f.PGFaults, k))
		}
	}
	diskRows(row, f)
	row("graceful drains (SIGTERM)", f.Drains, fmt.Sprintf("slowest exit %v (every worker also drained at the end)", f.DrainMax.Round(time.Millisecond)))
	row("worker starts refused, NATS down", f.Refused, "exit 1 at start-up; restarted like a supervisor would")
	if f.PGSkipped == "" {
		row("worker starts, PG down", f.StartsWithoutPG, "ran on and connected once it was back (they used to exit 1)")
	}
	row("unexpected exits", f.Crashes, "must be 0")
	row("saves", f.Saves, fmt.Sprintf("recorded %d (with the rollback phase's); %d conflicts, %d errors", f.RecordedSaves, f.Conflicts, f.LoadErrors))
	row("failed saves", f.FailedSaves, fmt.Sprintf("%d outside a PostgreSQL outage (must be 0); latest %v after a return; %d committed anyway (%d events, in doubt)",
		f.UnexplainedFailures, f.LatestFailureAfterReturn.Round(time.Millisecond), f.InDoubtSaves, f.InDoubt))
	row("events", f.StoredEvents, fmt.Sprintf("in the store; %d recorded, %d over %d streams in flight at stop", f.RecordedEvents, f.InFlight, f.InFlightStreams))
	row("notices published", f.NoticesPublished, fmt.Sprintf("load's last progress line; %d dropped; stream last seq %d", f.NoticesDropped, f.StreamMessages))
	row("snapshots written", f.SnapshotWrites, fmt.Sprintf("audit rows; %d rewrites at the same version, %d by the sweep (logs), %d rows (aggregate, schema version)", f.SnapshotRewrites, f.Swept, f.Snapshotted))
	row("events lost", f.EventsLost, "must be 0")
	row("regressions", f.Regressions, fmt.Sprintf("must be 0 (divergent states at one version: %d)", f.Divergences))
	row("mismatches", f.Mismatches, fmt.Sprintf("must be 0 (verify checked %d: %s)", f.Verified, formatStatuses(f.VerifyByStatus)))
	conv := "not converged"
	if f.Converged {
		conv = f.ConvergeTime.Round(time.Millisecond).String()
	}
	row("convergence time", conv, fmt.Sprintf("after the load stopped; %d streams", f.Streams))
	row("milestones not snapshotted", f.MilestoneMisses, "information: the sweep is threshold-only")
	if rb := f.Rollback; rb.SideBySide > 0 {
		row("rollback: v1 and v2 side by side", rb.SideBySide, fmt.Sprintf("v1 %d saves, v2 %d saves; v2 loads %d, %d of them full replays (before its snapshots)", rb.V1Saves, rb.V2Saves, rb.V2Loads, rb.V2Replays))
		row("rollback: at the rollback", rb.Snapshotted, fmt.Sprintf("Accounts with a v1 snapshot; %d with a v2 one; v1 full replays while v2 ran: %d of %d loads", rb.V2Snapshots, rb.V1ReplaysBefore, rb.V1LoadsBefore))
		row("rollback: v1 full replays after", rb.ReplaysAfter, fmt.Sprintf("must be 0: in %d v1 loads, over %v, of the Accounts v1 had snapshotted", rb.LoadsAfter, rb.After))
	}
	row("worker log warnings/errors", fmt.Sprintf("%d/%d", f.LogWarnings, f.LogErrors), fmt.Sprintf("%d drain timeouts", f.DrainTimeouts))
	_ = tw.Flush()
	if len(f.PGFaults) > 0 {
		fmt.Fprintln(w, "\nPostgreSQL faults (seconds after the load started):")
		for _, p := range f.PGFaults {
			fmt.Fprintln(w, "  "+p.String())
		}
	}
	if len(f.Cuts) > 0 {
		fmt.Fprintln(w, "\npartitions (seconds after the load started; packets dropped in silence until the heal):")
		for _, c := range f.Cuts {
			fmt.Fprintln(w, "  "+c.String())
		}
	}
	printDiskFaults(w, f)
	if len(f.InDoubtExamples) > 0 {
		fmt.Fprintln(w, "\nfailed saves that committed anyway (in doubt; their events are stored once, and later saves build on them):")
		for _, e := range f.InDoubtExamples {
			fmt.Fprintln(w, "  "+e)
		}
	}
	if len(f.FailuresByError) > 0 {
		fmt.Fprintln(w, "\nfailed saves by error (ids and numbers replaced):")
		msgs := make([]string, 0, len(f.FailuresByError))
		for m := range f.FailuresByError {
			msgs = append(msgs, m)
		}
		slices.SortFunc(msgs, func(a, b string) int { return f.FailuresByError[b] - f.FailuresByError[a] })
		for i, m := range msgs {
			if i == 8 {
				fmt.Fprintf(w, "  ... and %d more kinds\n", len(msgs)-8)
				break
			}
			fmt.Fprintf(w, "  %6d  %s\n", f.FailuresByError[m], m)
		}
	}
	fmt.Fprintln(w)
	for _, c := range r.Checks {
		mark := "PASS"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s", mark, c.Name)
		if c.Detail != "" {
			fmt.Fprintf(w, ": %s", c.Detail)
		}
		fmt.Fprintln(w)
	}
	if len(r.Evidence) > 0 {
		fmt.Fprintln(w, "\nevidence:")
		for _, e := range r.Evidence {
			fmt.Fprintln(w, "  "+strings.ReplaceAll(e, "\n", "\n  "))
		}
	}
	if r.OK() {
		fmt.Fprintln(w, "\nevery check passed")
	} else {
		fmt.Fprintf(w, "\nFAILED; rerun the same schedule with --seed %d (add --keep to keep logs and the database)\n", f.Seed)
	}
}

func countPG(faults []PGFault, k FaultKind) int {
	n := 0
	for _, f := range faults {
		if f.Kind == k {
			n++
		}
	}
	return n
}

// summarizePG is "outage max 1.2s; writing again after max 300ms (load),
// 800ms (workers)" for the faults of kind k.
func summarizePG(faults []PGFault, k FaultKind) string {
	var outage, load, workers time.Duration
	n := 0
	for _, f := range faults {
		if f.Kind != k {
			continue
		}
		n++
		outage = max(outage, f.Outage)
		if f.LoadBack < 0 || load < 0 {
			load = -1
		} else {
			load = max(load, f.LoadBack)
		}
		if f.WorkersBack < 0 || workers < 0 {
			workers = -1
		} else {
			workers = max(workers, f.WorkersBack)
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("outage max %v; writing again after max %s (load), %s (workers)", outage.Round(time.Millisecond), backText(load), backText(workers))
}

// formatStalls is "max 4.1s (4.1s, 3.2s)", or "-" for none.
func formatStalls(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	parts := make([]string, len(d))
	for i, x := range d {
		parts[i] = x.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("max %v (%s)", slices.Max(d).Round(time.Millisecond), strings.Join(parts, ", "))
}

func formatStatuses(m map[string]int) string {
	var parts []string
	for _, st := range verifyStatuses {
		if m[st] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, m[st]))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
