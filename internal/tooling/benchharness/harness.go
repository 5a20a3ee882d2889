package benchharness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/internal/tooling/natsbin"
	"github.com/evsnap/evsnap/internal/tooling/natsserver"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Backend names, as the tables print them.
const (
	Memstore = "memstore"
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// DefaultRuns is how many times each figure is measured (the median is
// reported) unless Config.Runs says otherwise; QuickRuns in quick mode.
const (
	DefaultRuns = 5
	QuickRuns   = 3
)

// Config configures a harness run.
type Config struct {
	// Quick runs the short form: smaller sizes and shorter runs, for a
	// result in under a minute.
	Quick bool
	// Runs is how many times each figure is measured; the median is
	// reported. 0 means DefaultRuns (QuickRuns when Quick).
	Runs int
	// PostgresURL is the PostgreSQL server to measure; empty skips
	// PostgreSQL (and says so in the report). Every PostgreSQL step uses a
	// fresh schema and drops it afterwards.
	PostgresURL string
	// NATSURL is the NATS server (with JetStream) the external mode and the
	// worker use; empty runs the nats-server go.mod pins as a process of
	// its own (built once into natsbin's cache). Every
	// stream the harness creates has a unique name and is deleted
	// afterwards.
	NATSURL string
	// Command is the command line the report prints as the way to
	// reproduce it.
	Command string
	// Progress receives one line per step with the elapsed time (nil:
	// discarded).
	Progress io.Writer
	// Logger receives the library's own logs (nil: errors only, to
	// stderr).
	Logger *slog.Logger
	// Steps limits the run to these steps (StepLoad, StepSave,
	// StepWorker, StepScale, StepAppend, StepPeer); empty runs every step. A partial run says so on its
	// page.
	Steps []string
	// Backends limits the run to these backends (Memstore, SQLite,
	// Postgres); empty runs every backend there is a server for.
	Backends []string
	// ScaleCPU is each replica's CPU quota in the scale-out step, in CPUs
	// (0 means DefaultScaleCPU).
	ScaleCPU float64
	// PeerHallgren is a checkout of github.com/hallgren/eventsourcing for
	// the peer step (StepPeer); "" skips that step.
	PeerHallgren string
}

// Step names, for Config.Steps.
const (
	StepLoad   = "load"
	StepSave   = "save"
	StepWorker = "worker"
	// StepScale is the scale-out step: 1, 2, 4 and 8 `snapshotter run`
	// processes, each in its own cgroup with a CPU quota, on PostgreSQL.
	StepScale = "scale"
	// StepAppend is the append step: what an event costs as one stream
	// grows to 100,000 events, on SQLite and PostgreSQL, against the raw
	// driver doing the same inserts.
	StepAppend = "append"
)

var stepNames = []string{StepLoad, StepSave, StepWorker, StepScale, StepAppend, StepPeer}

// Validate reports a step or backend name the harness does not know.
func (c *Config) Validate() error {
	for _, s := range c.Steps {
		if !slices.Contains(stepNames, s) {
			return fmt.Errorf("unknown step %q: want one of %s", s, strings.Join(stepNames, ", "))
		}
	}
	for _, b := range c.Backends {
		if !slices.Contains([]string{Memstore, SQLite, Postgres}, b) {
			return fmt.Errorf("unknown backend %q: want %s, %s or %s", b, Memstore, SQLite, Postgres)
		}
		if b == Postgres && c.PostgresURL == "" {
			return fmt.Errorf("backend %s needs a PostgreSQL URL (--postgres-url or EVSNAP_POSTGRES_URL)", Postgres)
		}
	}
	if c.ScaleCPU < 0 || c.ScaleCPU > 64 {
		return fmt.Errorf("scale-out CPU quota %v: want a number of CPUs above 0, such as 0.1", c.ScaleCPU)
	}
	return nil
}

// selected reports whether name is in list; an empty list selects all.
func (c *Config) selected(list []string, name string) bool {
	return len(list) == 0 || slices.Contains(list, name)
}

// sizes returns the event counts of the load table.
func (c *Config) sizes() []int {
	if c.Quick {
		return []int{100, 1_000, 10_000}
	}
	return []int{100, 1_000, 10_000, 100_000}
}

// Harness holds what every step shares: the NATS connection, the
// temporary directory, the progress clock and the report being filled in.
type Harness struct {
	cfg   Config
	log   *slog.Logger
	start time.Time
	tmp   string
	reg   *eventsource.Registry

	natsURL  string
	nc       *nats.Conn
	js       jetstream.JetStream
	natsProc *natsserver.Server // the pinned nats-server, when no NATS URL was given
	// natsPIDs are the NATS server's processes, whose CPU the worker step
	// counts (none: not on this machine).
	natsPIDs []int

	pmu    sync.Mutex
	report *Report
}

// Run runs every step and returns the report. Steps that cannot run (no
// PostgreSQL URL, no pgbench) are recorded as skipped; a step that fails
// is recorded in Report.Errors and the others still run. The error is
// non-nil only when the harness could not start at all (for example NATS
// unreachable) or ctx ended.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Runs <= 0 {
		cfg.Runs = DefaultRuns
		if cfg.Quick {
			cfg.Runs = QuickRuns
		}
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	h := &Harness{
		cfg:    cfg,
		log:    cfg.Logger,
		start:  time.Now(),
		reg:    exampledomain.NewRegistry(),
		report: &Report{Quick: cfg.Quick, Runs: cfg.Runs, Command: cfg.Command, Sizes: cfg.sizes(), AppendSizes: cfg.appendSizes(), Started: time.Now()},
	}
	var err error
	if h.tmp, err = os.MkdirTemp("", "evsnap-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(h.tmp)
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	defer h.teardown()

	var backends []string
	for _, b := range []string{Memstore, SQLite, Postgres} {
		if cfg.selected(cfg.Backends, b) && (b != Postgres || cfg.PostgresURL != "") {
			backends = append(backends, b)
		}
	}
	if cfg.PostgresURL == "" {
		h.report.note("PostgreSQL was skipped: no --postgres-url, EVSNAP_POSTGRES_URL or EVSNAP_TEST_POSTGRES_URL. No PostgreSQL figure appears below.")
	}
	if len(cfg.Steps) > 0 || len(cfg.Backends) > 0 {
		h.report.note("A partial run: steps %s, backends %s. The other tables are missing on purpose.", listOrAll(cfg.Steps), listOrAll(cfg.Backends))
	}
	steps := []struct {
		step, name string
		fn         func(context.Context, string) error
	}{
		{StepLoad, "load and memory", h.runLoad},
		{StepSave, "save latency", h.runSave},
		{StepWorker, "worker", h.runWorker},
		{StepAppend, "append", h.runAppend},
	}
	for _, st := range steps {
		if !cfg.selected(cfg.Steps, st.step) {
			continue
		}
		for _, b := range backends {
			h.step(ctx, st.name, b, st.fn)
		}
	}
	if cfg.selected(cfg.Steps, StepPeer) && cfg.selected(cfg.Backends, Memstore) {
		if cfg.PeerHallgren == "" {
			h.report.note("The peer step was skipped: no --peer-hallgren (a checkout of github.com/hallgren/eventsourcing).")
		} else {
			h.step(ctx, "peer", Memstore, h.runPeer)
		}
	}
	// The scale-out step runs real worker processes, which need
	// PostgreSQL (a database they share).
	if cfg.selected(cfg.Steps, StepScale) && cfg.selected(cfg.Backends, Postgres) {
		if cfg.PostgresURL == "" {
			h.report.note("The scale-out step was skipped: it needs PostgreSQL.")
		} else {
			h.step(ctx, "scale-out", Postgres, h.runScale)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	h.report.Elapsed = time.Since(h.start)
	h.report.Machine.LoadEnd = loadAverage()
	h.progress("done in %s", h.report.Elapsed.Round(time.Second))
	return h.report, nil
}

func listOrAll(l []string) string {
	if len(l) == 0 {
		return "all"
	}
	return strings.Join(l, ", ")
}

// step runs one step for one backend, recording (not returning) its error.
func (h *Harness) step(ctx context.Context, name, backend string, fn func(context.Context, string) error) {
	if ctx.Err() != nil {
		return
	}
	t := time.Now()
	h.progress("%s / %s: start", name, backend)
	if err := fn(ctx, backend); err != nil {
		h.report.fail("%s / %s: %v", name, backend, err)
		h.progress("%s / %s: FAILED after %s: %v", name, backend, time.Since(t).Round(time.Millisecond), err)
		return
	}
	h.progress("%s / %s: done in %s", name, backend, time.Since(t).Round(time.Millisecond))
}

// progress prints one line with the time since the start.
func (h *Harness) progress(format string, args ...any) {
	h.pmu.Lock()
	defer h.pmu.Unlock()
	fmt.Fprintln(h.cfg.Progress, h.stamp(format, args...))
}

// stamp formats a progress line: the time since the start, then the text.
func (h *Harness) stamp(format string, args ...any) string {
	return fmt.Sprintf("[%7.1fs] %s", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// setup connects to NATS (or starts the embedded server) and records the
// machine and the versions.
func (h *Harness) setup(ctx context.Context) error {
	r := h.report
	r.Machine = machine(ctx)
	url := h.cfg.NATSURL
	if url == "" {
		// The nats-server go.mod pins, as its own process (as in
		// production, and so its CPU is not the harness's).
		bin, err := natsbin.Ensure(ctx, ".", "")
		if err != nil {
			return fmt.Errorf("nats-server for the benchmarks: %w", err)
		}
		srv, err := natsserver.Start(ctx, bin.Path, filepath.Join(h.tmp, "nats"))
		if err != nil {
			return err
		}
		h.natsProc = srv
		url = srv.URL()
		r.NATSWhere = "nats-server " + bin.Version + " (its own process on loopback, file storage in a temp dir)"
	} else {
		r.NATSWhere = natsconnect.Redact(url)
	}
	h.natsURL = url
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := natsconnect.Connect(cctx, natsconnect.Options{URL: url, Name: "evsnap-bench", Logger: h.log})
	if err != nil {
		h.teardown()
		return err
	}
	h.nc = nc
	if h.js, err = jetstream.New(nc); err != nil {
		h.teardown()
		return err
	}
	r.NATSVersion = nc.ConnectedServerVersion()
	h.natsPIDs = h.natsServerPIDs()
	h.progress("NATS: %s, server %s, process(es) %v", r.NATSWhere, r.NATSVersion, h.natsPIDs)
	if h.cfg.PostgresURL != "" {
		r.PGWhere = pgstore.RedactDSN(h.cfg.PostgresURL)
		conn, err := pgx.Connect(cctx, h.cfg.PostgresURL)
		if err != nil {
			h.teardown()
			return fmt.Errorf("postgres %s: %w", r.PGWhere, err)
		}
		err = conn.QueryRow(cctx, "SELECT version()").Scan(&r.PGVersion)
		_ = conn.Close(cctx)
		if err != nil {
			h.teardown()
			return fmt.Errorf("postgres %s: SELECT version(): %w", r.PGWhere, err)
		}
		h.progress("PostgreSQL: %s, %s", r.PGWhere, r.PGVersion)
	}
	h.progress("machine: %d cores, %s, %s", r.Machine.Cores, r.Machine.Uname, r.Machine.GoVersion)
	return nil
}

func (h *Harness) teardown() {
	if h.nc != nil {
		h.nc.Close()
		h.nc = nil
	}
	if h.natsProc != nil {
		h.natsProc.Stop()
		h.natsProc = nil
	}
}

// Machine describes where the figures were measured.
type Machine struct {
	Cores     int
	CPU       string
	Uname     string
	GoVersion string
	Commit    string
	// LoadStart and LoadEnd are the 1-minute load averages when the run
	// started and ended (/proc/loadavg; empty elsewhere).
	LoadStart, LoadEnd string
}

// loadAverage returns the 1-minute load average, or "".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func machine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadAverage()}
	if out, err := exec.CommandContext(ctx, "uname", "-srm").Output(); err == nil {
		m.Uname = strings.TrimSpace(string(out))
	} else {
		m.Uname = runtime.GOOS + "/" + runtime.GOARCH
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if out, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			m.Commit += " (with uncommitted changes in the working tree)"
		}
	}
	return m
}

// errSanity is returned by steps whose sanity checks fail: the figures
// would not mean what the table says, so none is reported.
var errSanity = errors.New("sanity check failed")
