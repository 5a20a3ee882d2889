package chaos

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// DiskFault is what one disk-full fault (NATSDiskFull or PGDiskFull)
// did, as the report prints it.
type DiskFault struct {
	Kind FaultKind
	// At is when the disk was filled, from the start of the load.
	At time.Duration
	// Target is the server whose disk it was: nats-server, nats-N or
	// PostgreSQL.
	Target string
	// Full is how long the disk stayed full; Filler is how many bytes
	// the filler took (the fill and its top-ups while full).
	Full   time.Duration
	Filler int64
	// WriteErrors counts the server's log lines, from the fill to the
	// end of the fault, that name "no space left on device".
	WriteErrors int

	// NATS. Disabled: the server logged that it disabled JetStream.
	// Stuck: after space returned it did not take notices again by itself
	// (see diskfull.go). Restarted: the suite restarted it for that, as an
	// operator would. LedStream and NewLeader: the node led the notice
	// stream when its disk filled, and the leader after. StoredAgain is
	// from space returning to the first notice the stream stored after
	// it (one server), Rejoined to the node's replica being current again
	// (cluster); -1 when it did not happen in time.
	Disabled    bool
	Stuck       bool
	Restarted   bool
	LedStream   bool
	NewLeader   string
	StoredAgain time.Duration
	Rejoined    time.Duration

	// PostgreSQL. WALSwitch: the fault switched WAL segments while the
	// disk was full (Fault.Hard). Panicked: the server logged a PANIC and
	// went down. Back is from space returning to the first query the
	// server answered (after the suite started it, when it had shut
	// down: Restarted). LoadBack, WorkersBack, SlowestWorker and NotBack
	// are as in [PGFault], from Back on.
	WALSwitch     bool
	Panicked      bool
	Back          time.Duration
	LoadBack      time.Duration
	WorkersBack   time.Duration
	SlowestWorker string
	NotBack       []string
}

// String is the fault's line in the report.
func (d DiskFault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs %-14s %s full %v (filler %s), %d log lines of ENOSPC", d.At.Seconds(), d.Kind, d.Target,
		d.Full.Round(time.Millisecond), formatBytes(d.Filler), d.WriteErrors)
	switch d.Kind {
	case NATSDiskFull:
		if d.LedStream {
			fmt.Fprintf(&b, "; it led the notice stream, then %s", ifText(d.NewLeader, "no one"))
		}
		if d.Disabled {
			b.WriteString("; JetStream disabled")
		}
		switch {
		case d.Stuck && d.Restarted:
			b.WriteString("; took no notices after space returned: restarted")
		case d.Stuck:
			b.WriteString("; took no notices after space returned")
		default:
			b.WriteString("; took notices again by itself")
		}
		if d.Rejoined != 0 {
			fmt.Fprintf(&b, "; replica current again after %s", backText(d.Rejoined))
		} else {
			fmt.Fprintf(&b, "; notices stored again after %s", backText(d.StoredAgain))
		}
	case PGDiskFull:
		if d.WALSwitch {
			b.WriteString("; WAL segment switch while full")
		}
		if d.Panicked {
			b.WriteString("; PANIC, server down")
		}
		if d.Restarted {
			b.WriteString("; started again after space returned")
		}
		fmt.Fprintf(&b, "; answering %s after space returned, writing again after: load %s, workers %s",
			backText(d.Back), backText(d.LoadBack), backText(d.WorkersBack))
		if d.SlowestWorker != "" {
			b.WriteString(" (slowest " + d.SlowestWorker + ")")
		}
		if len(d.NotBack) > 0 {
			b.WriteString("; NOT BACK: " + strings.Join(d.NotBack, ", "))
		}
	}
	return b.String()
}

func ifText(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func formatBytes(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// diskRows adds the disk-full faults' rows to the report's table.
func diskRows(row func(k string, v any, note string), f Figures) {
	if f.DiskSkipped != "" {
		row("disk full (NATS, PostgreSQL)", "-", "skipped: "+f.DiskSkipped)
		return
	}
	var nats, pg []DiskFault
	for _, d := range f.DiskFaults {
		if d.Kind == NATSDiskFull {
			nats = append(nats, d)
		} else {
			pg = append(pg, d)
		}
	}
	stuck, restarted, disabled := 0, 0, 0
	var full time.Duration
	for _, d := range nats {
		full = max(full, d.Full)
		stuck += b2i(d.Stuck)
		restarted += b2i(d.Restarted)
		disabled += b2i(d.Disabled)
	}
	row("NATS disk full", len(nats), fmt.Sprintf("full max %v; took no notices after space returned: %d (JetStream disabled in %d), restarted %d; saves must not fail for it",
		full.Round(time.Millisecond), stuck, disabled, restarted))
	if f.PGSkipped != "" {
		row("PG disk full", "-", "skipped: "+f.PGSkipped)
		return
	}
	full = 0
	switches, panics, starts := 0, 0, 0
	var back time.Duration
	for _, d := range pg {
		full = max(full, d.Full)
		switches += b2i(d.WALSwitch)
		panics += b2i(d.Panicked)
		starts += b2i(d.Restarted)
		if back >= 0 {
			back = max(back, d.LoadBack, d.WorkersBack)
			if d.LoadBack < 0 || d.WorkersBack < 0 {
				back = -1
			}
		}
	}
	row("PG disk full", len(pg), fmt.Sprintf("full max %v; %d with WAL segment switches, %d PANICs, %d starts after space returned; writing again after max %s",
		full.Round(time.Millisecond), switches, panics, starts, backText(back)))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// printDiskFaults writes a line per disk-full fault under the table.
func printDiskFaults(w io.Writer, f Figures) {
	if len(f.DiskFaults) == 0 {
		return
	}
	fmt.Fprintln(w, "\ndisk-full faults (seconds after the load started):")
	for _, d := range f.DiskFaults {
		fmt.Fprintln(w, "  "+d.String())
	}
}

// diskFullGrace is how long after PostgreSQL's disk was freed a save may
// still return the disk-full error it met before: the time between the
// server's error and the load generator's record of it.
const diskFullGrace = time.Second

// IsDiskFullError reports whether a save's error is PostgreSQL's for a
// full disk: SQLSTATE 53100 (disk_full), or an I/O error of ENOSPC
// ("could not extend file ...: No space left on device").
func IsDiskFullError(msg string) bool {
	return strings.Contains(msg, "No space left on device") || strings.Contains(msg, "SQLSTATE 53100")
}

// UnexplainedByDiskFull returns the saves of failed that a full disk does
// not explain: a failure is explained when its error is PostgreSQL's
// disk-full error ([IsDiskFullError]) and it came while PostgreSQL's disk
// was full (a window) or within grace after. A disk-full error at any
// other time, and any other error while the disk was full, are not (a
// server that went down while its disk was full is an outage of its own,
// for [UnexplainedFailures]).
func UnexplainedByDiskFull(failed []FailedSave, windows []Window, grace time.Duration) []FailedSave {
	var out []FailedSave
	for _, f := range failed {
		if IsDiskFullError(f.Err) && slices.ContainsFunc(windows, func(w Window) bool { return !f.At.Before(w.From) && !f.At.After(w.To.Add(grace)) }) {
			continue
		}
		out = append(out, f)
	}
	return out
}
