//go:build unix

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
)

// check runs every check after the workers have stopped.
func (s *suite) check(ctx context.Context, sum LoadSummary, sumErr error, conv convergence, convErr error) (*Result, error) {
	res := &Result{}
	add := func(name string, ok bool, format string, args ...any) {
		res.Checks = append(res.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	evidence := func(format string, args ...any) {
		res.Evidence = append(res.Evidence, fmt.Sprintf(format, args...))
	}
	f := &s.fig

	// The load generator: its summary, its errors.
	f.Saves, f.Conflicts, f.LoadErrors = sum.Saves, sum.Conflicts, sum.Errors
	f.NoticesPublished, f.NoticesDropped = sum.NoticesPublished, sum.NoticesDropped

	// Every recorded save is in the store exactly once: the main load's
	// and the rollback phase's.
	saves, failed, perr := readRecord(s.record)
	mainSaves, mainFailed := int64(len(saves)), int64(len(failed))
	phaseSaves := map[string]int64{}
	for _, path := range s.phaseRecords {
		more, moreFailed, err := readRecord(path)
		if perr == nil {
			perr = err
		}
		phaseSaves[path] = int64(len(more))
		saves = append(saves, more...)
		failed = append(failed, moreFailed...)
	}
	// Saves fail only while PostgreSQL is down, or just after its return
	// on a pooled connection that died with the old server.
	s.mu.Lock()
	windows := slices.Clone(s.pgOutages)
	s.mu.Unlock()
	unexplained := UnexplainedByDiskFull(UnexplainedFailures(failed, windows, pgFailureGrace), s.diskFullWindows(), diskFullGrace)
	f.FailedSaves, f.UnexplainedFailures = int64(len(failed)), len(unexplained)
	f.FailuresByError, f.LatestFailureAfterReturn = failureSummary(failed, append(windows, s.diskFullWindows()...))
	// The load exits 1 when saves failed; that is all it may say.
	exitOK := f.LoadExitCode == 0 || (f.LoadExitCode == 1 && sum.Errors > 0)
	const noFailure = "no save failed outside a PostgreSQL outage"
	switch {
	case sumErr != nil:
		add(noFailure, false, "%v (exit code %d)", sumErr, f.LoadExitCode)
	default:
		add(noFailure, len(unexplained) == 0 && exitOK && sum.Errors == mainFailed,
			"%d saves, %d failed (%d during PostgreSQL outages or within %v of the return, %d outside), %d failures recorded; exit code %d",
			sum.Saves, sum.Errors, len(failed)-len(unexplained), pgFailureGrace, len(unexplained), len(failed), f.LoadExitCode)
	}
	for i, u := range unexplained {
		if i == 10 {
			evidence("... and %d more failed saves outside a PostgreSQL outage", len(unexplained)-10)
			break
		}
		evidence("failed save outside a PostgreSQL outage: %s %s v%d..v%d at %s (%.1fs after the load started): %s",
			u.Type, u.ID, u.First, u.Last, u.At.Format("15:04:05.000"), u.At.Sub(s.t0).Seconds(), u.Err)
	}
	if len(unexplained) > 0 || !exitOK {
		evidence("load generator errors (%s):%s", filepath.Base(s.load.logPath), tailLog(s.load.logPath, 20))
	}
	stored, err := s.db.storedStreams(ctx)
	if err != nil {
		return nil, err
	}
	ev := CheckEvents(saves, failed, stored)
	f.RecordedSaves, f.RecordedEvents, f.StoredEvents, f.Streams = ev.RecordedSaves, ev.RecordedEvents, ev.StoredEvents, ev.Streams
	f.EventsLost, f.InFlight, f.InFlightStreams = ev.Lost, ev.InFlight, ev.InFlightStreams
	f.InDoubt, f.InDoubtSaves, f.InDoubtExamples = ev.InDoubt, ev.InDoubtSaves, ev.InDoubtExamples
	add("record file readable", perr == nil, "%d lines%s", len(saves)+len(failed), errText(perr))
	add("every recorded save is stored exactly once", ev.OK(),
		"%d saves / %d events recorded, %d events stored in %d streams; lost %d, recorded twice %d, duplicates %d, gaps %d, head mismatches %d, unaccounted %d",
		ev.RecordedSaves, ev.RecordedEvents, ev.StoredEvents, ev.Streams, ev.Lost, ev.RecordedTwice, ev.Duplicates, ev.Gaps, ev.HeadMismatches, ev.Unaccounted)
	add("record matches the load's count", sumErr != nil || (sum.Saves == mainSaves && sum.Errors == mainFailed),
		"summary %d saves and %d errors, record %d saves and %d failures", sum.Saves, sum.Errors, mainSaves, mainFailed)
	inFlight := s.cfg.Concurrency * (1 + len(s.phaseLoads)) // each load stopped once
	add("unrecorded events only from saves in flight at stop", ev.InFlightStreams <= inFlight,
		"%d events at the tail of %d streams (at most %d saves were in flight)", ev.InFlight, ev.InFlightStreams, inFlight)
	if len(s.phaseLoads) > 0 {
		s.checkRollback(add, evidence, phaseSaves)
	}
	for _, p := range ev.Problems {
		evidence("events: %s", p)
	}
	if s.hist != nil {
		s.hist.check(add, evidence)
	}

	// No snapshot went backwards.
	rows, err := s.db.auditRows(ctx)
	if err != nil {
		return nil, err
	}
	au := CheckAudit(rows)
	f.SnapshotWrites, f.SnapshotRewrites, f.SnapshotDeletes = au.Writes, au.Rewrites, au.Deletes
	f.Regressions, f.Divergences = len(au.Regressions), len(au.Divergences)
	add("no snapshot row went backwards", len(au.Regressions) == 0,
		"%d writes of %d rows (aggregate and schema version; %d rewrites at the stored version, %d deletes); %d regressions",
		au.Writes, au.Rows, au.Rewrites, au.Deletes, len(au.Regressions))
	add("writes at one version wrote one state", len(au.Divergences) == 0, "%d divergent writes", len(au.Divergences))
	add("the audit sequence is complete", len(au.Discontinuities) == 0, "%d writes do not follow from the audited write before them", len(au.Discontinuities))
	for i, d := range au.Discontinuities {
		if i == 10 {
			evidence("... and %d more discontinuities", len(au.Discontinuities)-10)
			break
		}
		evidence("audit discontinuity: %s", d)
	}
	for i, r := range au.Regressions {
		if i == 10 {
			evidence("... and %d more regressions", len(au.Regressions)-10)
			break
		}
		evidence("regression: %s", r)
		if i < 3 {
			evidence("%s", auditHistory(rows, RowKey{r.Next.Type, r.Next.ID, r.Next.SchemaVersion}))
		}
	}
	for i, d := range au.Divergences {
		if i == 10 {
			evidence("... and %d more divergences", len(au.Divergences)-10)
			break
		}
		evidence("divergence: %s", d)
	}
	snaps, err := s.db.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	f.Snapshotted = len(snaps)
	last := LastWrites(rows)
	var auditGaps []string
	for k, sn := range snaps {
		a, ok := last[k]
		if !ok || a.Version != sn.Version || a.SchemaVersion != sn.SchemaVersion || a.StateMD5 != sn.StateMD5 {
			auditGaps = append(auditGaps, fmt.Sprintf("%s: table v%d schema %d, last audited %+v", k, sn.Version, sn.SchemaVersion, a))
		}
	}
	for k := range last {
		if _, ok := snaps[k]; !ok {
			auditGaps = append(auditGaps, fmt.Sprintf("%s: audited but not in the table", k))
		}
	}
	slices.Sort(auditGaps)
	add("the audit saw every snapshot write", len(auditGaps) == 0, "%d snapshots, %d differ from their last audited write", len(snaps), len(auditGaps))
	for i, g := range auditGaps {
		if i == 10 {
			break
		}
		evidence("audit: %s", g)
	}

	// Every snapshot equals a full replay: v1's and (after the rollback
	// phase) v2's snapshots of Accounts, and the Orders'.
	f.VerifyByStatus = map[string]int{}
	verifies := []struct{ typ, name, schema string }{
		{exampledomain.AccountType, exampledomain.AccountType, "1"},
		{exampledomain.OrderType, exampledomain.OrderType, "1"},
	}
	if len(s.phaseLoads) > 0 {
		verifies = append(verifies, struct{ typ, name, schema string }{exampledomain.AccountType, exampledomain.AccountType + " (schema 2)", "2"})
	}
	for _, vf := range verifies {
		typ := vf.typ
		out, errOut, code, err := runOnce(ctx, 5*time.Minute, s.tmp, s.env, s.snapBin, "verify",
			"--type", typ, "--account-schema", vf.schema, "--sample", "0", "--postgres-url", s.db.dbURL(appAdmin), "--log-format", "text", "--log-level", "warn")
		if err != nil {
			return nil, fmt.Errorf("snapshotter verify --type %s: %w", typ, err)
		}
		vc, perr := ParseVerifyOutput(out)
		streams := 0
		for k := range stored {
			if k.Type == typ {
				streams++
			}
		}
		if perr != nil {
			add("snapshots of "+vf.name+" equal a full replay", false, "%v (exit %d): %s", perr, code, strings.TrimSpace(errOut))
			continue
		}
		f.Mismatches += vc.Bad()
		f.Verified += vc.Checked
		for st, n := range vc.ByStatus {
			f.VerifyByStatus[st] += n
		}
		add("snapshots of "+vf.name+" equal a full replay", vc.Bad() == 0 && code == 0 && vc.Checked == streams,
			"verify --sample 0 checked %d of %d aggregates: %s; exit %d", vc.Checked, streams, formatStatuses(vc.ByStatus), code)
		for _, p := range vc.Problems {
			evidence("verify %s: %s", vf.name, p)
		}
		if code != 0 && vc.Bad() == 0 {
			evidence("verify %s exited %d: %s", vf.name, code, strings.TrimSpace(errOut))
		}
	}

	// Convergence.
	f.Converged, f.ConvergeTime = conv.Converged, conv.Took
	if conv.Converged {
		add("every aggregate converged to within the threshold", true, "%d aggregates within %d events of their head after %v",
			conv.Streams, s.cfg.Threshold, conv.Took.Round(time.Millisecond))
	} else {
		add("every aggregate converged to within the threshold", false, "%v", convErr)
		for i, l := range conv.Behind {
			if i == 10 {
				evidence("... and %d more behind", len(conv.Behind)-10)
				break
			}
			evidence("not converged: %s head v%d, snapshot v%d (schema %d), %d behind", l.Key, l.Head, l.Snapshot, l.SnapshotSchema, l.Behind)
		}
	}
	if n, err := s.db.milestoneMisses(ctx, exampledomain.OrderType, exampledomain.OrderSchemaVersion, exampledomain.OrderMilestones); err == nil {
		f.MilestoneMisses = n
	}

	// Notices in the stream.
	if info, err := streamInfo(ctx, s.natsURL(), noticeStream, 5*time.Second); err == nil {
		f.StreamMessages = info.State.LastSeq
		if s.cfg.Cluster {
			s.checkReplicas(ctx, add)
		}
	} else {
		evidence("stream info: %v", err)
	}

	// The faults themselves.
	s.mu.Lock()
	f.DrainMax = s.drainMax
	f.Refused = len(s.refused)
	failures := slices.Clone(s.failures)
	executed := s.executed
	s.mu.Unlock()
	var missing []string
	for _, k := range ActiveKinds(s.cfg.scheduleConfig().Weights) {
		if executed[k] < s.cfg.MinEach {
			missing = append(missing, fmt.Sprintf("%s %d/%d", k, executed[k], s.cfg.MinEach))
		}
	}
	natsFaults := fmt.Sprintf("NATS restarts %d", f.NATSRestarts)
	if s.cfg.Cluster {
		natsFaults = fmt.Sprintf("NATS leader kills %d, follower kills %d", len(f.LeaderStalls), len(f.FollowerStalls))
	}
	pgFaults := fmt.Sprintf("PG restarts %d, immediate shutdowns %d, postmaster kills %d",
		countPG(f.PGFaults, RestartPG), countPG(f.PGFaults, CrashPG), countPG(f.PGFaults, KillPG))
	if f.PGSkipped != "" {
		pgFaults = "PG restarts and crashes skipped"
	}
	add("every kind of fault was injected", len(missing) == 0, "kills %d, %s, PG terminations %d rounds (%d connections), drains %d, %s, notice purges %d (%d notices lost), %s, worker links %d, disk full NATS %d PG %d%s",
		f.Kills, natsFaults, f.PGRounds, f.PGConns, f.Drains, pgFaults, f.Purges, f.NoticesLost, partitionSummary(*f), f.Links,
		executed[NATSDiskFull], executed[PGDiskFull], listIf(" — too few: ", missing))
	add("faults went as expected (drains exit 0 in time, no crashes)", len(failures) == 0, "%d problems", len(failures))
	for _, fl := range failures {
		evidence("fault: %s", fl)
	}

	// Worker logs.
	for _, w := range append(slices.Clone(s.workers), s.v2Workers...) {
		b, err := os.ReadFile(w.p.logPath)
		if err != nil {
			continue
		}
		st := ParseWorkerLog(string(b))
		f.LogWarnings += st.Warnings
		f.LogErrors += st.Errors
		f.Swept += st.Swept
		f.DrainTimeouts += st.DrainTimeouts
		f.StartsWithoutPG += st.StartsWithoutPG
		s.workerLog[w.name()] = st
	}
	if !res.OK() {
		for _, w := range append(slices.Clone(s.workers), s.v2Workers...) {
			st := s.workerLog[w.name()]
			var msgs []string
			for m, n := range st.Samples {
				msgs = append(msgs, fmt.Sprintf("%dx %s", n, m))
			}
			slices.Sort(msgs)
			if len(msgs) > 0 {
				evidence("%s log warnings and errors:\n  %s", w.name(), strings.Join(msgs, "\n  "))
			}
		}
	}
	return res, nil
}

// pgFailureGrace is how long after PostgreSQL's return a failed save
// still counts as failing because of the outage: a save may meet a
// pooled connection that died with the old server.
const pgFailureGrace = 5 * time.Second

// uuidRE and numberRE are what failureSummary takes out of error texts.
var (
	uuidRE   = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	numberRE = regexp.MustCompile(`\b\d+\b`)
)

// failureSummary counts the failed saves by error text (aggregate ids and
// numbers replaced) and returns how long after PostgreSQL's return the
// latest failure outside an outage came, within the grace (0 if none).
func failureSummary(failed []FailedSave, windows []Window) (map[string]int, time.Duration) {
	by := map[string]int{}
	var latest time.Duration
	for _, f := range failed {
		msg := numberRE.ReplaceAllString(uuidRE.ReplaceAllString(f.Err, "<id>"), "N")
		by[msg]++
		if slices.ContainsFunc(windows, func(w Window) bool { return !f.At.Before(w.From) && !f.At.After(w.To) }) {
			continue // during an outage
		}
		after := time.Duration(-1)
		for _, w := range windows {
			if d := f.At.Sub(w.To); d > 0 && d <= pgFailureGrace && (after < 0 || d < after) {
				after = d
			}
		}
		latest = max(latest, after)
	}
	return by, latest
}

// readRecord reads a load's --record file: the saves it made, and those
// that failed.
func readRecord(path string) ([]Save, []FailedSave, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("record file: %w", err)
	}
	defer f.Close()
	return ParseRecord(f)
}

// checkRollback adds the rollback phase's checks: its loads saved without
// an error, each recorded every save it counted, v1's loads after the
// rollback read v1's snapshots of the Accounts v1 had snapshotted, and
// v1's worker alone brought every aggregate within the threshold.
// phaseSaves holds the lines of each load's record file.
func (s *suite) checkRollback(add func(string, bool, string, ...any), evidence func(string, ...any), phaseSaves map[string]int64) {
	rf := &s.fig.Rollback
	ok, details := true, ""
	for _, l := range s.phaseLoads {
		out, _ := os.ReadFile(l.out)
		sum, err := ParseLoadOutput(string(out))
		recorded := phaseSaves[l.record]
		if err != nil || sum.Errors > 0 || l.code != 0 || !l.inTime || sum.Saves != recorded {
			ok = false
			evidence("%s: exit %d (in time %v), %s; its log:%s", l.name, l.code, l.inTime, lastDoneLine(string(out)), tailLog(l.p.logPath, 10))
		}
		switch l.name {
		case "load-v1":
			rf.V1Saves = sum.Saves
		case "load-v2":
			rf.V2Saves = sum.Saves
		}
		details += fmt.Sprintf("%s %d saves (record %d), %d conflicts, %d errors, exit %d; ", l.name, sum.Saves, recorded, sum.Conflicts, sum.Errors, l.code)
	}
	add("the rollback phase's loads saved without an error", ok, "%s", strings.TrimSuffix(details, "; "))
	add("v1 loads after the rollback read v1's snapshots", rf.ReplaysAfter == 0 && rf.LoadsAfter > 0 && rf.Snapshotted > 0,
		"%d full replays in %d v1 loads of the %d Accounts v1 had snapshotted (must be 0; %d Accounts had a v2 snapshot)",
		rf.ReplaysAfter, rf.LoadsAfter, rf.Snapshotted, rf.V2Snapshots)
	if c := s.rollbackConv; c.Converged {
		add("every aggregate converged after the rollback", true, "%d aggregates within %d events of their v1 snapshot %v after v1's load stopped",
			c.Streams, s.cfg.Threshold, c.Took.Round(time.Millisecond))
	} else {
		add("every aggregate converged after the rollback", false, "%v", s.rollbackConvErr)
		for i, l := range c.Behind {
			if i == 10 {
				break
			}
			evidence("not converged after the rollback: %s head v%d, snapshot v%d (schema %d), %d behind", l.Key, l.Head, l.Snapshot, l.SnapshotSchema, l.Behind)
		}
	}
}

// auditHistory renders the audit rows of one snapshot row.
func auditHistory(rows []AuditRow, k RowKey) string {
	var b strings.Builder
	fmt.Fprintf(&b, "audit history of %s:", k)
	for _, r := range rows {
		if r.Type == k.Type && r.ID == k.ID && r.SchemaVersion == k.Schema {
			fmt.Fprintf(&b, "\n    seq %d %s v%d schema %d (was v%d) tx %d %s %s", r.Seq, r.Op, r.Version, r.SchemaVersion, r.OldVersion, r.TxID, r.Writer, r.At.Format("15:04:05.000000"))
		}
	}
	return b.String()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

func listIf(prefix string, items []string) string {
	if len(items) == 0 {
		return ""
	}
	return prefix + strings.Join(items, ", ")
}

// checkReplicas checks, in cluster mode, that the notice stream still has
// ClusterNodes replicas and that both followers catch up with the leader
// within 30s (a node restarted by the last fault may still be catching
// up when the run ends). A follower still behind then is restarted, as an
// operator would, and given 30s more: the check passes if that brings it
// back, and says which follower needed it and how far behind it was, so
// that a replica NATS leaves stuck shows on the report without failing a
// run whose notices were all kept; one that does not come back fails it.
func (s *suite) checkReplicas(ctx context.Context, add func(name string, ok bool, format string, args ...any)) {
	start := time.Now()
	replicas, current, behind := s.awaitReplicas(ctx, start.Add(30*time.Second))
	restarted := ""
	if replicas == ClusterNodes && current < ClusterNodes-1 && len(behind) > 0 && ctx.Err() == nil {
		var names []string
		for _, b := range behind {
			names = append(names, b.describe())
			if i := slices.IndexFunc(s.nats, func(n *natsServer) bool { return n.name == b.name }); i >= 0 {
				n := s.nats[i]
				s.logf("replica check: %s not current %v after the workers stopped; restarting it", b.describe(), time.Since(start).Round(time.Millisecond))
				n.stop(syscall.SIGTERM)
				if err := n.start(ctx, 30*time.Second); err != nil {
					s.logf("replica check: %s did not come back: %v", b.name, err)
				}
			}
		}
		restarted = "; restarted " + strings.Join(names, ", ") + ", not current after 30s"
		replicas, current, _ = s.awaitReplicas(ctx, time.Now().Add(30*time.Second))
	}
	add("the notice stream kept its replicas", replicas == ClusterNodes && current == ClusterNodes-1,
		"configured %d replicas (want %d); %d followers current with the leader %v after the workers stopped%s",
		replicas, ClusterNodes, current, time.Since(start).Round(time.Millisecond), restarted)
}

// laggard is a follower of the notice stream that is not current.
type laggard struct {
	name    string
	lag     uint64
	offline bool
}

func (l laggard) describe() string {
	if l.offline {
		return l.name + " (offline)"
	}
	return fmt.Sprintf("%s (lag %d)", l.name, l.lag)
}

// awaitReplicas polls the notice stream until both followers are current
// or deadline passes, and returns its configured replicas, how many
// followers were current, and those that were not, at the last answer.
func (s *suite) awaitReplicas(ctx context.Context, deadline time.Time) (replicas, current int, behind []laggard) {
	for {
		info, err := streamInfo(ctx, s.natsURL(), noticeStream, 5*time.Second)
		if err == nil {
			replicas, current, behind = info.Config.Replicas, 0, nil
			if info.Cluster != nil {
				for _, r := range info.Cluster.Replicas {
					if r.Current {
						current++
					} else {
						behind = append(behind, laggard{name: r.Name, lag: r.Lag, offline: r.Offline})
					}
				}
			}
		}
		if (replicas == ClusterNodes && current == ClusterNodes-1) || time.Now().After(deadline) || ctx.Err() != nil {
			return replicas, current, behind
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}
