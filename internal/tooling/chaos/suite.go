//go:build unix

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natsbin"
	"github.com/evsnap/evsnap/internal/tooling/natsserver"
	"github.com/evsnap/evsnap/internal/tooling/pgcluster"
	"github.com/evsnap/evsnap/internal/tooling/toxiproxy"
)

// noticeStream is the JetStream stream the binaries use by default.
const noticeStream = "EVSNAP_APPENDED"

// worker is one snapshotter run process. mu is held by whoever takes it
// down (a fault, or the monitor restarting it after a crash).
type worker struct {
	idx         int
	label       string // its name when not worker-<idx+1> (the rollback phase's v2 worker)
	mu          sync.Mutex
	p           *process
	node        *labNode // its network namespace (nil: the host's)
	metricsPort int
}

// metricsHost is where the worker serves /healthz, /readyz and /metrics.
func (w *worker) metricsHost() string {
	if w.node != nil {
		return w.node.ip
	}
	return "127.0.0.1"
}

// chaosLeaseTTL is the sweep lease's TTL in a run: short, so that the
// sweep moves soon after its holder is killed.
const chaosLeaseTTL = 3 * time.Second

// chaosPingInterval is the workers' and the loads' --nats-ping-interval:
// short, so that a client on a connection that a partition silenced
// gives it up (after 2 to 3 intervals) and reconnects within the
// partition, to another node of a cluster.
const chaosPingInterval = time.Second

func (w *worker) name() string {
	if w.label != "" {
		return w.label
	}
	return "worker-" + strconv.Itoa(w.idx+1)
}

// suite is one run.
type suite struct {
	cfg Config
	out io.Writer

	start time.Time // of the run
	t0    time.Time // of the load
	// hist records the history clients' loads and appends (linearizability).
	hist *history
	// lab is the run's network for the partitions (nil without them):
	// a namespace for each nats-server, each worker, the load and
	// Toxiproxy.
	lab *lab
	// toxi proxies the workers' links; pgProxy and natsProxy (one
	// address per nats-server, comma-separated) are the addresses the
	// workers connect to, linkProxies the proxies' names.
	toxi               *toxiproxy.Server
	pgProxy, natsProxy string
	linkProxies        []string
	tmp                string
	binDir             string
	snapBin            string
	appBin             string
	env                []string

	db      *database
	pg      *pgcluster.Cluster // the suite's own cluster; nil with an external server
	pgMu    sync.Mutex         // faults on PostgreSQL take turns
	linkMu  sync.Mutex         // so do faults on the worker links
	nats    []*natsServer      // one, or ClusterNodes in cluster mode
	natsMu  sync.Mutex
	workers []*worker
	load    *process
	loadTee *lastLine
	loadOut string
	record  string

	cleanups []func()

	// The rollback phase's v2 worker and its loads' record files (see
	// rollback.go).
	v2Workers       []*worker
	phaseRecords    []string
	phaseLoads      []*phaseLoad
	rollbackConv    convergence
	rollbackConvErr error

	mu        sync.Mutex
	fig       Figures
	failures  []string // faults that went wrong, crashes
	refused   []string // worker starts refused while NATS was down
	drainMax  time.Duration
	executed  map[FaultKind]int
	workerLog map[string]WorkerLogStats
	outages   []outage // of NATS
	pgOutages []Window // of PostgreSQL: from the fault to its return
	disk      diskState
}

// natsURL is every nats-server's client URL, comma-separated: what the
// binaries are given, so that in a cluster they reconnect to a survivor.
func (s *suite) natsURL() string {
	urls := make([]string, len(s.nats))
	for i, n := range s.nats {
		urls[i] = n.url()
	}
	return strings.Join(urls, ",")
}

func (s *suite) logf(format string, args ...any) {
	ref := s.start
	if !s.t0.IsZero() {
		ref = s.t0
	}
	fmt.Fprintf(s.out, "[%7.1fs] %s\n", time.Since(ref).Seconds(), fmt.Sprintf(format, args...))
}

func (s *suite) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.failures = append(s.failures, msg)
	s.mu.Unlock()
	s.logf("FAILURE: %s", msg)
}

func (s *suite) defer_(f func()) { s.cleanups = append(s.cleanups, f) }

func (s *suite) cleanup() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// Run runs the suite and returns its result. The error reports a run that
// could not be carried out (setup failed, interrupted); checks that fail
// are in the result. Everything it starts is stopped and removed before it
// returns (unless cfg.Keep), whatever happens.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &suite{cfg: cfg, out: cfg.Out, start: time.Now(), executed: map[FaultKind]int{}, workerLog: map[string]WorkerLogStats{}}
	defer s.cleanup()
	res, err := s.run(ctx)
	if err != nil && ctx.Err() != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("interrupted: %w", ctx.Err())
		} else {
			err = fmt.Errorf("interrupted: %w (%v)", ctx.Err(), err)
		}
	}
	return res, err
}

