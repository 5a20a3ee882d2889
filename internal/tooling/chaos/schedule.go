package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// FaultKind is a kind of fault the suite injects.
type FaultKind int

// The faults.
const (
	// KillWorker sends SIGKILL to a worker and restarts it after Down.
	KillWorker FaultKind = iota
	// RestartNATS stops the NATS server (SIGTERM, or SIGKILL when Hard),
	// waits Down and starts it again on the same port and store directory.
	RestartNATS
	// TerminatePG terminates every PostgreSQL connection of the workers
	// with pg_terminate_backend.
	TerminatePG
	// DrainWorker sends SIGTERM to a worker, checks that it drains and
	// exits 0 within its drain timeout, and restarts it after Down.
	DrainWorker
	// KillNATSLeader (cluster mode) sends SIGKILL to the nats-server that
	// leads the notice stream, measures how long notices stall until a new
	// leader stores them, and restarts it after Down.
	KillNATSLeader
	// KillNATSFollower (cluster mode) sends SIGKILL to a nats-server that
	// holds a replica of the notice stream but does not lead it, and
	// restarts it after Down.
	KillNATSFollower
	// RestartPG restarts the suite's PostgreSQL cluster cleanly, like
	// pg_ctl restart -m fast: sessions are terminated, open transactions
	// roll back, and it starts again at once.
	RestartPG
	// CrashPG shuts the cluster down immediately, like pg_ctl stop -m
	// immediate (no checkpoint), and starts it after Down: crash recovery.
	CrashPG
	// KillPG sends SIGKILL to the cluster's postmaster alone, reaps the
	// processes it leaves, and starts it after Down: crash recovery with
	// a stale postmaster.pid and shared memory segment.
	KillPG
	// LoseNotices pauses the workers' durable consumer for Down (so a
	// backlog builds, as behind a slow or restarting fleet), then purges
	// the notice stream under load: every notice the workers have not yet
	// acknowledged vanishes, as acknowledged writes do
	// from a JetStream server that lost its unsynced data (Jepsen's NATS
	// 2.12.1 analysis). Only the reconciliation sweep can bring those
	// aggregates back within their threshold.
	LoseNotices
	// PartitionNATS cuts a nats-server (in a cluster, the notice stream's
	// leader) off from everything for Down, its cluster peers included:
	// packets to and from it are dropped in silence (lab.go), then the
	// cut heals.
	PartitionNATS
	// SlowLink puts Toxiproxy toxics on the workers' links to PostgreSQL
	// and (one server) NATS, a third of Down each, in turn: 1-50 ms
	// (LatencyMS) each way, then a stall (every byte held for the third),
	// then resets of every connection that sends (mid-query, mid-fetch).
	SlowLink
	// NATSDiskFull fills the file system of a nats-server's store (a
	// tmpfs of the run's own; in a cluster, node Node's) for Down, then
	// frees it, and restarts the server if it does not store notices
	// again by itself (see diskfull.go).
	NATSDiskFull
	// PGDiskFull fills the file system of PostgreSQL's data directory
	// (pg_wal included) for Down, then frees it; with Hard (every other
	// one, the first included) it also switches WAL segments halfway
	// through, so that the server cannot create the next one and PANICs.
	// A server that shut down is started again once there is space, as a
	// supervisor would.
	PGDiskFull
	// PartitionWorkerNATS cuts one worker (Worker) off from NATS for Down;
	// its link to PostgreSQL and every other worker's stay up.
	PartitionWorkerNATS
	// PartitionWorkerPG cuts one worker (Worker) off from PostgreSQL for
	// Down; its link to NATS stays up.
	PartitionWorkerPG
	// PartitionAppNATS cuts the load generator off from NATS for Down;
	// its link to PostgreSQL stays up, so it saves on while its notices
	// wait.
	PartitionAppNATS

	numFaultKinds = iota
)

// maxNoticePause bounds how long a LoseNotices fault pauses the consumer
// before the purge.
const maxNoticePause = 2 * time.Second

// maxPartition bounds how long a partition cuts the network, and
// maxLeaderPartition how long a cluster's NATS partition cuts the stream
// leader off (longer than the followers' election timeout, 4-9 s).
const (
	maxPartition       = 5 * time.Second
	maxLeaderPartition = 10 * time.Second
)

// maxLinkFault bounds how long a SlowLink lasts.
const maxLinkFault = 4500 * time.Millisecond

