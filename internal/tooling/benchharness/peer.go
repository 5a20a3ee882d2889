package benchharness

import (
	"context"
	_ "embed" // the peer program's source
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// StepPeer is the peer step: evsnap's memstore beside
// hallgren/eventsourcing's in-memory stores on the same workload, taking
// turns within each run, when Config.PeerHallgren names a checkout of
// the peer (the module proxy does not serve it).
const StepPeer = "peer"

// hallgrenSource is the peer program; it imports the peer, so it is kept
// out of evsnap's module and built in a module of its own.
//
//go:embed peers/hallgren.go.txt
var hallgrenSource string

// hallgrenName is how the page names the peer.
const hallgrenName = "hallgren/eventsourcing"

// PeerRow is one library's figures in the peer step: the load of a
// 100-event Account from a snapshot at its head (p50, and allocations
// per load) and a one-event save with a snapshot at every 100th version
// (p50); medians of the runs.
type PeerRow struct {
	Library               string
	LoadHead              time.Duration
	LoadAllocs, LoadBytes float64
	SaveP50               time.Duration
	// Commit is the peer checkout's commit ("" for evsnap).
	Commit string
}

// peerResult is the peer program's JSON line.
type peerResult struct {
	LoadHeadNs  float64 `json:"load_head_ns"`
	LoadAllocs  float64 `json:"load_allocs"`
	LoadBytes   float64 `json:"load_bytes"`
	SaveP50Ns   float64 `json:"save_p50_ns"`
	Balance     float64 `json:"balance"`
	LoadVersion int     `json:"load_version"`
}

// parsePeerResult reads the peer program's output and checks that its
// load rebuilt the Account the harness's does (version 100, balance
// 1,255: 1,000 opened, 50 deposits of 10, 49 withdrawals of 5).
func parsePeerResult(out []byte) (peerResult, error) {
	var r peerResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("peer output %q: %w", strings.TrimSpace(string(out)), err)
	}
	if r.LoadVersion != 100 || r.Balance != 1255 {
		return r, fmt.Errorf("peer's load rebuilt version %d, balance %v; want 100 and 1255", r.LoadVersion, r.Balance)
	}
	if r.LoadHeadNs <= 0 || r.SaveP50Ns <= 0 {
		return r, fmt.Errorf("peer output %q: no timings", strings.TrimSpace(string(out)))
	}
	return r, nil
}

// hallgrenModule is the go.mod of the peer program's module: the peer
// and its core module replaced by the checkout in dir.
func hallgrenModule(dir string) string {
	return fmt.Sprintf(`module evsnap-peer-hallgren

go 1.26

require (
	github.com/hallgren/eventsourcing v0.0.0
	github.com/hallgren/eventsourcing/core v0.0.0
)

replace (
	github.com/hallgren/eventsourcing => %s
	github.com/hallgren/eventsourcing/core => %s
)
`, strconv.Quote(dir), strconv.Quote(filepath.Join(dir, "core")))
}

// buildHallgren builds the peer program against the checkout in dir and
// returns the binary's path and the checkout's commit ("" if not a git
// work tree).
func (h *Harness) buildHallgren(ctx context.Context, dir string) (bin, commit string, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "aggregate")); err != nil {
		return "", "", fmt.Errorf("--peer-hallgren %s: not a checkout of github.com/hallgren/eventsourcing (no aggregate package): %w", dir, err)
	}
	mod := filepath.Join(h.tmp, "peer-hallgren")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(hallgrenModule(dir)), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(mod, "main.go"), []byte(hallgrenSource), 0o644); err != nil {
		return "", "", err
	}
	bin = filepath.Join(mod, "peer-hallgren")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build the peer program against %s: %w\n%s", dir, err, out)
	}
	if out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	return bin, commit, nil
}