func (s *suite) run(ctx context.Context) (*Result, error) {
	cfg := &s.cfg
	faults, err := NewSchedule(cfg.Seed, cfg.scheduleConfig())
	if err != nil {
		return nil, err
	}
	form := "full"
	if cfg.Short {
		form = "short"
	}
	if cfg.Cluster {
		form += " cluster"
	}
	s.fig.Form, s.fig.Seed, s.fig.Workers, s.fig.Duration, s.fig.Cluster = form, cfg.Seed, cfg.Workers, cfg.Duration, cfg.Cluster
	s.logf("evsnap chaos suite, %s form: seed %d, %d workers, load %v at %.0f saves/s over %d aggregates, %d faults scheduled",
		form, cfg.Seed, cfg.Workers, cfg.Duration, cfg.Rate, cfg.Aggregates, len(faults))

	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(s.out, "schedule (seconds after the load starts):\n")
	for _, f := range faults {
		fmt.Fprintf(s.out, "  %s\n", f)
	}
	if err := s.startWorkers(ctx); err != nil {
		return nil, err
	}
	if err := s.startLoad(); err != nil {
		return nil, err
	}
	hist, err := s.startHistory(ctx)
	if err != nil {
		return nil, err
	}
	s.hist = hist
	stopHist := sync.OnceFunc(hist.stop)
	defer stopHist()

	// The faults and a monitor that restarts crashed processes, like a
	// supervisor would.
	faultCtx, stopFaults := context.WithCancel(ctx)
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); s.runSchedule(faultCtx, faults) }()
	defer func() { stopFaults(); <-schedDone }() // no fault restarts anything after this
	monCtx, stopMonitor := context.WithCancel(ctx)
	monDone := make(chan struct{})
	go func() { defer close(monDone); s.monitor(monCtx) }()
	stopMon := sync.OnceFunc(func() { stopMonitor(); <-monDone })
	defer stopMon()

	if err := s.waitLoad(ctx); err != nil {
		return nil, err
	}
	select {
	case <-schedDone:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(2 * time.Minute):
		return nil, errors.New("faults still running 2 minutes after the load's end")
	}
	if err := s.ensureUp(ctx); err != nil {
		return nil, err
	}

	// Stop the load; its summary counts the saves and errors.
	s.logf("stopping the load (SIGINT)")
	code, inTime, _ := s.load.stop(syscall.SIGINT, 60*time.Second)
	loadStopped := time.Now()
	s.fig.LoadExitCode = code
	if !inTime {
		s.fail("the load generator did not exit within 60s of SIGINT (killed)")
	}
	stopHist()
	loadOutput, _ := os.ReadFile(s.loadOut)
	sum, sumErr := ParseLoadOutput(string(loadOutput))
	s.logf("load stopped: exit code %d; %s", code, lastDoneLine(string(loadOutput)))

	// Convergence: from the workers and their sweep alone.
	conv, convErr := s.converge(ctx, loadStopped)
	if convErr != nil && ctx.Err() != nil {
		return nil, convErr
	}
	stopMon()

	// Stop the workers; each must drain and exit 0.
	s.stopWorkers(ctx)

	// v1 and v2 of the Account side by side, then v2 rolled back.
	if s.cfg.RollbackSideBySide > 0 {
		if err := s.rollbackPhase(ctx); err != nil {
			return nil, err
		}
	}

	if s.cfg.Sabotage {
		done, err := s.db.sabotage(ctx)
		for _, d := range done {
			s.logf("SABOTAGE: %s", d)
		}
		if err != nil {
			return nil, err
		}
	}

	res, err := s.check(ctx, sum, sumErr, conv, convErr)
	if err != nil {
		return nil, err
	}
	s.fig.Total = time.Since(s.start)
	res.Figures = s.fig
	return res, nil
}