// maxDiskFull bounds how long a disk-full fault keeps the disk full.
const maxDiskFull = 3 * time.Second

var faultNames = [...]string{KillWorker: "kill", RestartNATS: "nats-restart", TerminatePG: "pg-terminate", DrainWorker: "drain",
	KillNATSLeader: "nats-leader-kill", KillNATSFollower: "nats-follower-kill", RestartPG: "pg-restart", CrashPG: "pg-crash", KillPG: "pg-kill",
	LoseNotices: "lose-notices", PartitionNATS: "nats-partition", SlowLink: "worker-link", NATSDiskFull: "nats-disk-full", PGDiskFull: "pg-disk-full",
	PartitionWorkerNATS: "worker-nats-partition", PartitionWorkerPG: "worker-pg-partition", PartitionAppNATS: "app-nats-partition"}

// String returns the kind's name as the schedule prints it.
func (k FaultKind) String() string {
	if k < 0 || int(k) >= len(faultNames) {
		return fmt.Sprintf("FaultKind(%d)", int(k))
	}
	return faultNames[k]
}

// Fault is one scheduled fault.
type Fault struct {
	// At is the offset from the start of the load.
	At   time.Duration
	Kind FaultKind
	// Worker is the target of KillWorker, DrainWorker and the worker
	// partitions (0-based).
	Worker int
	// Down is how long the target stays down before it is restarted
	// (KillWorker, DrainWorker, RestartNATS, the NATS node kills, CrashPG,
	// KillPG), or how long a partition lasts.
	Down time.Duration
	// Hard makes RestartNATS stop the server with SIGKILL, and
	// PGDiskFull switch WAL segments while the disk is full.
	Hard bool
	// Node is the node of a NATS cluster whose disk NATSDiskFull fills
	// (0-based; the one server in the one-server form).
	Node int
	// LatencyMS is a SlowLink's latency.
	LatencyMS int
}

// String renders the fault as one line of the printed schedule.
func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs %s", f.At.Seconds(), f.Kind)
	switch f.Kind {
	case KillWorker, DrainWorker:
		fmt.Fprintf(&b, " worker-%d, down %v", f.Worker+1, f.Down.Round(time.Millisecond))
	case RestartNATS:
		how := "SIGTERM"
		if f.Hard {
			how = "SIGKILL"
		}
		fmt.Fprintf(&b, " (%s), down %v", how, f.Down.Round(time.Millisecond))
	case KillNATSLeader, KillNATSFollower:
		fmt.Fprintf(&b, " (SIGKILL), down %v", f.Down.Round(time.Millisecond))
	case RestartPG:
		b.WriteString(" (fast shutdown, start at once)")
	case CrashPG:
		fmt.Fprintf(&b, " (immediate shutdown), down %v", f.Down.Round(time.Millisecond))
	case LoseNotices:
		fmt.Fprintf(&b, ", consumer paused %v first", f.Down.Round(time.Millisecond))
	case PartitionNATS, PartitionAppNATS:
		fmt.Fprintf(&b, ", cut for %v", f.Down.Round(time.Millisecond))
	case PartitionWorkerNATS, PartitionWorkerPG:
		fmt.Fprintf(&b, " worker-%d, cut for %v", f.Worker+1, f.Down.Round(time.Millisecond))
	case SlowLink:
		fmt.Fprintf(&b, " latency %d ms, stall, reset: %v each", f.LatencyMS, (f.Down / 3).Round(time.Millisecond))
	case KillPG:
		fmt.Fprintf(&b, " (SIGKILL to the postmaster), down %v", f.Down.Round(time.Millisecond))
	case NATSDiskFull:
		fmt.Fprintf(&b, " (nats-%d in a cluster), full for %v", f.Node+1, f.Down.Round(time.Millisecond))
	case PGDiskFull:
		fmt.Fprintf(&b, "%s, full for %v", ifStr(f.Hard, " (WAL segment switches)"), f.Down.Round(time.Millisecond))
	}
	return b.String()
}

