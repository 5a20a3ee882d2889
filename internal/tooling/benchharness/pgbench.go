package benchharness

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/pgurl"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
)

// FloorRow is pgbench's throughput running the worker's SQL with Clients
// connections.
type FloorRow struct {
	Clients int
	// TPS is the median over the runs of pgbench's transactions per
	// second (one transaction: read the snapshot, read the events, upsert
	// the snapshot; each statement its own implicit transaction, as the
	// worker issues them).
	TPS float64
	// Replicas is the worker run this floor is compared with, and
	// WorkerRatio the median over the runs of the worker's snapshots/s
	// over pgbench's tps, each pair measured back to back (0: no worker
	// figure).
	Replicas    int
	WorkerRatio float64
	// CPU is the CPU time per transaction over pgbench's runs (the median
	// of each part): PostgreSQL's server processes and pgbench's own.
	CPU CPUSplit
}

// Pgbench describes how the floor was measured.
type Pgbench struct {
	Version string
	// Commands are the exact command lines run (password redacted).
	Commands []string
	// Script is the pgbench script.
	Script string
}

// findPgbench looks on PATH, then in the PostgreSQL install directories.
func findPgbench() string {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(found) == 0 {
		return ""
	}
	slices.Sort(found)
	return found[len(found)-1]
}

func (h *Harness) pgbenchSeconds() int {
	if h.cfg.Quick {
		return 1
	}
	return 3
}

// libpqURL drops the connection parameters only pgx understands, which
// libpq (and so pgbench) would refuse.
func libpqURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return dsn
	}
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") || strings.HasPrefix(k, "statement_cache") || strings.HasPrefix(k, "description_cache") || k == "default_query_exec_mode" {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// floorScript renders the pgbench script: the worker's three statements
// for a random backlog aggregate (ids are md5('evsnap-bench-' || n), see
// benchID), the events read from version 0 as the worker reads them when
// the aggregate has no snapshot yet.
func floorScript(sql pgstore.Statements, aggregates int, state []byte) string {
	id := `md5('evsnap-bench-' || :n::text)::uuid`
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	typ := quote(exampledomain.AccountType)
	get := strings.NewReplacer("$1", id, "$2", typ, "$3", strconv.Itoa(exampledomain.AccountSchemaVersion)).Replace(sql.GetSnapshot)
	read := strings.NewReplacer("$1", typ, "$2", id, "$3", "0").Replace(sql.ReadEvents)
	save := strings.NewReplacer("$1", id, "$2", typ, "$3", strconv.Itoa(backlogEvents), "$4", strconv.Itoa(exampledomain.AccountSchemaVersion), "$5", quote(string(state)), "$6", "now()", "$7", "gen_random_uuid()").Replace(sql.SaveSnapshot)
	return fmt.Sprintf("\\set n random(1, %d)\n%s;\n%s;\n%s;\n", aggregates, get, read, save)
}

var (
	tpsRE    = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	failedRE = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
	txnsRE   = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
)

// floorBench is step 4's pgbench, prepared once per worker step and run
// after each worker run it is compared with.
type floorBench struct {
	h      *Harness
	s      *site
	bin    string
	script string
	dsn    string
	info   *Pgbench
	// pgPIDs lists the PostgreSQL processes whose CPU a run counts: the
	// backends of pgbench's connections (named floorApp) and the
	// background processes. The floor runs on PostgreSQL only, so it is
	// never nil.
	pgPIDs func() []int
}