// runPeer is the peer step: each run measures the peer program (its own
// process) and evsnap's memstore repository (sync snapshots at threshold
// 100, in the harness's process) on the same workload, the two taking
// turns to go first; the rows hold the medians of the runs.
func (h *Harness) runPeer(ctx context.Context, _ string) error {
	bin, commit, err := h.buildHallgren(ctx, h.cfg.PeerHallgren)
	if err != nil {
		return err
	}
	r, head, err := h.memHeadAccount(ctx)
	if err != nil {
		return err
	}
	defer r.Close(context.WithoutCancel(ctx))
	load := func() error { _, err := r.Load(ctx, head); return err }
	saveFor := h.saveDuration() / 3

	var ourLoads, ourSaves, peerLoads, peerSaves []time.Duration
	var peerAllocs, peerBytes []float64
	ours := func() error {
		runtime.GC()
		d, _, err := timeLoads(h.loadBudget(), load)
		if err != nil {
			return err
		}
		lat, err := saveRun(ctx, r, 1, saveFor)
		if err != nil {
			return err
		}
		p50, _ := Quantiles(lat)
		ourLoads, ourSaves = append(ourLoads, d), append(ourSaves, p50)
		return nil
	}
	peer := func() error {
		out, err := exec.CommandContext(ctx, bin, "-load-budget", h.loadBudget().String(), "-save-duration", saveFor.String(),
			"-alloc-calls", strconv.Itoa(allocCalls)).Output()
		if err != nil {
			return fmt.Errorf("peer program: %w", err)
		}
		res, err := parsePeerResult(out)
		if err != nil {
			return err
		}
		peerLoads = append(peerLoads, time.Duration(res.LoadHeadNs))
		peerSaves = append(peerSaves, time.Duration(res.SaveP50Ns))
		peerAllocs, peerBytes = append(peerAllocs, res.LoadAllocs), append(peerBytes, res.LoadBytes)
		return nil
	}
	for run := range h.cfg.Runs {
		first, second := ours, peer
		if run%2 == 1 {
			first, second = peer, ours
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		h.progress("peer: run %d/%d: load at head %s µs (%s %s µs), save p50 %s µs (%s %s µs)", run+1, h.cfg.Runs,
			us(ourLoads[run]), hallgrenName, us(peerLoads[run]), us(ourSaves[run]), hallgrenName, us(peerSaves[run]))
	}
	n, bytes, err := countAllocs(allocCalls, load)
	if err != nil {
		return err
	}
	h.report.Peers = []PeerRow{
		{Library: "evsnap (memstore)", LoadHead: Median(ourLoads), LoadAllocs: n, LoadBytes: bytes, SaveP50: Median(ourSaves)},
		{Library: hallgrenName + " (memory stores)", LoadHead: Median(peerLoads), LoadAllocs: Median(peerAllocs), LoadBytes: Median(peerBytes), SaveP50: Median(peerSaves), Commit: commit},
	}
	return nil
}

// writePeers renders the peer step's table.
func (r *Report) writePeers(b *strings.Builder) {
	if len(r.Peers) < 2 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	peer := r.Peers[1]
	p("## 9. Beside a peer, in this run\n\n")
	p("evsnap's memstore and %s's in-memory event and snapshot stores", hallgrenName)
	if peer.Commit != "" {
		p(" (commit %s of a checkout, built by the harness in a module of its own: the module proxy does not serve it)", peer.Commit)
	}
	p(" on the same workload, taking turns to go first in each of the %d runs: the load of a 100-event Account (step 1's) from a snapshot at its head, and one-event saves of a fresh Account with a snapshot at every 100th version (sync snapshots at threshold 100 in evsnap). ", r.Runs)
	p("p50 as in steps 1 and 2, medians of the runs; allocations per load as in section 7. The peer runs in a process of its own, evsnap in the harness's. ")
	p("`make bench BENCHFLAGS='--peer-hallgren DIR'` runs this step; without the flag it is skipped. The absolute goals of issue 20 came from peer figures measured on another day (PERF-ANCHORS.md); this table is the same comparison taken in one run.\n\n")
	t := NewTable("library", "load at head p50 µs:", "allocations per load:", "bytes per load:", "save p50 µs:")
	for _, x := range r.Peers {
		t.Add(x.Library, us(x.LoadHead), sig(x.LoadAllocs), thousands(int64(x.LoadBytes+0.5)), us(x.SaveP50))
	}
	t.Add("evsnap / peer", times(ratio(r.Peers[0].LoadHead, peer.LoadHead)), times(r.Peers[0].LoadAllocs/peer.LoadAllocs), "", times(ratio(r.Peers[0].SaveP50, peer.SaveP50)))
	b.WriteString(t.String())
	p("\n")
}

// peerTargets are issue 20's in-memory targets taken against the peer in
// this run: at least as fast as hallgren/eventsourcing, and no more
// allocations per load.
func (r *Report) peerTargets() []Target {
	if len(r.Peers) < 2 {
		return nil
	}
	ours, peer := r.Peers[0], r.Peers[1]
	return []Target{
		{What: "memstore: snapshot load at 100 events at least as fast as " + hallgrenName + "'s, in this run (peer step)",
			Measured: us(ours.LoadHead) + " µs vs " + us(peer.LoadHead) + " µs", Ratio: ratio(ours.LoadHead, peer.LoadHead), Goal: "≤ 1×", Met: ours.LoadHead <= peer.LoadHead},
		{What: "memstore: snapshot load at 100 events with no more allocations than " + hallgrenName + "'s, in this run (peer step)",
			Measured: sig(ours.LoadAllocs) + " vs " + sig(peer.LoadAllocs), Ratio: ours.LoadAllocs / peer.LoadAllocs, Goal: "≤ 1×", Met: ours.LoadAllocs <= peer.LoadAllocs},
		{What: "memstore: one-event save p50, sync snapshots at threshold 100, at least as fast as " + hallgrenName + "'s, in this run (peer step)",
			Measured: us(ours.SaveP50) + " µs vs " + us(peer.SaveP50) + " µs", Ratio: ratio(ours.SaveP50, peer.SaveP50), Goal: "≤ 1×", Met: ours.SaveP50 <= peer.SaveP50},
	}
}

// peerScale says what the peer step measured for the operation an
// absolute goal is about, evsnap's and the peer's, against the anchor
// figure of the peer the goal came from: the machine's speed moves
// between days and within a run, and the peer step's figures are taken
// minutes after steps 1 and 2 ("" without the peer step).
func (r *Report) peerScale(measured func(PeerRow) time.Duration, anchor time.Duration) string {
	if len(r.Peers) < 2 {
		return ""
	}
	ours, peer := measured(r.Peers[0]), measured(r.Peers[1])
	return fmt.Sprintf("in the peer step of this run evsnap took %s µs and %s %s µs (%s evsnap's), against the peer's anchor of %s µs: see the peer targets",
		us(ours), hallgrenName, us(peer), times(ratio(peer, ours)), us(anchor))
}