// ScheduleConfig shapes a schedule.
type ScheduleConfig struct {
	// Start and End bound the fault times (offsets from the start of the
	// load): nothing happens in the warm-up before Start, and the quiet
	// period after End lets the last restarts finish before the load stops.
	Start, End time.Duration
	// MeanGap is the average time between faults.
	MeanGap time.Duration
	// Workers is how many workers there are (at least 1).
	Workers int
	// MinEach is how many faults of every kind in use (weight above 0)
	// the schedule has at least.
	MinEach int
	// Weights are the relative frequencies of the kinds beyond MinEach
	// (indexed by FaultKind); a kind of weight 0 is not used. nil means
	// [DefaultWeights].
	Weights []int
	// MaxWorkerDown, MaxNATSDown and MaxPGDown bound the Down times.
	MaxWorkerDown, MaxNATSDown, MaxPGDown time.Duration
	// HardNATSShare is the share of NATS restarts that use SIGKILL.
	HardNATSShare float64
	// NATSPartition bounds a PartitionNATS's Down; zero means 1s to
	// maxPartition. A cluster's are longer (4s to maxLeaderPartition), so
	// the majority elects a new leader during most of them.
	NATSPartition [2]time.Duration
}

// DefaultWeights favour worker kills, then NATS restarts and connection
// terminations, then graceful drains and PostgreSQL restarts and crashes.
// They are for one nats-server: the cluster kinds are off.
var DefaultWeights = []int{KillWorker: 4, RestartNATS: 2, TerminatePG: 2, DrainWorker: 2, KillNATSLeader: 0, KillNATSFollower: 0,
	RestartPG: 1, CrashPG: 1, KillPG: 1, LoseNotices: 1, PartitionNATS: 1, SlowLink: 2, NATSDiskFull: 1, PGDiskFull: 1,
	PartitionWorkerNATS: 1, PartitionWorkerPG: 1, PartitionAppNATS: 1}

// ClusterWeights are [DefaultWeights] for a NATS cluster: instead of
// restarting the one server, the suite kills the stream's leader or a
// follower (and the NATS partition cuts the leader off).
var ClusterWeights = []int{KillWorker: 4, RestartNATS: 0, TerminatePG: 2, DrainWorker: 2, KillNATSLeader: 2, KillNATSFollower: 1,
	RestartPG: 1, CrashPG: 1, KillPG: 1, LoseNotices: 1, PartitionNATS: 1, SlowLink: 2, NATSDiskFull: 1, PGDiskFull: 1,
	PartitionWorkerNATS: 1, PartitionWorkerPG: 1, PartitionAppNATS: 1}

// partitionKinds are the partitions: they need a lab (lab.go).
var partitionKinds = []FaultKind{PartitionNATS, PartitionWorkerNATS, PartitionWorkerPG, PartitionAppNATS}

// withoutPartitions returns weights (nil: [DefaultWeights]) with the
// partitions off.
func withoutPartitions(weights []int) []int {
	if weights == nil {
		weights = DefaultWeights
	}
	w := slices.Clone(weights)
	for _, k := range partitionKinds {
		w[k] = 0
	}
	return w
}

// withoutPGCrashes returns weights (nil: [DefaultWeights]) with the
// PostgreSQL restarts, crashes and full disks off, for a server the suite
// did not start.
func withoutPGCrashes(weights []int) []int {
	if weights == nil {
		weights = DefaultWeights
	}
	w := slices.Clone(weights)
	w[RestartPG], w[CrashPG], w[KillPG], w[PGDiskFull] = 0, 0, 0, 0
	return w
}

// withoutDiskFull returns weights with the disk-full faults off.
func withoutDiskFull(weights []int) []int {
	if weights == nil {
		weights = DefaultWeights
	}
	w := slices.Clone(weights)
	w[NATSDiskFull], w[PGDiskFull] = 0, 0
	return w
}

// ActiveKinds returns the kinds whose weight is above 0 (nil weights:
// [DefaultWeights]).
func ActiveKinds(weights []int) []FaultKind {
	if weights == nil {
		weights = DefaultWeights
	}
	var out []FaultKind
	for k, w := range weights {
		if w > 0 {
			out = append(out, FaultKind(k))
		}
	}
	return out
}