// setup builds the binaries, creates the database, starts NATS and
// migrates.
func (s *suite) setup(ctx context.Context) error {
	cfg := &s.cfg
	tmp, err := os.MkdirTemp("", "evsnap-chaos-*")
	if err != nil {
		return err
	}
	s.tmp = tmp
	s.defer_(func() {
		if cfg.Keep {
			fmt.Fprintf(s.out, "kept the work directory %s\n", tmp)
			return
		}
		if err := os.RemoveAll(tmp); err != nil {
			fmt.Fprintf(s.out, "cleanup: remove %s: %v\n", tmp, err)
		}
	})
	s.binDir = filepath.Join(tmp, "bin")
	s.snapBin = filepath.Join(s.binDir, "snapshotter")
	s.appBin = filepath.Join(s.binDir, "example-app")
	s.env = childEnv()

	s.logf("building snapshotter and example-app from %s (%s)", cfg.RepoDir, gitDescribe(ctx, cfg.RepoDir))
	s.fig.Build = gitDescribe(ctx, cfg.RepoDir)
	if out, errOut, code, err := runOnce(ctx, 10*time.Minute, cfg.RepoDir, os.Environ(), "go", "build", "-o", s.binDir+"/", "./cmd/snapshotter", "./cmd/example-app"); err != nil || code != 0 {
		return fmt.Errorf("go build: exit %d: %v\n%s%s", code, err, out, errOut)
	}

	if err := s.setupLab(ctx); err != nil {
		return err
	}
	serverURL, err := s.setupPostgres(ctx)
	if err != nil {
		return err
	}
	db, err := createDatabase(ctx, serverURL)
	if err != nil {
		return err
	}
	s.db = db
	s.defer_(func() {
		if cfg.Keep {
			if db.ctl != nil {
				db.ctl.Close()
			}
			fmt.Fprintf(s.out, "kept the database %s (drop it with: DROP DATABASE %s WITH (FORCE))\n", db.name, db.name)
			return
		}
		if err := db.drop(); err != nil {
			fmt.Fprintf(s.out, "cleanup: %v\n", err)
		}
	})
	if err := db.connect(ctx); err != nil {
		return err
	}
	s.logf("created database %s", db.name)

	if cfg.NATSServer == "" {
		bin, err := natsbin.Ensure(ctx, cfg.RepoDir, "")
		if err != nil {
			return err
		}
		how := "cached"
		if bin.Built {
			how = "built"
		}
		s.logf("nats-server %s (the version go.mod pins): %s %s in %v", bin.Version, how, bin.Path, bin.Took.Round(time.Millisecond))
		cfg.NATSServer = bin.Path
	}
	s.fig.NATSVersion = natsVersion(ctx, cfg.NATSServer)
	nodes := 1
	if cfg.Cluster {
		nodes = ClusterNodes
	}
	ports, routePorts := make([]int, nodes), make([]int, nodes)
	for i := range nodes {
		if ports[i], err = natsserver.FreePort(); err != nil {
			return err
		}
		if routePorts[i], err = natsserver.FreePort(); err != nil {
			return err
		}
	}
	names, hosts := natsNames(nodes), make([]string, nodes)
	for i, name := range names {
		hosts[i] = "127.0.0.1"
		if n := s.lab.node(name); n != nil {
			hosts[i] = n.ip
		}
	}
	for i, name := range names {
		storeDir, logPath, extra := filepath.Join(tmp, "nats"), filepath.Join(tmp, "nats-server.log"), []string(nil)
		if cfg.Cluster {
			storeDir, logPath = filepath.Join(tmp, name), filepath.Join(tmp, name+".log")
			extra = clusterArgs("evsnap-chaos", i, hosts, routePorts)
		}
		if err := os.MkdirAll(storeDir, 0o755); err != nil {
			return err
		}
		if err := s.mountNATSStore(storeDir); err != nil {
			return err
		}
		n := newNATSServer(cfg.NATSServer, name, hosts[i], storeDir, logPath, ports[i], s.lab.node(name), extra...)
		s.nats = append(s.nats, n)
		s.defer_(func() { n.stop(syscall.SIGTERM) })
		if err := n.proc.start(); err != nil {
			return err
		}
	}
	for _, n := range s.nats {
		if err := n.waitReady(ctx, 30*time.Second); err != nil {
			return err
		}
		s.logf("started %s %s", cfg.NATSServer, strings.Join(n.proc.args, " "))
	}

	// In a cluster, the stream goes on every node: migrate retries while
	// the JetStream meta leader does not yet see every peer.
	// The sweep lease's bucket expires a dead holder's lease after
	// chaosLeaseTTL, so a SIGKILLed holder's sweep moves within the run.
	migrate := []string{"migrate", "--postgres-url", db.dbURL(appAdmin), "--nats-url", s.natsURL(), "--log-format", "text",
		"--sweep-lease-ttl", chaosLeaseTTL.String()}
	if cfg.Cluster {
		migrate = append(migrate, "--stream-replicas", strconv.Itoa(ClusterNodes))
	}
	var out, errOut string
	var code int
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, errOut, code, err = runOnce(ctx, 2*time.Minute, s.tmp, s.env, s.snapBin, migrate...)
		if (err == nil && code == 0) || !cfg.Cluster || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
	if err != nil || code != 0 {
		return fmt.Errorf("snapshotter %s: exit %d: %v\n%s%s", strings.Join(migrate, " "), code, err, out, errOut)
	}
	s.logf("snapshotter migrate: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
	if err := db.installAudit(ctx); err != nil {
		return err
	}
	return s.startLinks(ctx)
}

// startLinks runs Toxiproxy between the workers and PostgreSQL and NATS
// (a proxy per nats-server), for the worker-link faults; with a lab, in
// its links namespace, where the workers' partitions cut the links.
func (s *suite) startLinks(ctx context.Context) error {
	path, built, err := toxiproxy.Ensure(ctx, "")
	if err != nil {
		return err
	}
	if built {
		s.logf("built toxiproxy-server %s into %s", toxiproxy.Version, path)
	}
	host, natsHost, pgUpstream := "127.0.0.1", "127.0.0.1", s.db.base.Host
	var wrap func(string, []string) (string, []string)
	if links := s.lab.node(linksRole); links != nil {
		host, natsHost, wrap = links.ip, links.extra[0], links.wrap
		pgUpstream = net.JoinHostPort(s.lab.hostAddr(), s.db.base.Port())
	}
	srv, err := toxiproxy.StartAt(ctx, path, filepath.Join(s.tmp, "toxiproxy.log"), host, wrap)
	if err != nil {
		return err
	}
	s.toxi = srv
	s.defer_(srv.Stop)
	if s.pgProxy, err = srv.Proxy(ctx, "pg", pgUpstream); err != nil {
		return err
	}
	s.linkProxies = []string{"pg"}
	var natsProxies []string
	for _, n := range s.nats {
		addr, err := srv.ProxyAt(ctx, n.name, natsHost, strings.TrimPrefix(n.url(), "nats://"))
		if err != nil {
			return err
		}
		natsProxies = append(natsProxies, "nats://"+addr)
		s.linkProxies = append(s.linkProxies, n.name)
	}
	s.natsProxy = strings.Join(natsProxies, ",")
	s.logf("toxiproxy %s: the workers reach PostgreSQL through %s and NATS through %s", toxiproxy.Version, s.pgProxy, s.natsProxy)
	return nil
}

// slowLink puts each of f's toxics on every worker link in turn, for a
// third of f.Down each: latency, a stall, resets.
func (s *suite) slowLink(ctx context.Context, f Fault) error {
	third := f.Down / 3
	phases := [][]toxiproxy.Toxic{
		{
			{Name: "latency-up", Type: "latency", Stream: "upstream", Attributes: map[string]int{"latency": f.LatencyMS, "jitter": f.LatencyMS / 4}},
			{Name: "latency-down", Type: "latency", Stream: "downstream", Attributes: map[string]int{"latency": f.LatencyMS, "jitter": f.LatencyMS / 4}},
		},
		{{Name: "stall", Type: "latency", Stream: "downstream", Attributes: map[string]int{"latency": int(third.Milliseconds())}}},
		{{Name: "reset", Type: "reset_peer", Stream: "upstream", Attributes: map[string]int{"timeout": 0}}},
	}
	// remove takes toxics off every link (restarting Toxiproxy if it will
	// not: see toxiproxy.Server.RemoveToxics).
	remove := func(toxics []toxiproxy.Toxic) error {
		names := make([]string, len(toxics))
		for i, t := range toxics {
			names[i] = t.Name
		}
		restartedAfter, err := s.toxi.RemoveToxics(context.WithoutCancel(ctx), s.linkProxies, names)
		if restartedAfter != nil && err == nil {
			s.logf("worker links: toxiproxy did not take the toxics off (%v); restarted it, cutting the links through it", restartedAfter)
		}
		if err != nil {
			return fmt.Errorf("%w; restarting toxiproxy: %v", restartedAfter, err)
		}
		return nil
	}
	addAll := func(toxics []toxiproxy.Toxic) error {
		for _, p := range s.linkProxies {
			for _, t := range toxics {
				if err := s.toxi.AddToxic(ctx, p, t); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, toxics := range phases {
		if err := addAll(toxics); err != nil {
			// Toxiproxy's deadlock (toxiproxy#558) can hold a proxy's lock
			// from an earlier toxic, so that adding one times out too: a
			// restart clears every proxy of its toxics, and the phase is
			// tried once more.
			if rerr := s.toxi.Restart(context.WithoutCancel(ctx)); rerr != nil {
				return fmt.Errorf("%w; restarting toxiproxy: %v", err, rerr)
			}
			s.logf("worker links: toxiproxy did not take a toxic (%v); restarted it, cutting the links through it", err)
			if err := addAll(toxics); err != nil {
				// Take off what this phase put on (a toxic whose add
				// timed out may have landed anyway), so that the next
				// fault does not meet it.
				_ = remove(toxics)
				return err
			}
		}
		sleepCtx(ctx, third)
		if err := remove(toxics); err != nil {
			return err
		}
	}
	return nil
}

func ifStr(ok bool, s string) string {
	if ok {
		return s
	}
	return ""
}

// childEnv is the environment without EVSNAP_* and OTEL_* variables, so
// the children are configured by their flags alone.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "EVSNAP_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func gitDescribe(ctx context.Context, dir string) string {
	head, _, code, err := runOnce(ctx, 10*time.Second, dir, os.Environ(), "git", "rev-parse", "--short", "HEAD")
	if err != nil || code != 0 {
		return "unknown commit"
	}
	desc := "commit " + strings.TrimSpace(head)
	st, _, code, err := runOnce(ctx, 10*time.Second, dir, os.Environ(), "git", "status", "--porcelain", "--untracked-files=no")
	if err == nil && code == 0 {
		if n := len(strings.Fields(strings.ReplaceAll(st, "\n", " \n"))); strings.TrimSpace(st) != "" && n > 0 {
			desc += fmt.Sprintf(" + uncommitted changes in %d tracked files", strings.Count(strings.TrimSpace(st), "\n")+1)
		}
	}
	return desc
}

func (s *suite) startWorkers(ctx context.Context) error {
	cfg := &s.cfg
	for i := range cfg.Workers {
		w, err := s.startWorker(&worker{idx: i}, strconv.Itoa(i+1))
		if err != nil {
			return err
		}
		s.workers = append(s.workers, w)
	}
	for _, w := range s.workers {
		if err := waitReady(ctx, w, 30*time.Second); err != nil {
			return err
		}
	}
	s.logf("%d workers ready (policy %s, sweep every %v, ack wait %v, drain timeout %v)",
		len(s.workers), cfg.policy(), cfg.SweepInterval, cfg.AckWait, cfg.DrainTimeout)
	return nil
}

// startWorker starts w (its idx or label set) as a snapshotter run with
// workerArgs(suffix, a free port) and extra arguments, and has the
// cleanup kill it.
func (s *suite) startWorker(w *worker, suffix string, extra ...string) (*worker, error) {
	port, err := natsserver.FreePort()
	if err != nil {
		return nil, err
	}
	w.metricsPort = port
	w.node = s.lab.node(w.name())
	path, args := s.snapBin, append(s.workerArgs(suffix, net.JoinHostPort(w.metricsHost(), strconv.Itoa(port))), extra...)
	if w.node != nil {
		path, args = w.node.wrap(path, args)
	}
	w.p = &process{
		name:    w.name(),
		path:    path,
		args:    args,
		env:     s.env,
		dir:     s.tmp,
		logPath: filepath.Join(s.tmp, w.name()+".log"),
	}
	s.defer_(w.p.kill)
	return w, w.p.start()
}

// workerArgs are the arguments of a snapshotter run whose PostgreSQL
// connections are named appWorkerPrefix+suffix (so pg-terminate faults
// find them) and which serves its metrics on metricsAddr.
func (s *suite) workerArgs(suffix, metricsAddr string) []string {
	cfg := &s.cfg
	return []string{"run",
		"--postgres-url", s.workerPGURL(appWorkerPrefix + suffix),
		"--nats-url", s.workerNATSURL(),
		"--nats-ping-interval", chaosPingInterval.String(),
		"--policy", cfg.policy(),
		"--sweep-interval", cfg.SweepInterval.String(),
		"--sweep-lease-ttl", chaosLeaseTTL.String(),
		"--ack-wait", cfg.AckWait.String(),
		"--drain-timeout", cfg.DrainTimeout.String(),
		"--metrics-addr", metricsAddr,
		"--log-format", "json",
		"--log-level", "info",
	}
}

// workerPGURL is the chaos database's URL through the worker-link proxy.
func (s *suite) workerPGURL(app string) string {
	u, err := url.Parse(s.db.dbURL(app))
	if err != nil || s.pgProxy == "" {
		return s.db.dbURL(app)
	}
	u.Host = s.pgProxy
	return u.String()
}

// workerNATSURL is NATS through the worker-link proxies, or the servers
// themselves.
func (s *suite) workerNATSURL() string {
	if s.natsProxy != "" {
		return s.natsProxy
	}
	return s.natsURL()
}

// waitReady polls the worker's /readyz until it answers 200.
func waitReady(ctx context.Context, w *worker, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	url := fmt.Sprintf("http://%s/readyz", net.JoinHostPort(w.metricsHost(), strconv.Itoa(w.metricsPort)))
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !w.p.running() {
			return fmt.Errorf("%s exited while starting; its log: %s", w.name(), w.p.logPath)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready (%s) after %v", w.name(), url, timeout)
}

func (s *suite) startLoad() error {
	cfg := &s.cfg
	s.record = filepath.Join(s.tmp, "saves.record")
	s.loadOut = filepath.Join(s.tmp, "load.out")
	s.loadTee = &lastLine{}
	path, args := s.appBin, s.loadArgs(cfg.Rate, cfg.Duration, s.record)
	if n := s.lab.node(loadRole); n != nil {
		path, args = n.wrap(path, args)
	}
	s.load = &process{
		name:       "load",
		path:       path,
		args:       args,
		env:        s.env,
		dir:        s.tmp,
		logPath:    filepath.Join(s.tmp, "load.log"),
		stdoutPath: s.loadOut,
		stdoutTee:  s.loadTee,
	}
	s.defer_(s.load.kill)
	if err := s.load.start(); err != nil {
		return err
	}
	s.t0 = time.Now()
	s.logf("load started: example-app load --aggregates %d --rate %.0f --concurrency %d --id-seed %d --record %s",
		cfg.Aggregates, cfg.Rate, cfg.Concurrency, s.idSeed(), filepath.Base(s.record))
	return nil
}

// idSeed is the loads' --id-seed: every load of the run saves the same
// aggregates (the rollback phase's v1 and v2 loads those of the main
// load).
func (s *suite) idSeed() uint64 { return max(s.cfg.Seed, 1) }

// loadArgs are the arguments of an example-app load at rate saves/s that
// the suite stops with SIGINT after about d (d plus two minutes is a
// backstop), recording its saves in record.
func (s *suite) loadArgs(rate float64, d time.Duration, record string) []string {
	cfg := &s.cfg
	return []string{"load",
		"--postgres-url", s.loadPGURL(),
		"--nats-url", s.natsURL(),
		"--nats-ping-interval", chaosPingInterval.String(),
		"--aggregates", strconv.Itoa(cfg.Aggregates),
		"--id-seed", strconv.FormatUint(s.idSeed(), 10),
		"--rate", strconv.FormatFloat(rate, 'f', -1, 64),
		"--duration", (d + 2*time.Minute).String(),
		"--orders", "0.3",
		"--max-events", "3",
		"--concurrency", strconv.Itoa(cfg.Concurrency),
		"--record", record,
		"--log-level", "warn",
	}
}

// waitLoad lets the load run for the configured duration, printing
// progress.
func (s *suite) waitLoad(ctx context.Context) error {
	end := time.NewTimer(s.cfg.Duration)
	defer end.Stop()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end.C:
			return nil
		case <-tick.C:
			if !s.load.running() {
				code, _ := s.load.wait(0)
				out, _ := os.ReadFile(s.loadOut)
				return fmt.Errorf("the load generator exited early (exit code %d): %s\nits log:%s", code, lastDoneLine(string(out)), tailLog(s.load.logPath, 20))
			}
			s.mu.Lock()
			f := s.fig
			s.mu.Unlock()
			s.logf("load: %s | kills %d, nats restarts %d, pg terminations %d, drains %d, pg restarts/crashes %d",
				strings.TrimSpace(s.loadTee.String()), f.Kills, f.NATSRestarts, f.PGRounds, f.Drains, len(f.PGFaults))
		}
	}
}

// runSchedule injects the faults at their times; faults on different
// targets may overlap, faults on one target take turns.
func (s *suite) runSchedule(ctx context.Context, faults []Fault) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, f := range faults {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(s.t0.Add(f.At))):
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.inject(ctx, f)
		}()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (s *suite) inject(ctx context.Context, f Fault) {
	switch f.Kind {
	case KillWorker:
		w := s.workers[f.Worker]
		w.mu.Lock()
		defer w.mu.Unlock()
		pid := w.p.pid()
		_ = w.p.signal(syscall.SIGKILL)
		if _, ok := w.p.wait(10 * time.Second); !ok {
			s.fail("%s (pid %d) still running 10s after SIGKILL", w.name(), pid)
			return
		}
		s.count(func(f *Figures) { f.Kills++ }, KillWorker)
		s.logf("SIGKILL %s (pid %d); restarting in %v", w.name(), pid, f.Down.Round(time.Millisecond))
		if sleepCtx(ctx, f.Down); ctx.Err() != nil {
			return
		}
		if err := w.p.start(); err != nil {
			s.fail("restart %s: %v", w.name(), err)
		}
	case DrainWorker:
		w := s.workers[f.Worker]
		w.mu.Lock()
		defer w.mu.Unlock()
		s.drain(ctx, w, "")
		if sleepCtx(ctx, f.Down); ctx.Err() != nil {
			return
		}
		if err := w.p.start(); err != nil {
			s.fail("restart %s: %v", w.name(), err)
		}
	case RestartNATS:
		s.natsMu.Lock()
		defer s.natsMu.Unlock()
		sig := syscall.SIGTERM
		if f.Hard {
			sig = syscall.SIGKILL
		}
		s.mu.Lock()
		s.outages = append(s.outages, outage{from: time.Now()})
		s.mu.Unlock()
		s.nats[0].stop(sig)
		s.count(func(fg *Figures) {
			fg.NATSRestarts++
			if f.Hard {
				fg.NATSKills++
			}
		}, RestartNATS)
		s.logf("stopped nats-server (%s); starting it again in %v", sig, f.Down.Round(time.Millisecond))
		if sleepCtx(ctx, f.Down); ctx.Err() != nil {
			return
		}
		if err := s.nats[0].start(ctx, 30*time.Second); err != nil && ctx.Err() == nil {
			s.fail("nats-server did not come back: %v", err)
		}
		s.mu.Lock()
		s.outages[len(s.outages)-1].to = time.Now()
		s.mu.Unlock()
	case KillNATSLeader, KillNATSFollower:
		s.killNATSNode(ctx, f)
	case RestartPG, CrashPG, KillPG:
		s.pgFault(ctx, f)
	case NATSDiskFull:
		s.natsDiskFull(ctx, f)
	case PGDiskFull:
		s.pgDiskFull(ctx, f)
	case TerminatePG:
		s.pgMu.Lock()
		defer s.pgMu.Unlock()
		n, err := s.db.terminateWorkers(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.fail("%v", err)
			}
			return
		}
		s.count(func(f *Figures) { f.PGRounds++; f.PGConns += n }, TerminatePG)
		s.logf("pg_terminate_backend: terminated %d worker connections", n)
	case SlowLink:
		s.linkMu.Lock()
		defer s.linkMu.Unlock()
		if err := s.slowLink(ctx, f); err != nil {
			if ctx.Err() == nil {
				s.fail("worker links: %v", err)
			}
			return
		}
		s.count(func(fg *Figures) { fg.Links++ }, SlowLink)
		s.logf("worker links: latency %d ms, a stall and resets for %v each, then restored", f.LatencyMS, (f.Down / 3).Round(time.Millisecond))
	case PartitionNATS, PartitionWorkerNATS, PartitionWorkerPG, PartitionAppNATS:
		s.partition(ctx, f)
	case LoseNotices:
		s.natsMu.Lock()
		defer s.natsMu.Unlock()
		n, paused, err := purgeNotices(ctx, s.natsURL(), noticeStream, snapshotterConsumer, f.Down, 5*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				s.fail("purge the notice stream: %v", err)
			}
			return
		}
		s.count(func(f *Figures) { f.Purges++; f.NoticesLost += n }, LoseNotices)
		s.logf("purged the notice stream after pausing the consumer %s: %d notices no worker had acknowledged are lost", paused, n)
	}
}

