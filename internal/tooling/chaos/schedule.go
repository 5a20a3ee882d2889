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
	// PartitionNATS (one server) cuts the network between the nats-server,
	// which runs in a network namespace of the run's own, and everything
	// else for Down, silently (packets dropped, no reset), then heals it.
	PartitionNATS
	// SlowLink puts Toxiproxy toxics on the workers' links to PostgreSQL
	// and (one server) NATS, a third of Down each, in turn: 1-50 ms
	// (LatencyMS) each way, then a stall (every byte held for the third),
	// then resets of every connection that sends (mid-query, mid-fetch).
	SlowLink

	numFaultKinds = iota
)

// maxNoticePause bounds how long a LoseNotices fault pauses the consumer
// before the purge.
const maxNoticePause = 2 * time.Second

// maxPartition bounds how long a PartitionNATS fault cuts the network.
const maxPartition = 5 * time.Second

// maxLinkFault bounds how long a SlowLink lasts.
const maxLinkFault = 4500 * time.Millisecond

var faultNames = [...]string{"kill", "nats-restart", "pg-terminate", "drain", "nats-leader-kill", "nats-follower-kill", "pg-restart", "pg-crash", "pg-kill", "lose-notices", "nats-partition", "worker-link"}

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
	// Worker is the target of KillWorker and DrainWorker (0-based).
	Worker int
	// Down is how long the target stays down before it is restarted
	// (KillWorker, DrainWorker, RestartNATS, the NATS node kills, CrashPG,
	// KillPG).
	Down time.Duration
	// Hard makes RestartNATS stop the server with SIGKILL.
	Hard bool
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
	case PartitionNATS:
		fmt.Fprintf(&b, ", cut for %v", f.Down.Round(time.Millisecond))
	case SlowLink:
		fmt.Fprintf(&b, " latency %d ms, stall, reset: %v each", f.LatencyMS, (f.Down / 3).Round(time.Millisecond))
	case KillPG:
		fmt.Fprintf(&b, " (SIGKILL to the postmaster), down %v", f.Down.Round(time.Millisecond))
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
}

// DefaultWeights favour worker kills, then NATS restarts and connection
// terminations, then graceful drains and PostgreSQL restarts and crashes.
// They are for one nats-server: the cluster kinds are off.
var DefaultWeights = []int{KillWorker: 4, RestartNATS: 2, TerminatePG: 2, DrainWorker: 2, KillNATSLeader: 0, KillNATSFollower: 0,
	RestartPG: 1, CrashPG: 1, KillPG: 1, LoseNotices: 1, PartitionNATS: 1, SlowLink: 2}

// ClusterWeights are [DefaultWeights] for a NATS cluster: instead of
// restarting the one server, the suite kills the stream's leader or a
// follower.
var ClusterWeights = []int{KillWorker: 4, RestartNATS: 0, TerminatePG: 2, DrainWorker: 2, KillNATSLeader: 2, KillNATSFollower: 1,
	RestartPG: 1, CrashPG: 1, KillPG: 1, LoseNotices: 1, PartitionNATS: 0, SlowLink: 2}

// withoutPartitions returns weights with the NATS partitions off.
func withoutPartitions(weights []int) []int {
	if weights == nil {
		weights = DefaultWeights
	}
	w := slices.Clone(weights)
	w[PartitionNATS] = 0
	return w
}

// withoutPGCrashes returns weights (nil: [DefaultWeights]) with the
// PostgreSQL restarts and crashes off, for a server the suite did not
// start.
func withoutPGCrashes(weights []int) []int {
	if weights == nil {
		weights = DefaultWeights
	}
	w := slices.Clone(weights)
	w[RestartPG], w[CrashPG], w[KillPG] = 0, 0, 0
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
			f.Down = randDuration(r, time.Second, maxPartition)
		case SlowLink:
			f.Down = randDuration(r, 1500*time.Millisecond, maxLinkFault)
			f.LatencyMS = 1 + r.IntN(50)
		}
		out[i] = f
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