// Validate reports what is wrong with c.
func (c ScheduleConfig) Validate() error {
	switch {
	case c.Start < 0 || c.End <= c.Start:
		return fmt.Errorf("schedule window %v..%v is empty", c.Start, c.End)
	case c.MeanGap <= 0:
		return fmt.Errorf("mean gap %v must be positive", c.MeanGap)
	case c.Workers < 1:
		return fmt.Errorf("workers %d must be at least 1", c.Workers)
	case c.MinEach < 0:
		return fmt.Errorf("min each %d is negative", c.MinEach)
	case c.Weights != nil && len(c.Weights) != numFaultKinds:
		return fmt.Errorf("want %d weights, got %d", numFaultKinds, len(c.Weights))
	case c.MaxWorkerDown <= 0 || c.MaxNATSDown <= 0 || c.MaxPGDown < 0:
		return fmt.Errorf("down times must be positive (PostgreSQL's may be 0)")
	case c.HardNATSShare < 0 || c.HardNATSShare > 1:
		return fmt.Errorf("hard NATS share %v is outside 0-1", c.HardNATSShare)
	case c.NATSPartition[0] < 0 || c.NATSPartition[1] < c.NATSPartition[0]:
		return fmt.Errorf("NATS partition bounds %v are not a range", c.NATSPartition)
	}
	if c.Weights != nil {
		sum := 0
		for _, w := range c.Weights {
			if w < 0 {
				return fmt.Errorf("negative weight %d", w)
			}
			sum += w
		}
		if sum == 0 {
			return fmt.Errorf("weights are all zero")
		}
	}
	return nil
}

// NewSchedule returns the faults for seed, sorted by time: about
// (End-Start)/MeanGap of them, and never fewer than MinEach of each kind
// in use.
// Times are uniform in [Start, End); kinds are a shuffle of the required
// ones and weighted draws for the rest. The same seed and config always
// give the same schedule.
func NewSchedule(seed uint64, c ScheduleConfig) ([]Fault, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	weights := c.Weights
	if weights == nil {
		weights = DefaultWeights
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	window := c.End - c.Start
	n := int(window / c.MeanGap)
	active := ActiveKinds(weights)
	n = max(n, c.MinEach*len(active))
	kinds := make([]FaultKind, 0, n)
	for _, k := range active {
		for range c.MinEach {
			kinds = append(kinds, k)
		}
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	for len(kinds) < n {
		x := r.IntN(total)
		for k, w := range weights {
			if x < w {
				kinds = append(kinds, FaultKind(k))
				break
			}
			x -= w
		}
	}
	r.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	times := make([]time.Duration, n)
	for i := range times {
		times[i] = c.Start + time.Duration(r.Int64N(int64(window)))
	}
	slices.Sort(times)
	out := make([]Fault, n)
	for i := range out {
		f := Fault{At: times[i], Kind: kinds[i]}
		switch f.Kind {
		case KillWorker, DrainWorker:
			f.Worker = r.IntN(c.Workers)
			f.Down = randDuration(r, 200*time.Millisecond, c.MaxWorkerDown)
		case PartitionWorkerNATS, PartitionWorkerPG:
			f.Worker = r.IntN(c.Workers)
			f.Down = randDuration(r, time.Second, maxPartition)
		case RestartNATS:
			f.Down = randDuration(r, time.Second, c.MaxNATSDown)
			f.Hard = r.Float64() < c.HardNATSShare
		case KillNATSLeader, KillNATSFollower:
			f.Down = randDuration(r, time.Second, c.MaxNATSDown)
		case CrashPG, KillPG:
			f.Down = randDuration(r, 0, c.MaxPGDown)
		case LoseNotices:
			f.Down = randDuration(r, 500*time.Millisecond, maxNoticePause)
		case PartitionNATS:
			lo, hi := time.Second, maxPartition
			if c.NATSPartition != [2]time.Duration{} {
				lo, hi = c.NATSPartition[0], c.NATSPartition[1]
			}
			f.Down = randDuration(r, lo, hi)
		case PartitionAppNATS:
			f.Down = randDuration(r, time.Second, maxPartition)
		case SlowLink:
			f.Down = randDuration(r, 1500*time.Millisecond, maxLinkFault)
			f.LatencyMS = 1 + r.IntN(50)
		case NATSDiskFull:
			f.Down = randDuration(r, time.Second, maxDiskFull)
			f.Node = r.IntN(ClusterNodes)
		case PGDiskFull:
			f.Down = randDuration(r, time.Second, maxDiskFull)
		}
		out[i] = f
	}
	// Every other PostgreSQL disk-full fault, the first included, also
	// switches WAL segments: one kind alone (the short form) still
	// meets both behaviours of a full disk.
	hard := true
	for i := range out {
		if out[i].Kind == PGDiskFull {
			out[i].Hard, hard = hard, !hard
		}
	}
	return out, nil
}

// randDuration is uniform in [lo, hi] (lo when hi <= lo).
func randDuration(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}

// CountKinds counts a schedule's faults by kind.
func CountKinds(faults []Fault) map[FaultKind]int {
	out := map[FaultKind]int{}
	for _, f := range faults {
		out[f.Kind]++
	}
	return out
}
