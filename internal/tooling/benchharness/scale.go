package benchharness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/internal/progress"
	"github.com/evsnap/evsnap/internal/tooling/natsbin"
	"github.com/evsnap/evsnap/internal/tooling/natsserver"
	"github.com/evsnap/evsnap/internal/tooling/pgurl"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultScaleCPU is the CPU quota of each replica in the scale-out step
// (a Kubernetes limits.cpu of 50m), unless Config.ScaleCPU says otherwise.
// It is chosen so that eight replicas leave PostgreSQL and NATS most of a
// 2-core machine: in trial runs a backlog snapshot cost about 0.47 ms of
// worker CPU, 0.4 ms of PostgreSQL and 0.3 ms of NATS (10 notices), so
// eight replicas at 0.1 CPU (about 1,700 snapshots/s) would take the
// three to the machine's 2 cores, while at 0.05 they need about 1. The
// step's PostgreSQL cores and NATS cores columns show the headroom of
// each run (docs/decisions/0022-scale-out-benchmark.md).
const DefaultScaleCPU = 0.05

// scalePeriod is the cgroup's enforcement period: the kernel's and
// Kubernetes' default.
const scalePeriod = 100 * time.Millisecond

// scaleAppPrefix is the application_name of the replicas' PostgreSQL
// connections, by which their backends are found.
const scaleAppPrefix = "evsnap-bench-scale-"

// ScaleReport is the scale-out step: 1 to 8 `snapshotter run` processes,
// each in its own cgroup with the same CPU quota, draining one backlog.
type ScaleReport struct {
	// Skipped says why the step did not run (no root, no cgroups); no
	// figure is reported then.
	Skipped string
	// CPU is each replica's quota in CPUs per Period.
	CPU    float64
	Period time.Duration
	// GOMAXPROCS is what each replica ran with, and why.
	GOMAXPROCS       int
	GOMAXPROCSReason string
	Cgroups          string
	NATSVersion      string
	// AggregatesPerReplica is the backlog per replica (each Account has
	// backlogEvents events in notices of backlogPerNotice); Threshold the
	// policy's.
	AggregatesPerReplica, Threshold int
	Runs                            int
	// Quick is the quick form: a backlog too small for the targets to be
	// judged (start-up is a large part of its drain).
	Quick bool
	// PGMeasured is false when PostgreSQL's processes are not on this
	// machine (their CPU is then not reported).
	PGMeasured bool
	Rows       []ScaleRow
	// Cluster is the same replica counts run once against a cluster with
	// the stream replicated on every node (nil: not run).
	Cluster *ScaleCluster
}

// ScaleRow is one replica count: the run with the median drain time.
type ScaleRow struct {
	Replicas int
	// Aggregates and Notices are the run's backlog.
	Aggregates, Notices int
	// Elapsed is from the drain's start (every replica ready, the backlog
	// in the stream, the consumer resumed) to the consumer having nothing
	// pending or unacknowledged; LastDelivery to the moment no notice was
	// left undelivered (the rest of the drain is the replicas finishing
	// what they had pulled). StartUp is from starting the processes to
	// every one answering /readyz (exec, connecting, binding the
	// consumer), before the drain.
	Elapsed, StartUp, LastDelivery time.Duration
	// FirstDelivery is from the drain's start to the consumer's first
	// delivery (to the first sample of its info that shows one).
	FirstDelivery time.Duration
	// SteadyNoticesPerSec and SteadySnapshotsPerSec are the rates while
	// the backlog went from 10% to 90% done (acked), every replica
	// started and none out of work yet: the scaling itself, without the
	// start-up and the tail (interpolated between samples of the
	// consumer's info; 0 when too few samples).
	SteadyNoticesPerSec, SteadySnapshotsPerSec float64
	// SteadySpeedup is Speedup for the steady rates.
	SteadySpeedup float64
	// Speedup is the median over the rounds of this count's snapshots/s
	// over the same round's one replica's (0: not measured so, see
	// [ScaleReport.Speedup]).
	Speedup float64
	// Ready is when each replica's /readyz first answered 200 after its
	// start, in the order they did.
	Ready []time.Duration
	// Snapshots is the snapshots the replicas stored (their
	// evsnap_worker_snapshot_written_total).
	Snapshots int64
	// NoticesPerSec and SnapshotsPerSec are the backlog's notices and the
	// snapshots stored divided by Elapsed.
	NoticesPerSec, SnapshotsPerSec float64
	// SteadyPerReplica is each replica's snapshots stored while every
	// replica had work (from 10% of the backlog done to 80%, or to the
	// last delivery if sooner): the share of the work without the end's
	// tail; SteadyNoticesPerReplica its notices acked then (a replica
	// whose batches held more notices of one aggregate coalesced more of
	// them into one decision). Nil when the drain was too short to sample.
	SteadyPerReplica, SteadyNoticesPerReplica []int64
	// PerReplicaCPU is each replica's part of WorkerCPU.
	PerReplicaCPU []time.Duration
	// Rebuilds is the replicas' policy decisions "due" (each a rebuild);
	// more than Snapshots means replicas rebuilt an aggregate another had
	// just stored (their write a no-op). NotDue is the "not due" ones.
	Rebuilds, NotDue int64
	// PerReplicaNotices and PerReplicaSnapshots are each replica's
	// notices acked and snapshots stored, from its /metrics.
	PerReplicaNotices, PerReplicaSnapshots []int64
	// WorkerCPU is the replicas' CPU time during the drain (their
	// cgroups' usage; their rusage, start-up and shutdown included, where
	// the machine has no cpuacct); StartCPU what they spent until their
	// /readyz first answered 200 (start-up: the Go runtime, connections,
	// binding the consumer), before the drain. PGCPU the PostgreSQL
	// processes' during the drain (the run's backends and the server's
	// background processes, from /proc); NATSCPU the nats-server's (every
	// node's, on a cluster).
	WorkerCPU, StartCPU, PGCPU, NATSCPU time.Duration
	// Throttled is the share of the replicas' enforcement periods in which
	// they used up their quota.
	Throttled float64
	// MachineBusy is the share of every core that was busy during the
	// drain (anything on the machine).
	MachineBusy float64
	// PGStates counts, over samples every 100 ms of the replicas'
	// PostgreSQL backends, what each was doing: "running", "idle" (waiting
	// for the worker), or a wait event as "type:event".
	PGStates map[string]int
}