func (s *suite) count(f func(*Figures), k FaultKind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.fig)
	s.executed[k]++
}

// drain sends SIGTERM to w and checks it exits 0 within its drain timeout
// (plus the slack for process shutdown). The caller holds w.mu.
func (s *suite) drain(ctx context.Context, w *worker, why string) {
	if !s.awaitStarted(ctx, w, 30*time.Second) {
		s.logf("%s has not served /healthz for 30s; sending SIGTERM anyway", w.name())
	}
	limit := s.cfg.DrainTimeout + s.cfg.DrainSlack
	pid := w.p.pid()
	code, inTime, took := w.p.stop(syscall.SIGTERM, limit)
	s.mu.Lock()
	s.drainMax = max(s.drainMax, took)
	s.mu.Unlock()
	if why == "" {
		s.count(func(f *Figures) { f.Drains++ }, DrainWorker)
	}
	switch {
	case !inTime:
		s.fail("%s (pid %d) did not exit within %v of SIGTERM (drain timeout %v); killed. Log: %s",
			w.name(), pid, limit, s.cfg.DrainTimeout, tailLog(w.p.logPath, 15))
	case code != 0:
		s.fail("%s (pid %d) exited %d after SIGTERM (%v); want 0. Log: %s",
			w.name(), pid, code, took.Round(time.Millisecond), tailLog(w.p.logPath, 15))
	default:
		s.logf("SIGTERM %s (pid %d)%s: drained and exited 0 in %v", w.name(), pid, why, took.Round(time.Millisecond))
	}
}