// newFloorBench writes the pgbench script for the worker step's schema.
// It returns nil, and notes why, when pgbench is not installed.
func (h *Harness) newFloorBench(ctx context.Context, s *site, aggregates int, sample uuid.UUID) (*floorBench, error) {
	bin := findPgbench()
	if bin == "" {
		h.report.note("pgbench was not found (PATH, /usr/lib/postgresql/*/bin): the worker's floor was not measured.")
		return nil, nil
	}
	snap, err := s.store.GetSnapshot(ctx, exampledomain.AccountType, sample, exampledomain.AccountSchemaVersion)
	if err != nil {
		return nil, err
	}
	if snap == nil {
		return nil, fmt.Errorf("%w: backlog aggregate %s has no snapshot", errSanity, sample)
	}
	info := &Pgbench{Script: floorScript(s.pg.Statements(), aggregates, snap.State)}
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		info.Version = strings.TrimSpace(string(out))
	}
	script := filepath.Join(h.tmp, "worker-floor.sql")
	if err := os.WriteFile(script, []byte(info.Script), 0o644); err != nil {
		return nil, err
	}
	pgPIDs, err := s.serverPIDs(ctx, floorApp)
	if err != nil {
		return nil, err
	}
	return &floorBench{h: h, s: s, bin: bin, script: script, dsn: pgurl.WithAppName(libpqURL(h.cfg.PostgresURL), floorApp), info: info, pgPIDs: pgPIDs}, nil
}

// args returns pgbench's arguments for c clients, given the script's
// path and the connection string.
func (f *floorBench) args(c int, script, dsn string) []string {
	cs := strconv.Itoa(c)
	return []string{"-n", "-M", "prepared", "-f", script, "-c", cs, "-j", cs, "-T", strconv.Itoa(f.h.pgbenchSeconds()), dsn}
}

// command is the pgbench command line for c clients, as the page shows it
// (the script by its name, the password redacted).
func (f *floorBench) command(c int) string {
	return "pgbench " + strings.Join(f.args(c, "worker-floor.sql", "'"+pgstore.RedactDSN(f.dsn)+"'"), " ")
}

// floorResult is one pgbench run.
type floorResult struct {
	tps          float64
	transactions int64
	// cpu is what the run used in all: PostgreSQL's processes and
	// pgbench's own, from starting pgbench to its exit.
	cpu CPUSplit
}

// pgbenchPoll is how often a run reads the CPU of the PostgreSQL
// processes, and pgbenchFind how often it looks for new ones: a backend
// exits with pgbench, so what it used after its last reading is missed.
const (
	pgbenchPoll = 10 * time.Millisecond
	pgbenchFind = 100 * time.Millisecond
)

// run deletes the snapshots and runs pgbench once with c clients,
// returning its tps, transactions and CPU.
func (f *floorBench) run(ctx context.Context, c int) (floorResult, error) {
	var res floorResult
	if _, err := f.s.store.DeleteSnapshotsByType(ctx, exampledomain.AccountType, 0); err != nil {
		return res, err
	}
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, f.bin, f.args(c, f.script, f.dsn)...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	meter := startCPUMeter(false, f.pgPIDs, nil)
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("%s: %w", f.command(c), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(pgbenchPoll)
	defer tick.Stop()
	var pids []int
	var found time.Time
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			if time.Since(found) >= pgbenchFind {
				pids, found = f.pgPIDs(), time.Now()
			}
			meter.track(pids)
		}
	}
	res.cpu = meter.stop()
	out := buf.Bytes()
	if err != nil {
		return res, fmt.Errorf("%s: %w\n%s", f.command(c), err, out)
	}
	res.cpu.Client, res.cpu.ClientMeasured = cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime(), true
	return res, parsePgbench(out, &res)
}

// parsePgbench reads pgbench's tps and transactions from its output into
// res, failing if it reports a failed transaction.
func parsePgbench(out []byte, res *floorResult) error {
	m := tpsRE.FindSubmatch(out)
	n := txnsRE.FindSubmatch(out)
	if m == nil || n == nil {
		return fmt.Errorf("pgbench printed no tps or transactions line:\n%s", out)
	}
	if fl := failedRE.FindSubmatch(out); fl != nil && string(fl[1]) != "0" {
		return fmt.Errorf("%w: pgbench had %s failed transactions:\n%s", errSanity, fl[1], out)
	}
	res.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	res.transactions, _ = strconv.ParseInt(string(n[1]), 10, 64)
	return nil
}