// share is max/min of xs (NaN when a replica did nothing).
func share(xs []int64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	lo, hi := slices.Min(xs), slices.Max(xs)
	if lo <= 0 {
		return math.Inf(1)
	}
	return float64(hi) / float64(lo)
}

// SteadyShare is max/min of the replicas' snapshots stored while all had
// work (NaN when not sampled).
func (r ScaleRow) SteadyShare() float64 { return share(r.SteadyPerReplica) }

// NoticeShare is max/min of the replicas' notices acked.
func (r ScaleRow) NoticeShare() float64 { return share(r.PerReplicaNotices) }

// SnapshotShare is max/min of the replicas' snapshots stored.
func (r ScaleRow) SnapshotShare() float64 { return share(r.PerReplicaSnapshots) }

// PerWorkerCPUSecond is snapshots stored per second of worker CPU.
func (r ScaleRow) PerWorkerCPUSecond() float64 {
	return float64(r.Snapshots) / r.WorkerCPU.Seconds()
}

// QuotaUse is the replicas' CPU over what their quota allowed during the
// drain: near 1 the workers are CPU-bound, well below they wait on
// something else.
func (r ScaleRow) QuotaUse(cpu float64) float64 {
	return r.WorkerCPU.Seconds() / (cpu * r.Elapsed.Seconds() * float64(r.Replicas))
}

// scaleReplicas is the replica counts the step runs, and the backlog per
// replica: n replicas drain n × perReplica aggregates' notices, so that
// every run lasts about as long (about 16 s in the full form) and the
// drain's first and last moments, when not every replica has work, are
// as small a part of it at 8 replicas as at 1.
func (h *Harness) scaleReplicas() (replicas []int, perReplica int) {
	if h.cfg.Quick {
		return []int{1, 2}, 250
	}
	return []int{1, 2, 4, 8}, 1500
}

// scaleRuns is how many times each replica count runs (the median run is
// reported): fewer than the other steps, as the step runs 15 replica
// processes per round.
func (h *Harness) scaleRuns() int {
	if h.cfg.Quick {
		return 1
	}
	return min(h.cfg.Runs, 3)
}

// scaleEnv is the replicas' environment: the harness's without any
// EVSNAP_ or OTEL_ setting (the flags say everything), with GOMAXPROCS.
func scaleEnv(gomaxprocs int) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "EVSNAP_") || strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "GOMAXPROCS=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GOMAXPROCS="+strconv.Itoa(gomaxprocs))
}