// monitor restarts processes that exited without being asked to, the way
// a supervisor would, and records each as a failure (a worker refused
// start while NATS was down is recorded separately).
func (s *suite) monitor(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, w := range s.workers {
			if !w.mu.TryLock() {
				continue
			}
			s.restartIfExited(ctx, w)
			w.mu.Unlock()
		}
		if s.natsMu.TryLock() {
			for _, n := range s.nats {
				if gone, how := n.proc.exitedUnexpectedly(); gone {
					s.fail("%s exited on its own: %s. Log: %s", n.name, how, tailLog(n.proc.logPath, 8))
					s.mu.Lock()
					s.outages = append(s.outages, outage{from: n.proc.exitTime()})
					s.mu.Unlock()
					err := n.start(ctx, 30*time.Second)
					s.mu.Lock()
					s.outages[len(s.outages)-1].to = time.Now()
					s.mu.Unlock()
					if err != nil && ctx.Err() == nil {
						s.fail("%s did not come back: %v", n.name, err)
					}
				}
			}
			s.natsMu.Unlock()
		}
		s.monitorPG(ctx)
	}
}

// restartIfExited restarts w if it exited without being asked to, and
// records why: a start refused while NATS was down (the binary exits 1
// when it cannot connect at start-up), or a crash. The caller holds w.mu.
func (s *suite) restartIfExited(ctx context.Context, w *worker) bool {
	gone, how := w.p.exitedUnexpectedly()
	if !gone {
		return false
	}
	tail := tailLog(w.p.logPath, 8)
	switch {
	case strings.Contains(tail, "nats: connect to") && s.duringOutage(w.p.exitTime()):
		s.mu.Lock()
		s.refused = append(s.refused, fmt.Sprintf("%s: %s while NATS was down", w.name(), how))
		s.mu.Unlock()
		s.logf("%s could not start while NATS was down (%s); restarting it", w.name(), how)
	default:
		s.mu.Lock()
		s.fig.Crashes++
		s.mu.Unlock()
		s.fail("%s exited on its own: %s. Log: %s", w.name(), how, tail)
	}
	if sleepCtx(ctx, 500*time.Millisecond); ctx.Err() != nil {
		return false
	}
	if err := w.p.start(); err != nil {
		s.fail("restart %s: %v", w.name(), err)
	}
	return true
}

