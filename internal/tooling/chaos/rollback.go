//go:build unix

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
)

// RollbackFigures are the counts of the rollback phase: v1 and v2 of the
// example Account (exampledomain.Account and AccountV2) saving the main
// load's aggregates side by side, each with its own worker on the one
// notice stream and durable consumer, and then v2 rolled back.
type RollbackFigures struct {
	SideBySide, After time.Duration
	// V1Saves and V2Saves are the loads' summaries.
	V1Saves, V2Saves int64
	// V2Snapshots counts the Accounts with a schema 2 snapshot, and
	// Snapshotted those with a schema 1 one (v1's), when v2 was rolled
	// back.
	V2Snapshots, Snapshotted int
	// V1LoadsBefore and V1ReplaysBefore count v1's Account loads while v2
	// ran beside it, and the full replays among them; V2Loads and
	// V2Replays v2's.
	V1LoadsBefore, V1ReplaysBefore int
	V2Loads, V2Replays             int
	// LoadsAfter counts v1's loads, after the rollback, of the Accounts
	// v1 had snapshotted; ReplaysAfter the full replays among them (must
	// be 0).
	LoadsAfter, ReplaysAfter int
}

// phaseLoad is one load generator of the rollback phase.
type phaseLoad struct {
	name   string
	p      *process
	out    string // its standard output
	record string // its --record file
	code   int    // exit code
	inTime bool   // it exited within a minute of SIGINT
}

// rollbackPhase runs after the main load, once its workers have drained:
// worker-1 again as v1, a worker-v2 built with --account-schema 2, and
// v1 and v2 loads of the main load's aggregates (the same --id-seed) for
// RollbackSideBySide; then v2 is rolled back (its load stopped with
// SIGINT, its worker drained) and v1 goes on alone for RollbackAfter.
// The aggregates v1 had snapshotted are read when v2 is gone; every v1
// load of one of them that starts after that must read v1's snapshot.
// Then v1's worker alone must bring every aggregate within the threshold
// of its v1 snapshot. The checks (check.go) cover the phase's saves and
// snapshot writes with the main load's.
func (s *suite) rollbackPhase(ctx context.Context) error {
	cfg := &s.cfg
	rf := &s.fig.Rollback
	rf.SideBySide, rf.After = cfg.RollbackSideBySide, cfg.RollbackAfter
	s.logf("rollback phase: v1 and v2 of the Account side by side for %v (a worker and a load of each), then v2 rolled back and v1 alone for %v",
		cfg.RollbackSideBySide, cfg.RollbackAfter)

	v1w := s.workers[0]
	v1w.mu.Lock()
	defer v1w.mu.Unlock()
	if err := v1w.p.start(); err != nil {
		return err
	}
	v2w, err := s.startWorker(&worker{label: "worker-v2"}, "v2", "--account-schema", "2")
	if err != nil {
		return err
	}
	s.v2Workers = append(s.v2Workers, v2w)
	for _, w := range []*worker{v1w, v2w} {
		if err := waitReady(ctx, w, 30*time.Second); err != nil {
			return err
		}
	}
	v1 := s.startPhaseLoad("load-v1", 1, cfg.RollbackSideBySide+cfg.RollbackAfter)
	v2 := s.startPhaseLoad("load-v2", 2, cfg.RollbackSideBySide)
	for _, l := range []*phaseLoad{v1, v2} {
		if err := l.p.start(); err != nil {
			return err
		}
	}
	if sleepCtx(ctx, cfg.RollbackSideBySide); ctx.Err() != nil {
		return ctx.Err()
	}

	// The rollback: v2's load and worker go.
	s.stopPhaseLoad(v2)
	v2w.mu.Lock()
	s.drain(ctx, v2w, " (v2 rolled back)")
	v2w.mu.Unlock()
	v1Snapshotted, err := s.db.accountsWithSnapshot(ctx, exampledomain.AccountSchemaVersion)
	if err != nil {
		return err
	}
	rolledBack := time.Now()
	v2Snapshotted, err := s.db.accountsWithSnapshot(ctx, exampledomain.AccountSchemaVersionV2)
	if err != nil {
		return err
	}
	rf.Snapshotted, rf.V2Snapshots = len(v1Snapshotted), len(v2Snapshotted)
	s.logf("v2 rolled back: %d Accounts have a v1 snapshot, %d a v2 one; v1 goes on alone", rf.Snapshotted, rf.V2Snapshots)
	if sleepCtx(ctx, cfg.RollbackAfter); ctx.Err() != nil {
		return ctx.Err()
	}
	s.stopPhaseLoad(v1)
	v1Stopped := time.Now()
	s.rollbackConv, s.rollbackConvErr = s.converge(ctx, v1Stopped)
	if s.rollbackConvErr != nil && ctx.Err() != nil {
		return s.rollbackConvErr
	}
	s.drain(ctx, v1w, " at the end of the rollback phase")

	loads1, err := readLoads(filepath.Join(s.tmp, "load-v1.loads"))
	if err != nil {
		return err
	}
	for _, l := range loads1 {
		switch {
		case l.At.Before(rolledBack):
			rf.V1LoadsBefore++
			if !l.FromSnapshot {
				rf.V1ReplaysBefore++
			}
		case v1Snapshotted[l.ID]:
			rf.LoadsAfter++
			if !l.FromSnapshot {
				rf.ReplaysAfter++
			}
		}
	}
	loads2, err := readLoads(filepath.Join(s.tmp, "load-v2.loads"))
	if err != nil {
		return err
	}
	for _, l := range loads2 {
		rf.V2Loads++
		if !l.FromSnapshot {
			rf.V2Replays++
		}
	}
	s.logf("rollback phase done: v1 loads of the %d Accounts it had snapshotted, after the rollback: %d, full replays %d",
		rf.Snapshotted, rf.LoadsAfter, rf.ReplaysAfter)
	return nil
}

// startPhaseLoad prepares the rollback phase's load of the Account's
// schema version schema, which the phase stops after about d.
func (s *suite) startPhaseLoad(name string, schema int, d time.Duration) *phaseLoad {
	l := &phaseLoad{name: name, out: filepath.Join(s.tmp, name+".out"), record: filepath.Join(s.tmp, name+".record")}
	args := append(s.loadArgs(s.cfg.RollbackRate, d, l.record),
		"--account-schema", fmt.Sprint(schema), "--record-loads", filepath.Join(s.tmp, name+".loads"))
	l.p = &process{name: name, path: s.appBin, args: args, env: s.env, dir: s.tmp,
		logPath: filepath.Join(s.tmp, name+".log"), stdoutPath: l.out}
	s.defer_(l.p.kill)
	s.phaseLoads = append(s.phaseLoads, l)
	s.phaseRecords = append(s.phaseRecords, l.record)
	return l
}

// stopPhaseLoad stops a rollback phase load with SIGINT and records how it
// exited.
func (s *suite) stopPhaseLoad(l *phaseLoad) {
	l.code, l.inTime, _ = l.p.stop(syscall.SIGINT, time.Minute)
	out, _ := os.ReadFile(l.out)
	s.logf("%s stopped: exit code %d; %s", l.name, l.code, lastDoneLine(string(out)))
}