// scaleGOMAXPROCS is the GOMAXPROCS a replica with cpu CPUs runs with:
// the quota rounded up. Go 1.25 and later read the cgroup's quota (v1 and
// v2) but never set fewer than 2 (runtime.adjustCgroupGOMAXPROCS), which
// for a quota below one CPU is twice the parallelism the quota can feed,
// so the step sets it.
func scaleGOMAXPROCS(cpu float64) (int, string) {
	n := max(1, int(math.Ceil(cpu)))
	return n, fmt.Sprintf("set explicitly to the quota rounded up: Go %s reads the cgroup v1 and v2 quota but rounds anything below 2 CPUs up to 2", strings.TrimPrefix(runtime.Version(), "go"))
}

// runScale is the scale-out step (PostgreSQL only: the replicas are real
// processes sharing one database).
func (h *Harness) runScale(ctx context.Context, _ string) error {
	cpu := h.cfg.ScaleCPU
	if cpu <= 0 {
		cpu = DefaultScaleCPU
	}
	replicas, perReplica := h.scaleReplicas()
	gmp, why := scaleGOMAXPROCS(cpu)
	sr := &ScaleReport{CPU: cpu, Period: scalePeriod, GOMAXPROCS: gmp, GOMAXPROCSReason: why,
		AggregatesPerReplica: perReplica, Threshold: workerThreshold, Runs: h.scaleRuns(), Quick: h.cfg.Quick}
	h.report.Scale = sr
	cg, err := detectCgroups()
	if err != nil {
		sr.Skipped = "no CPU quota can be set here: " + err.Error()
		h.progress("scale-out: skipped: %s", err)
		return nil
	}
	sr.Cgroups = cg.String()
	h.progress("scale-out: %s, %g CPU per replica", sr.Cgroups, cpu)

	// The binaries: nats-server of the version go.mod pins, and the
	// worker.
	t := time.Now()
	natsBin, err := natsbin.Ensure(ctx, ".", "")
	if err != nil {
		return err
	}
	snapBin := filepath.Join(h.tmp, "snapshotter")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", snapBin, "github.com/evsnap/evsnap/cmd/snapshotter").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/snapshotter: %w\n%s", err, out)
	}
	h.progress("scale-out: built snapshotter and %s (%s) in %s", natsBin.Path, natsBin.Version, time.Since(t).Round(time.Millisecond))

	ns, err := natsserver.Start(ctx, natsBin.Path, filepath.Join(h.tmp, "scale-nats"))
	if err != nil {
		return err
	}
	defer ns.Stop()
	nc, js, err := h.connectJetStream(ctx, ns.URL(), "evsnap-bench-scale")
	if err != nil {
		return err
	}
	defer nc.Close()
	sr.NATSVersion = nc.ConnectedServerVersion()

	db, err := h.createScaleDatabase(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := db.drop(); err != nil {
			h.report.fail("scale-out: %v", err)
		}
	}()
	plain, err := h.plainRepo(db.store)
	if err != nil {
		return err
	}
	defer plain.Close(context.WithoutCancel(ctx))
	ids, err := h.writeBacklog(ctx, plain, slices.Max(replicas)*perReplica, "scale-out")
	if err != nil {
		return err
	}
	sr.PGMeasured = len(db.serverPIDs(ctx)) > 0
	if !sr.PGMeasured {
		h.progress("scale-out: PostgreSQL's processes are not on this machine: its CPU is not reported")
	}

	parent, err := cg.newCgroupParent()
	if err != nil {
		return err
	}
	defer func() {
		if err := parent.remove(); err != nil {
			h.report.fail("scale-out: remove cgroup: %v", err)
		}
	}()
	env := &scaleRun{h: h, db: db, js: js, nats: scaleNATS{url: ns.URL(), pids: []int{ns.PID()}, replicas: 1}, bin: snapBin, parent: parent, cpu: cpu, gomaxprocs: gmp}
	runs := map[int][]ScaleRow{}
	for run := range sr.Runs {
		for _, r := range replicas {
			row, err := env.run(ctx, r, fmt.Sprintf("run %d/%d", run+1, sr.Runs), ids[:r*perReplica])
			if err != nil {
				return fmt.Errorf("%d replicas: %w", r, err)
			}
			runs[r] = append(runs[r], row)
		}
	}
	for _, r := range replicas {
		rows := slices.Clone(runs[r])
		slices.SortFunc(rows, func(a, b ScaleRow) int { return int(a.Elapsed - b.Elapsed) })
		row := rows[(len(rows)-1)/2]
		// The speed-up of each round against the one replica of the same
		// round, minutes apart rather than across the whole step on a
		// machine whose speed drifts; the median of the rounds.
		var ratios, steady []float64
		for i := range runs[r] {
			ratios = append(ratios, runs[r][i].SnapshotsPerSec/runs[1][i].SnapshotsPerSec)
			if a, b := runs[r][i].SteadySnapshotsPerSec, runs[1][i].SteadySnapshotsPerSec; a > 0 && b > 0 {
				steady = append(steady, a/b)
			}
		}
		row.Speedup = Median(ratios)
		if len(steady) > 0 {
			row.SteadySpeedup = Median(steady)
		}
		sr.Rows = append(sr.Rows, row)
	}
	nc.Close() // before its server goes, or it would keep reconnecting
	ns.Stop()
	return h.runScaleCluster(ctx, env, natsBin.Path, replicas, ids, perReplica)
}