// awaitStarted waits until w's current incarnation serves /healthz (it
// has connected to PostgreSQL and NATS, and its signal handlers are long
// installed), restarting it if it exits on its own meanwhile, for at most
// timeout. A SIGTERM sent a millisecond after exec would find the Go
// runtime's default action still in place and prove nothing about
// draining. The caller holds w.mu.
func (s *suite) awaitStarted(ctx context.Context, w *worker, timeout time.Duration) bool {
	client := &http.Client{Timeout: 500 * time.Millisecond}
	url := fmt.Sprintf("http://%s/healthz", net.JoinHostPort(w.metricsHost(), strconv.Itoa(w.metricsPort)))
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !w.p.running() {
			if !s.restartIfExited(ctx, w) {
				return false // exited as asked; nothing to wait for
			}
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return false
}

// outage is a period in which the NATS server was down (to is zero while
// it lasts).
type outage struct{ from, to time.Time }

// duringOutage reports whether t falls in a NATS outage or within 2s after
// one (a client that saw the server down a moment before it came back).
func (s *suite) duringOutage(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.outages {
		if !t.Before(o.from) && (o.to.IsZero() || t.Before(o.to.Add(2*time.Second))) {
			return true
		}
	}
	return false
}

// ensureUp starts anything that is down after the faults (nothing should
// be).
func (s *suite) ensureUp(ctx context.Context) error {
	if s.pg != nil {
		s.pgMu.Lock()
		if !s.pg.Running() {
			s.fail("PostgreSQL was down after the faults ended")
			if _, err := s.pg.Start(ctx); err != nil {
				s.pgMu.Unlock()
				return err
			}
		}
		s.pgMu.Unlock()
	}
	s.natsMu.Lock()
	for _, n := range s.nats {
		if !n.proc.running() {
			s.fail("%s was down after the faults ended", n.name)
			if err := n.start(ctx, 30*time.Second); err != nil {
				s.natsMu.Unlock()
				return err
			}
		}
	}
	s.natsMu.Unlock()
	for _, w := range s.workers {
		w.mu.Lock()
		if !w.p.running() {
			s.fail("%s was down after the faults ended", w.name())
			if err := w.p.start(); err != nil {
				w.mu.Unlock()
				return err
			}
		}
		w.mu.Unlock()
	}
	return nil
}

// convergence is how the wait for convergence ended.
type convergence struct {
	Converged bool
	Took      time.Duration
	Behind    []lag // the aggregates still at or past the threshold, most behind first
	Streams   int
}

// converge waits until every aggregate is within the threshold of its
// head: the workers' notices and their reconciliation sweep must get there
// on their own.
func (s *suite) converge(ctx context.Context, since time.Time) (convergence, error) {
	cfg := &s.cfg
	thresholds := map[string]int{exampledomain.AccountType: cfg.Threshold, exampledomain.OrderType: cfg.Threshold}
	schemas := map[string]int{exampledomain.AccountType: exampledomain.AccountSchemaVersion, exampledomain.OrderType: exampledomain.OrderSchemaVersion}
	deadline := since.Add(cfg.ConvergeTimeout)
	var c convergence
	lastPrint := time.Time{}
	for {
		lags, err := s.db.lags(ctx, thresholds, schemas)
		if err != nil {
			return c, err
		}
		c.Streams = len(lags)
		c.Behind = c.Behind[:0]
		for _, l := range lags {
			if !l.WithinThreshold {
				c.Behind = append(c.Behind, l)
			}
		}
		slices.SortFunc(c.Behind, func(a, b lag) int { return int(b.Behind - a.Behind) })
		if len(c.Behind) == 0 {
			c.Converged, c.Took = true, time.Since(since)
			s.logf("converged: all %d aggregates within %d events of their head, %v after the load stopped", len(lags), cfg.Threshold, c.Took.Round(time.Millisecond))
			return c, nil
		}
		if time.Now().After(deadline) {
			c.Took = time.Since(since)
			return c, fmt.Errorf("%d of %d aggregates still %d or more events behind %v after the load stopped", len(c.Behind), len(lags), cfg.Threshold, cfg.ConvergeTimeout)
		}
		if time.Since(lastPrint) > 5*time.Second {
			lastPrint = time.Now()
			s.logf("converging: %d of %d aggregates %d or more events behind (worst %s %d behind)", len(c.Behind), len(lags), cfg.Threshold, c.Behind[0].Key, c.Behind[0].Behind)
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stopWorkers sends SIGTERM to every worker at once; each must drain and
// exit 0.
func (s *suite) stopWorkers(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.mu.Lock()
			defer w.mu.Unlock()
			s.drain(ctx, w, " at the end")
		}()
	}
	wg.Wait()
}

// tailLog returns the last n lines of a log file, indented.
func tailLog(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n\t| " + strings.Join(lines, "\n\t| ")
}

func lastDoneLine(out string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "done:") {
			return lines[i]
		}
	}
	return "(no summary line)"
}
