package benchharness

import (
	"context"
	"maps"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/cputime"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The application_name of the worker replicas' PostgreSQL connections
// and of pgbench's, by which their backends are found.
const (
	workerApp = "evsnap-bench-worker"
	floorApp  = "evsnap-bench-floor"
)

// pgServerPIDs are the PostgreSQL processes whose CPU a measurement
// counts: the backends in database db whose application_name is LIKE app,
// and the server's background processes (WAL writer, checkpointer, ...),
// which work for every database. Other backends (the harness's own
// connections, other work on a shared server) are left out. Only pids
// that are postgres processes on this machine are returned: none when the
// server runs elsewhere.
func pgServerPIDs(ctx context.Context, pool *pgxpool.Pool, db, app string) []int {
	rows, err := pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE (datname = $1 AND application_name LIKE $2) OR backend_type <> 'client backend'", db, app)
	if err != nil {
		return nil
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range pids {
		if t, err := readProcTimes(int(p)); err == nil && t.Comm == "postgres" {
			out = append(out, int(p))
		}
	}
	return out
}

// loopbackPorts returns the ports of the servers of a NATS URL (a
// comma-separated list) that are on loopback, so on this machine; the
// port defaults to 4222.
func loopbackPorts(urls string) map[int]bool {
	ports := map[int]bool{}
	for _, s := range strings.Split(urls, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			continue
		}
		port := 4222
		if p := u.Port(); p != "" {
			if port, err = strconv.Atoi(p); err != nil {
				continue
			}
		}
		ports[port] = true
	}
	return ports
}

// natsServerPIDs returns the NATS server processes the harness uses: the
// one it started, or the nats-server processes on this machine that
// listen on the ports of its loopback URL. None: NATS runs elsewhere, and
// its CPU is not measured.
func (h *Harness) natsServerPIDs() []int {
	if h.natsProc != nil {
		return []int{h.natsProc.PID()}
	}
	ports := loopbackPorts(h.natsURL)
	if len(ports) == 0 {
		return nil
	}
	var out []int
	for _, pid := range listenerPIDs(ports) {
		if t, err := readProcTimes(pid); err == nil && strings.Contains(t.Comm, "nats") {
			out = append(out, pid)
		}
	}
	return out
}

// CPUSplit is the CPU time (user + system) spent on an operation (one
// worker snapshot, one pgbench transaction) or over a run, by the
// processes that spent it, and how busy the machine's cores were
// meanwhile.
type CPUSplit struct {
	// Go is the harness process's: the in-process workers, their store
	// and NATS clients, the Go runtime, and the harness's own polling.
	Go time.Duration
	// PG is PostgreSQL's server processes' (see pgServerPIDs).
	PG time.Duration
	// NATS is the NATS server processes'.
	NATS time.Duration
	// Client is pgbench's own (every thread).
	Client time.Duration
	// Which of the above were measured: a server on another machine, or
	// a process that takes no part, is not.
	GoMeasured, PGMeasured, NATSMeasured, ClientMeasured bool
	// Busy is the share of every core's time that was not idle, other
	// work on the machine included (/proc/stat).
	Busy float64
}

// Total is the sum of the measured parts.
func (c CPUSplit) Total() time.Duration { return c.Go + c.PG + c.NATS + c.Client }

// Measured reports whether any part was measured.
func (c CPUSplit) Measured() bool {
	return c.GoMeasured || c.PGMeasured || c.NATSMeasured || c.ClientMeasured
}

// parts names the measured parts with their µs: "Go 310", "PostgreSQL
// 250", "NATS 120", "pgbench client 80".
func (c CPUSplit) parts() []string {
	var out []string
	for _, p := range []struct {
		ok   bool
		name string
		d    time.Duration
	}{{c.GoMeasured, "Go", c.Go}, {c.PGMeasured, "PostgreSQL", c.PG}, {c.NATSMeasured, "NATS", c.NATS}, {c.ClientMeasured, "pgbench client", c.Client}} {
		if p.ok {
			out = append(out, p.name+" "+us(p.d))
		}
	}
	return out
}

// brief is the split on one line, in µs, for the progress output.
func (c CPUSplit) brief() string {
	return strings.Join(append(c.parts(), "total "+us(c.Total())), ", ") + "; machine " + percent(c.Busy) + " busy"
}

// per divides a run's CPU times by its n operations.
func (c CPUSplit) per(n int64) CPUSplit {
	if n <= 0 {
		return CPUSplit{}
	}
	d := time.Duration(n)
	c.Go, c.PG, c.NATS, c.Client = c.Go/d, c.PG/d, c.NATS/d, c.Client/d
	return c
}

// medianCPU is the median of each part over runs; a part counts as
// measured if it was in every run.
func medianCPU(runs []CPUSplit) CPUSplit {
	if len(runs) == 0 {
		return CPUSplit{}
	}
	var m CPUSplit
	pick := func(part func(CPUSplit) time.Duration) time.Duration {
		xs := make([]time.Duration, len(runs))
		for i, r := range runs {
			xs[i] = part(r)
		}
		return Median(xs)
	}
	m.Go = pick(func(c CPUSplit) time.Duration { return c.Go })
	m.PG = pick(func(c CPUSplit) time.Duration { return c.PG })
	m.NATS = pick(func(c CPUSplit) time.Duration { return c.NATS })
	m.Client = pick(func(c CPUSplit) time.Duration { return c.Client })
	busy := make([]float64, len(runs))
	m.GoMeasured, m.PGMeasured, m.NATSMeasured, m.ClientMeasured = true, true, true, true
	for i, r := range runs {
		busy[i] = r.Busy
		m.GoMeasured = m.GoMeasured && r.GoMeasured
		m.PGMeasured = m.PGMeasured && r.PGMeasured
		m.NATSMeasured = m.NATSMeasured && r.NATSMeasured
		m.ClientMeasured = m.ClientMeasured && r.ClientMeasured
	}
	m.Busy = Median(busy)
	return m
}

// cpuMeter measures the CPU of one window: the harness process's (if
// goCPU), that of the PostgreSQL processes pgPIDs returns and the NATS
// server processes nats, and the machine's busy share.
type cpuMeter struct {
	goCPU   bool
	pgPIDs  func() []int // nil: PostgreSQL not measured
	nats    []int        // empty: NATS not measured
	goStart time.Duration
	// pgStart is the PostgreSQL processes' CPU at the start, pgLast the
	// latest reading of each process seen since (one that has exited
	// keeps its last).
	pgStart, pgLast, natsStart cpuSample
	machine                    machineCPU
	machineOK                  bool
}

// startCPUMeter starts a window.
func startCPUMeter(goCPU bool, pgPIDs func() []int, nats []int) *cpuMeter {
	m := &cpuMeter{goCPU: goCPU, pgPIDs: pgPIDs, nats: nats}
	if pgPIDs != nil {
		m.pgStart = sampleCPU(pgPIDs(), "postgres")
		m.pgLast = maps.Clone(m.pgStart)
	}
	if len(nats) > 0 {
		m.natsStart = sampleCPU(nats, "")
	}
	var err error
	m.machine, err = readMachineCPU()
	m.machineOK = err == nil
	m.goStart = cputime.Process()
	return m
}

// track reads the CPU of the PostgreSQL processes pids again: what a
// process that exits before the window ends used is counted up to this
// reading.
func (m *cpuMeter) track(pids []int) {
	for pid, v := range sampleCPU(pids, "postgres") {
		m.pgLast[pid] = v
	}
}

// stop ends the window and returns what it used.
func (m *cpuMeter) stop() CPUSplit {
	var c CPUSplit
	if m.goCPU {
		c.Go, c.GoMeasured = cputime.Process()-m.goStart, cputime.Supported()
	}
	if m.pgPIDs != nil {
		m.track(m.pgPIDs())
		c.PG, c.PGMeasured = cpuDelta(m.pgStart, m.pgLast), len(m.pgLast) > 0
	}
	if len(m.nats) > 0 {
		after := sampleCPU(m.nats, "")
		c.NATS, c.NATSMeasured = cpuDelta(m.natsStart, after), len(after) > 0
	}
	if mach, err := readMachineCPU(); err == nil && m.machineOK {
		if d := mach.Total - m.machine.Total; d > 0 {
			c.Busy = float64(mach.Busy-m.machine.Busy) / float64(d)
		}
	}
	return c
}