// runScaleCluster runs each replica count once more against a 3-node
// cluster of the same nats-server, the stream at 3 replicas: what R3
// costs per notice.
func (h *Harness) runScaleCluster(ctx context.Context, env *scaleRun, natsBin string, replicas []int, ids []uuid.UUID, perReplica int) error {
	sr := h.report.Scale
	t := time.Now()
	cl, err := natsserver.StartCluster(ctx, natsBin, filepath.Join(h.tmp, "scale-cluster"), scaleClusterNodes)
	if err != nil {
		return err
	}
	defer cl.Stop()
	nc, js, err := h.connectJetStream(ctx, cl.URLs(), "evsnap-bench-scale-cluster")
	if err != nil {
		return err
	}
	defer nc.Close()
	h.progress("scale-out: a %d-node cluster of nats-server %s ready in %s", scaleClusterNodes, nc.ConnectedServerVersion(), time.Since(t).Round(time.Millisecond))
	sr.Cluster = &ScaleCluster{Nodes: scaleClusterNodes}
	env.js, env.cons, env.consStream = js, nil, ""
	env.nats = scaleNATS{url: cl.URLs(), pids: cl.PIDs(), replicas: scaleClusterNodes}
	for _, r := range replicas {
		row, err := env.run(ctx, r, fmt.Sprintf("%d-node cluster, R%d", scaleClusterNodes, scaleClusterNodes), ids[:r*perReplica])
		if err != nil {
			return fmt.Errorf("cluster, %d replicas: %w", r, err)
		}
		sr.Cluster.Rows = append(sr.Cluster.Rows, row)
	}
	return nil
}

// connectJetStream connects to the server(s) at url as name.
func (h *Harness) connectJetStream(ctx context.Context, url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := natsconnect.Connect(ctx, natsconnect.Options{URL: url, Name: name, Logger: h.log})
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// scaleClusterNodes is the size of the cluster the step runs once
// against, with the stream at as many replicas.
const scaleClusterNodes = 3

// ScaleCluster is the scale-out step run once against a cluster of
// nats-servers with the stream replicated on every node.
type ScaleCluster struct {
	Nodes int
	// Rows is one run per replica count.
	Rows []ScaleRow
}

// scaleNATS is the server(s) a run's replicas use: a URL (a list for a
// cluster), the processes whose CPU is NATS's, and the stream's replicas.
type scaleNATS struct {
	url      string
	pids     []int
	replicas int
}

// scaleDB is the step's own database: `snapshotter run` keeps its tables
// in the public schema, so the step cannot use a schema of the test
// database as the other steps do.
type scaleDB struct {
	name  string
	url   string // the database's URL, for the harness's connections
	base  *url.URL
	store *pgstore.Store
	pool  *pgxpool.Pool
}

func (h *Harness) createScaleDatabase(ctx context.Context) (*scaleDB, error) {
	base, err := url.Parse(h.cfg.PostgresURL)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("PostgreSQL URL %s: the scale-out step needs a postgres:// URL to create its database", pgstore.RedactDSN(h.cfg.PostgresURL))
	}
	d := &scaleDB{name: "evsnap_bench_scale_" + randomHex(4), base: base}
	conn, err := pgx.Connect(ctx, h.cfg.PostgresURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{d.name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database %s: %w", d.name, err)
	}
	d.url = d.appURL("evsnap-bench")
	if d.store, err = pgstore.Open(ctx, d.url, pgstore.WithLogger(h.log)); err != nil {
		_ = d.drop()
		return nil, err
	}
	d.pool = d.store.Pool()
	if err := d.store.Migrate(ctx); err != nil {
		_ = d.drop()
		return nil, err
	}
	return d, nil
}

// appURL is the database's URL with an application_name.
func (d *scaleDB) appURL(app string) string {
	u := *d.base
	u.Path = "/" + d.name
	return pgurl.WithAppName(u.String(), app)
}

func (d *scaleDB) drop() error {
	if d.store != nil {
		d.store.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.base.String())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

// serverPIDs are the PostgreSQL processes whose CPU the step counts: the
// replicas' backends in the step's database (not the harness's) and the
// server's background processes (see pgServerPIDs).
func (d *scaleDB) serverPIDs(ctx context.Context) []int {
	return pgServerPIDs(ctx, d.pool, d.name, scaleAppPrefix+"%")
}

// sampleStates adds what each of the replicas' backends is doing to
// states.
func (d *scaleDB) sampleStates(ctx context.Context, states map[string]int) {
	rows, err := d.pool.Query(ctx, `SELECT state, coalesce(wait_event_type, ''), coalesce(wait_event, '')
		FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE $2`, d.name, scaleAppPrefix+"%")
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var state, typ, ev string
		if rows.Scan(&state, &typ, &ev) != nil {
			return
		}
		states[backendState(state, typ, ev)]++
	}
}

// backendState names what a backend was doing: "running" (active, no
// wait), "idle" (waiting for its client, the worker), or the wait event.
func backendState(state, waitType, waitEvent string) string {
	switch {
	case state == "active" && waitType == "":
		return "running"
	case state == "idle" || (waitType == "Client" && waitEvent == "ClientRead"):
		return "idle"
	case waitType != "":
		return waitType + ":" + waitEvent
	}
	return state
}

// scaleRun runs replica sets on the step's database and nats-server.
type scaleRun struct {
	h          *Harness
	db         *scaleDB
	js         jetstream.JetStream
	nats       scaleNATS
	bin        string
	parent     *cgroupParent
	cpu        float64
	gomaxprocs int
	cons       jetstream.Consumer // the current run's, once created
	consStream string
}

// replica is one running `snapshotter run`.
type replica struct {
	cmd     *exec.Cmd
	cg      *cgroup
	metrics string // http://127.0.0.1:port/metrics
	readyz  string
	ready   bool
	// startCPU and drainCPU are the cgroup's usage when the drain started
	// and when the consumer was drained (accounted false: no cpuacct
	// here); periods and throttled its enforcement periods when the drain
	// started.
	startCPU, drainCPU time.Duration
	periods, throttled int64
	accounted          bool
	log                string
	done               chan struct{}
	waitErr            error
}

// run drains a backlog of the aggregates ids once with n replicas. The
// replicas start on an empty stream and the clock starts once every one
// of them is ready and the backlog is in place: the consumer is paused
// while the backlog is published, and resumed to start the drain. What
// start-up costs (exec, connections, binding the consumer) is measured on
// its own, as a fleet that runs for days pays it once.
func (e *scaleRun) run(ctx context.Context, n int, label string, ids []uuid.UUID) (row ScaleRow, err error) {
	h := e.h
	total := len(ids) * backlogEvents / backlogPerNotice
	row = ScaleRow{Replicas: n, Aggregates: len(ids), Notices: total, PGStates: map[string]int{}}
	if _, err := e.db.store.DeleteSnapshotsByType(ctx, exampledomain.AccountType, 0); err != nil {
		return row, err
	}
	st, err := e.newStream(ctx)
	if err != nil {
		return row, err
	}
	defer func() {
		if derr := st.drop(); derr != nil && err == nil {
			err = derr
		}
	}()

	var reps []*replica
	defer func() {
		for _, r := range reps {
			r.stop()
			if rerr := r.cg.remove(); rerr != nil && err == nil {
				err = fmt.Errorf("remove cgroup: %w", rerr)
			}
		}
	}()
	for i := range n {
		r, err := e.prepare(i, st)
		if err != nil {
			return row, err
		}
		reps = append(reps, r)
	}
	if err := e.startAll(ctx, reps, &row); err != nil {
		return row, err
	}
	// Every replica is bound and pulling: hold the consumer while the
	// backlog goes in, so that the drain starts on all of them at once.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = e.js.PauseConsumer(cctx, st.name, snapshotter.DefaultConsumer, time.Now().Add(10*time.Minute))
	cancel()
	if err != nil {
		return row, fmt.Errorf("pause the consumer: %w", err)
	}
	t := time.Now()
	if err := publishBacklog(ctx, st, ids); err != nil {
		return row, err
	}
	h.progress("scale-out: %s, %d replica(s): every replica ready after %s; published %s notices in %s", label, n, row.StartUp.Round(time.Millisecond), thousands(int64(total)), time.Since(t).Round(time.Millisecond))

	for _, r := range reps {
		if u, ok, err := r.cg.usage(); err == nil && ok {
			r.startCPU = u
		}
		r.periods, r.throttled, _ = r.cg.throttling()
	}
	meter := startCPUMeter(false, func() []int { return e.db.serverPIDs(ctx) }, e.nats.pids)
	// The server lets pulls through again when a pause runs out (a timer
	// that wakes the waiting pulls), not when a pause is lifted by the
	// resume call, which waits for the next pull or message (nats-server
	// 2.15.2, consumer.updatePauseState): so the drain starts with a pause
	// that ends a moment from now.
	at := time.Now().Add(300 * time.Millisecond)
	cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	_, err = e.js.PauseConsumer(cctx, st.name, snapshotter.DefaultConsumer, at)
	cancel()
	if err != nil {
		return row, fmt.Errorf("resume the consumer: %w", err)
	}
	time.Sleep(time.Until(at))
	start := time.Now()
	line := progress.New(h.cfg.Progress)
	var used CPUSplit
	var lastStates, lastInfo time.Time
	var progressAt []progressSample
	var steadyFrom []replicaWork
	deadline := start.Add(5 * time.Minute)
	for {
		for _, r := range reps {
			select {
			case <-r.done:
				return row, fmt.Errorf("replica exited during the drain: %v (log %s: %s)", r.waitErr, r.log, tail(r.log, 4))
			default:
			}
		}
		// Every consumer info costs the nats-server CPU that the figures
		// count: ask 5 times a second while notices are undelivered, then
		// every 10 ms for the end of the drain.
		poll := 200 * time.Millisecond
		if row.LastDelivery > 0 {
			poll = 10 * time.Millisecond
		}
		if time.Since(lastInfo) < poll {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		lastInfo = time.Now()
		info, ierr := e.consumerInfo(ctx, st.name)
		if ierr == nil {
			if row.FirstDelivery == 0 && info.Delivered.Consumer > 0 {
				row.FirstDelivery = time.Since(start)
			}
			if row.LastDelivery == 0 && info.NumPending == 0 && info.Delivered.Consumer > 0 {
				row.LastDelivery = time.Since(start)
			}
			if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer >= uint64(total) {
				row.Elapsed = time.Since(start)
				// The backends are still open: sample before stopping.
				for _, r := range reps {
					if u, ok, err := r.cg.usage(); err == nil && ok {
						r.drainCPU, r.accounted = u, true
					}
				}
				used = meter.stop()
				break
			}
			done := total - int(info.NumPending) - info.NumAckPending
			progressAt = append(progressAt, progressSample{time.Since(start), done})
			// Each replica's notices acked while all of them had work: from
			// the first sample past 10% done to the first past 80% or with
			// nothing left to deliver.
			if steadyFrom == nil && done >= total/10 {
				steadyFrom = e.ackedBy(ctx, reps)
			} else if steadyFrom != nil && row.SteadyPerReplica == nil && (done >= total*8/10 || info.NumPending == 0) {
				if to := e.ackedBy(ctx, reps); to != nil {
					for i := range to {
						row.SteadyPerReplica = append(row.SteadyPerReplica, to[i].snapshots-steadyFrom[i].snapshots)
						row.SteadyNoticesPerReplica = append(row.SteadyNoticesPerReplica, to[i].notices-steadyFrom[i].notices)
					}
				}
			}
			line.Update("%s", h.stamp("scale-out: %s, %d replica(s): %s of %s notices done, %s", label, n, thousands(int64(max(0, done))), thousands(int64(total)), time.Since(start).Round(100*time.Millisecond)))
		}
		if time.Since(lastStates) >= 100*time.Millisecond {
			e.db.sampleStates(ctx, row.PGStates)
			lastStates = time.Now()
		}
		if time.Now().After(deadline) {
			return row, fmt.Errorf("not drained after %s (consumer info: %v)", deadline.Sub(start), ierr)
		}
		if err := ctx.Err(); err != nil {
			return row, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	row.PGCPU, row.NATSCPU, row.MachineBusy = used.PG, used.NATS, used.Busy

	for _, r := range reps {
		text, err := scrape(ctx, r.metrics)
		if err != nil {
			return row, fmt.Errorf("scrape %s: %w", r.metrics, err)
		}
		acked := promSum(text, "evsnap_worker_notice_settled_total", `evsnap_outcome="acked"`)
		snaps := promSum(text, "evsnap_worker_snapshot_written_total", "")
		row.Rebuilds += int64(promSum(text, "evsnap_worker_decisions_total", `evsnap_decision="due"`))
		row.NotDue += int64(promSum(text, "evsnap_worker_decisions_total", `evsnap_decision="not_due"`))
		row.PerReplicaNotices = append(row.PerReplicaNotices, int64(acked))
		row.PerReplicaSnapshots = append(row.PerReplicaSnapshots, int64(snaps))
		row.Snapshots += int64(snaps)
	}
	var periods, throttled int64
	for _, r := range reps {
		p, th, terr := r.cg.throttling()
		if err := r.stop(); err != nil {
			return row, err
		}
		u := r.drainCPU - r.startCPU
		if !r.accounted {
			u = r.cmd.ProcessState.UserTime() + r.cmd.ProcessState.SystemTime()
		}
		row.WorkerCPU += u
		row.PerReplicaCPU = append(row.PerReplicaCPU, u)
		if terr == nil {
			periods, throttled = periods+p-r.periods, throttled+th-r.throttled
		}
	}
	if periods > 0 {
		row.Throttled = float64(throttled) / float64(periods)
	}
	if err := checkBacklogDone(ctx, e.db.store, ids); err != nil {
		return row, err
	}
	row.NoticesPerSec = float64(total) / row.Elapsed.Seconds()
	row.SnapshotsPerSec = float64(row.Snapshots) / row.Elapsed.Seconds()
	progressAt = append(progressAt, progressSample{row.Elapsed, total})
	if r, ok := steadyRate(progressAt, total); ok {
		row.SteadyNoticesPerSec = r
		row.SteadySnapshotsPerSec = r * float64(row.Snapshots) / float64(total)
	}
	line.Done("%s", h.stamp("scale-out: %s, %d replica(s): %s notices, %s snapshots in %s (first delivery after %s, last after %s): %s snapshots/s; workers %s CPU s (%s of their quota, throttled in %s of periods; start-up %s CPU s), PostgreSQL %s, NATS %s, machine %s busy; shares %s (notices), %s (snapshots)",
		label, n, thousands(int64(total)), thousands(row.Snapshots), row.Elapsed.Round(time.Millisecond), row.FirstDelivery.Round(time.Millisecond), row.LastDelivery.Round(time.Millisecond),
		rate(row.SnapshotsPerSec), sig(row.WorkerCPU.Seconds()), percent(row.QuotaUse(e.cpu)), percent(row.Throttled), sig(row.StartCPU.Seconds()), sig(row.PGCPU.Seconds()), sig(row.NATSCPU.Seconds()),
		percent(row.MachineBusy), times(row.NoticeShare()), times(row.SnapshotShare())))
	return row, nil
}

// startAll starts the replicas and waits until every one answers /readyz
// (bound to the consumer and pulling), recording when each did and the
// CPU each had used by then.
func (e *scaleRun) startAll(ctx context.Context, reps []*replica, row *ScaleRow) error {
	start := time.Now()
	for _, r := range reps {
		if err := r.start(); err != nil {
			return err
		}
	}
	deadline := start.Add(time.Minute)
	for ready := 0; ready < len(reps); {
		for _, r := range reps {
			select {
			case <-r.done:
				return fmt.Errorf("replica exited while starting: %v (log %s: %s)", r.waitErr, r.log, tail(r.log, 4))
			default:
			}
			if !r.ready && isReady(ctx, r.readyz) {
				r.ready = true
				ready++
				row.Ready = append(row.Ready, time.Since(start))
				if u, ok, err := r.cg.usage(); err == nil && ok {
					row.StartCPU += u
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d replicas ready after %s", ready, len(reps), time.Minute)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	row.StartUp = time.Since(start)
	return nil
}

// newStream creates the run's stream on its server(s).
func (e *scaleRun) newStream(ctx context.Context) (*stream, error) {
	return e.h.newStreamOn(ctx, e.js, e.nats.replicas)
}

// consumerInfo reads the replicas' consumer's info: one request, on a
// handle looked up once the replicas have created the consumer.
func (e *scaleRun) consumerInfo(ctx context.Context, stream string) (*jetstream.ConsumerInfo, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if e.cons == nil || e.consStream != stream {
		c, err := e.js.Consumer(cctx, stream, snapshotter.DefaultConsumer)
		if err != nil {
			return nil, err
		}
		e.cons, e.consStream = c, stream
	}
	return e.cons.Info(cctx)
}

// prepare creates replica i's cgroup and command.
func (e *scaleRun) prepare(i int, st *stream) (*replica, error) {
	cg, err := e.parent.child(fmt.Sprintf("replica-%d", i), e.cpu, scalePeriod)
	if err != nil {
		return nil, err
	}
	port, err := natsserver.FreePort()
	if err != nil {
		_ = cg.remove()
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	argv := cg.command(e.bin, "run",
		"--postgres-url", e.db.appURL(scaleAppPrefix+strconv.Itoa(i)),
		"--nats-url", e.nats.url,
		"--stream", st.name, "--subject-prefix", st.prefix,
		"--policy", fmt.Sprintf("%s=threshold:%d", exampledomain.AccountType, workerThreshold),
		"--sweep-interval", "0", "--summary-interval", "0",
		"--metrics-addr", addr, "--log-format", "text", "--log-level", "warn")
	r := &replica{cg: cg, metrics: "http://" + addr + "/metrics", readyz: "http://" + addr + "/readyz", log: filepath.Join(e.h.tmp, fmt.Sprintf("scale-replica-%d-%s.log", i, randomHex(3))), done: make(chan struct{})}
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Env = scaleEnv(e.gomaxprocs)
	return r, nil
}

func (r *replica) start() error {
	f, err := os.Create(r.log)
	if err != nil {
		return err
	}
	r.cmd.Stdout, r.cmd.Stderr = f, f
	r.cmd.SysProcAttr = replicaSysProcAttr()
	if err := r.cmd.Start(); err != nil {
		f.Close()
		return err
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		f.Close()
		close(r.done)
	}()
	return nil
}

// stop sends SIGTERM (the worker drains and exits) and waits, with
// SIGKILL after 30 s. It is a no-op for a replica never started.
func (r *replica) stop() error {
	if r.cmd.Process == nil {
		return nil
	}
	select {
	case <-r.done:
		return nil
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		if r.waitErr != nil {
			return fmt.Errorf("replica exited with %v after SIGTERM (log %s: %s)", r.waitErr, r.log, tail(r.log, 4))
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		return fmt.Errorf("replica did not exit within 30 s of SIGTERM (log %s)", r.log)
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// progressSample is how many notices were done (acked) at a moment of a
// drain.
type progressSample struct {
	at   time.Duration
	done int
}

// steadyRate returns the notices per second between the moments the drain
// passed 10% and 90% of total, each interpolated between the samples
// around it (which must be in time order). ok is false when the samples
// do not bracket both.
func steadyRate(samples []progressSample, total int) (perSec float64, ok bool) {
	cross := func(frac float64) (time.Duration, bool) {
		want := frac * float64(total)
		for i := 1; i < len(samples); i++ {
			a, b := samples[i-1], samples[i]
			if float64(a.done) <= want && float64(b.done) >= want && b.done > a.done {
				f := (want - float64(a.done)) / float64(b.done-a.done)
				return a.at + time.Duration(f*float64(b.at-a.at)), true
			}
		}
		return 0, false
	}
	t10, ok1 := cross(0.1)
	t90, ok2 := cross(0.9)
	if !ok1 || !ok2 || t90 <= t10 {
		return 0, false
	}
	return 0.8 * float64(total) / (t90 - t10).Seconds(), true
}

// replicaWork is what a replica has done so far.
type replicaWork struct{ notices, snapshots int64 }

// ackedBy scrapes every replica's notices acked and snapshots stored so
// far; nil if one cannot be scraped.
func (e *scaleRun) ackedBy(ctx context.Context, reps []*replica) []replicaWork {
	out := make([]replicaWork, len(reps))
	for i, r := range reps {
		text, err := scrape(ctx, r.metrics)
		if err != nil {
			return nil
		}
		out[i] = replicaWork{int64(promSum(text, "evsnap_worker_notice_settled_total", `evsnap_outcome="acked"`)), int64(promSum(text, "evsnap_worker_snapshot_written_total", ""))}
	}
	return out
}

// isReady reports whether a replica's /readyz answers 200.
func isReady(ctx context.Context, u string) bool {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func scrape(ctx context.Context, u string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// promSum sums the samples of the metric name in Prometheus text whose
// labels contain every comma-separated label="value" of match.
func promSum(text, name, match string) float64 {
	var want []string
	if match != "" {
		want = strings.Split(match, ",")
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		labels := ""
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // a longer name with this prefix
		}
		ok := true
		for _, w := range want {
			if !strings.Contains(","+labels+",", ","+w+",") {
				ok = false
			}
		}
		f := strings.Fields(rest)
		if !ok || len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}
