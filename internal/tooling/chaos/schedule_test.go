package chaos

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func testSchedule() ScheduleConfig {
	return ScheduleConfig{
		Start: 3 * time.Second, End: 40 * time.Second, MeanGap: 5 * time.Second,
		Workers: 3, MinEach: 1, MaxWorkerDown: 3 * time.Second, MaxNATSDown: 3 * time.Second, MaxPGDown: 2 * time.Second, HardNATSShare: 0.3,
	}
}

func TestNewScheduleDeterministic(t *testing.T) {
	c := testSchedule()
	a, err := NewSchedule(42, c)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSchedule(42, c)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different schedules:\n%v\n%v", a, b)
	}
	other, _ := NewSchedule(43, c)
	if reflect.DeepEqual(a, other) {
		t.Errorf("seeds 42 and 43 gave the same schedule %v", a)
	}
}

func TestNewScheduleShape(t *testing.T) {
	for _, c := range []ScheduleConfig{
		testSchedule(),
		func() ScheduleConfig { c := testSchedule(); c.MinEach = 5; c.End = 10 * time.Second; return c }(), // more required than the gap allows
		DefaultConfig(true).scheduleConfig(),
		DefaultConfig(false).scheduleConfig(),
		func() ScheduleConfig { c := DefaultConfig(true); c.Cluster = true; return c.scheduleConfig() }(),
		func() ScheduleConfig {
			c := DefaultConfig(true)
			c.PostgresURL = "postgres://elsewhere/x"
			return c.scheduleConfig()
		}(),
	} {
		active := ActiveKinds(c.Weights)
		for seed := range uint64(200) {
			s, err := NewSchedule(seed, c)
			if err != nil {
				t.Fatal(err)
			}
			if want := max(int((c.End-c.Start)/c.MeanGap), c.MinEach*len(active)); len(s) != want {
				t.Fatalf("seed %d: %d faults, want %d", seed, len(s), want)
			}
			counts := CountKinds(s)
			hard := true
			for _, f := range s {
				if f.Kind == PGDiskFull {
					if f.Hard != hard {
						t.Fatalf("seed %d: PostgreSQL disk-full faults do not alternate WAL switches, the first with: %v", seed, s)
					}
					hard = !hard
				}
			}
			for k := range FaultKind(numFaultKinds) {
				if slices.Contains(active, k) && counts[k] < c.MinEach {
					t.Fatalf("seed %d: %d faults of kind %s, want at least %d: %v", seed, counts[k], k, c.MinEach, s)
				}
				if !slices.Contains(active, k) && counts[k] > 0 {
					t.Fatalf("seed %d: %d faults of kind %s, which has weight 0: %v", seed, counts[k], k, s)
				}
			}
			for i, f := range s {
				if f.At < c.Start || f.At >= c.End {
					t.Fatalf("seed %d: fault %v outside [%v, %v)", seed, f, c.Start, c.End)
				}
				if i > 0 && f.At < s[i-1].At {
					t.Fatalf("seed %d: not sorted: %v", seed, s)
				}
				switch f.Kind {
				case KillWorker, DrainWorker:
					if f.Worker < 0 || f.Worker >= c.Workers || f.Down <= 0 || f.Down > c.MaxWorkerDown {
						t.Fatalf("seed %d: bad worker fault %+v", seed, f)
					}
				case RestartNATS, KillNATSLeader, KillNATSFollower:
					if f.Down < time.Second || f.Down > c.MaxNATSDown {
						t.Fatalf("seed %d: bad NATS fault %+v", seed, f)
					}
				case CrashPG, KillPG:
					if f.Down < 0 || f.Down > c.MaxPGDown {
						t.Fatalf("seed %d: bad PostgreSQL fault %+v", seed, f)
					}
				case SlowLink:
					if f.Down < 1500*time.Millisecond || f.Down > maxLinkFault || f.LatencyMS < 1 || f.LatencyMS > 50 {
						t.Fatalf("seed %d: bad link fault %+v", seed, f)
					}
				case PartitionNATS:
					lo, hi := time.Second, maxPartition
					if c.NATSPartition[1] > 0 {
						lo, hi = c.NATSPartition[0], c.NATSPartition[1]
					}
					if f.Down < lo || f.Down > hi || hi > maxLeaderPartition {
						t.Fatalf("seed %d: bad NATS partition %+v", seed, f)
					}
				case PartitionAppNATS:
					if f.Down < time.Second || f.Down > maxPartition {
						t.Fatalf("seed %d: bad partition %+v", seed, f)
					}
				case PartitionWorkerNATS, PartitionWorkerPG:
					if f.Worker < 0 || f.Worker >= c.Workers || f.Down < time.Second || f.Down > maxPartition {
						t.Fatalf("seed %d: bad worker partition %+v", seed, f)
					}
				case LoseNotices:
					if f.Down < 500*time.Millisecond || f.Down > maxNoticePause {
						t.Fatalf("seed %d: bad notice pause %+v", seed, f)
					}
				case NATSDiskFull, PGDiskFull:
					if f.Down < time.Second || f.Down > maxDiskFull || f.Node < 0 || f.Node >= ClusterNodes || (f.Hard && f.Kind != PGDiskFull) {
						t.Fatalf("seed %d: bad disk-full fault %+v", seed, f)
					}
				case TerminatePG, RestartPG:
					if f.Down != 0 {
						t.Fatalf("seed %d: %v has a down time", seed, f)
					}
				default:
					t.Fatalf("seed %d: unknown kind %v", seed, f.Kind)
				}
			}
		}
	}
}

func TestNewScheduleWeights(t *testing.T) {
	c := testSchedule()
	c.MinEach = 0
	c.End = time.Hour
	c.Weights = make([]int, numFaultKinds)
	c.Weights[KillWorker] = 1
	s, err := NewSchedule(1, c)
	if err != nil {
		t.Fatal(err)
	}
	if n := CountKinds(s)[KillWorker]; n != len(s) {
		t.Errorf("%d of %d faults are kills, want all", n, len(s))
	}
}

func TestShortFormFitsCI(t *testing.T) {
	c := DefaultConfig(true)
	if c.Duration > 60*time.Second || c.MinEach < 1 {
		t.Errorf("short form runs the load %v with at least %d faults of each kind; want at most 60s and at least 1", c.Duration, c.MinEach)
	}
	// The rollback phase adds to each of chaos-short's two runs.
	if add := c.RollbackSideBySide + c.RollbackAfter; add <= 0 || add > 15*time.Second {
		t.Errorf("short form's rollback phase runs loads for %v; want some, and at most 15s", add)
	}
	if err := c.Validate(); err != nil && !strings.Contains(err.Error(), "repository") {
		t.Errorf("short form: %v", err)
	}
	sc := c.scheduleConfig()
	if sc.End+sc.MaxNATSDown > c.Duration {
		t.Errorf("a NATS restart at the window's end (%v + %v) would outlast the load (%v)", sc.End, sc.MaxNATSDown, c.Duration)
	}
	if sc.End+sc.MaxPGDown+time.Second > c.Duration {
		t.Errorf("a PostgreSQL crash at the window's end (%v + %v + a start) would outlast the load (%v)", sc.End, sc.MaxPGDown, c.Duration)
	}
}

func TestScheduleConfigValidate(t *testing.T) {
	for name, mut := range map[string]func(*ScheduleConfig){
		"empty window": func(c *ScheduleConfig) { c.End = c.Start },
		"no gap":       func(c *ScheduleConfig) { c.MeanGap = 0 },
		"no workers":   func(c *ScheduleConfig) { c.Workers = 0 },
		"weights":      func(c *ScheduleConfig) { c.Weights = []int{1} },
		"zero weights": func(c *ScheduleConfig) { c.Weights = make([]int, numFaultKinds) },
		"hard share":   func(c *ScheduleConfig) { c.HardNATSShare = 2 },
		"down":         func(c *ScheduleConfig) { c.MaxNATSDown = 0 },
		"pg down":      func(c *ScheduleConfig) { c.MaxPGDown = -time.Second },
		"partition":    func(c *ScheduleConfig) { c.NATSPartition = [2]time.Duration{2 * time.Second, time.Second} },
	} {
		c := testSchedule()
		mut(&c)
		if _, err := NewSchedule(1, c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestFaultString(t *testing.T) {
	for f, want := range map[Fault]string{
		{At: 1500 * time.Millisecond, Kind: KillWorker, Worker: 1, Down: time.Second}:    "   1.5s kill worker-2, down 1s",
		{At: 2 * time.Second, Kind: RestartNATS, Hard: true, Down: 2 * time.Second}:      "   2.0s nats-restart (SIGKILL), down 2s",
		{At: 4 * time.Second, Kind: KillNATSLeader, Down: 1500 * time.Millisecond}:       "   4.0s nats-leader-kill (SIGKILL), down 1.5s",
		{At: 3 * time.Second, Kind: TerminatePG}:                                         "   3.0s pg-terminate",
		{At: 5 * time.Second, Kind: RestartPG}:                                           "   5.0s pg-restart (fast shutdown, start at once)",
		{At: 6 * time.Second, Kind: CrashPG, Down: 1200 * time.Millisecond}:              "   6.0s pg-crash (immediate shutdown), down 1.2s",
		{At: 7 * time.Second, Kind: KillPG, Down: 0}:                                     "   7.0s pg-kill (SIGKILL to the postmaster), down 0s",
		{At: 8 * time.Second, Kind: NATSDiskFull, Node: 1, Down: 2 * time.Second}:        "   8.0s nats-disk-full (nats-2 in a cluster), full for 2s",
		{At: 9 * time.Second, Kind: PGDiskFull, Hard: true, Down: time.Second}:           "   9.0s pg-disk-full (WAL segment switches), full for 1s",
		{At: 9 * time.Second, Kind: PGDiskFull, Down: time.Second}:                       "   9.0s pg-disk-full, full for 1s",
		{At: 8 * time.Second, Kind: PartitionWorkerPG, Worker: 2, Down: 3 * time.Second}: "   8.0s worker-pg-partition worker-3, cut for 3s",
		{At: 9 * time.Second, Kind: PartitionAppNATS, Down: 1500 * time.Millisecond}:     "   9.0s app-nats-partition, cut for 1.5s",
	} {
		if got := f.String(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// Every kind has a name, and the partitions are on in both forms (in a
// cluster the NATS partition cuts the stream's leader off) unless the
// configuration turns them off.
func TestPartitionKinds(t *testing.T) {
	for k := range FaultKind(numFaultKinds) {
		if strings.HasPrefix(k.String(), "FaultKind(") || k.String() == "" {
			t.Errorf("kind %d has no name", k)
		}
	}
	for _, weights := range [][]int{DefaultWeights, ClusterWeights} {
		off := withoutPartitions(weights)
		for _, k := range partitionKinds {
			if weights[k] == 0 || off[k] != 0 {
				t.Errorf("%s: weight %d, %d without partitions", k, weights[k], off[k])
			}
		}
		if off[KillWorker] != weights[KillWorker] {
			t.Error("withoutPartitions changed other kinds")
		}
	}
	ext := DefaultConfig(true)
	ext.PostgresURL = "postgres://postgres@127.0.0.1:5432/test"
	if ext.PartitionSkipReason() == "" {
		t.Error("an external server: the namespaces may not reach it, yet the partitions are on")
	}
	for _, k := range partitionKinds {
		if slices.Contains(ActiveKinds(ext.scheduleConfig().Weights), k) {
			t.Errorf("%s scheduled with an external server", k)
		}
	}
}

// With an external server the schedule has no PostgreSQL restarts or
// crashes, and the configuration says why; with the suite's own cluster
// it has at least MinEach of each.
func TestExternalPostgresSkipsPGCrashes(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		own := DefaultConfig(true)
		own.Cluster = cluster
		ext := own
		ext.PostgresURL = "postgres://postgres@127.0.0.1:5432/test"
		if own.PGSkipReason() != "" || ext.PGSkipReason() == "" {
			t.Errorf("skip reasons: own %q, external %q", own.PGSkipReason(), ext.PGSkipReason())
		}
		for seed := range uint64(50) {
			so, err := NewSchedule(seed, own.scheduleConfig())
			if err != nil {
				t.Fatal(err)
			}
			se, err := NewSchedule(seed, ext.scheduleConfig())
			if err != nil {
				t.Fatal(err)
			}
			co, ce := CountKinds(so), CountKinds(se)
			kinds := []FaultKind{RestartPG, CrashPG, KillPG}
			if own.DiskFullSkipReason() == "" {
				kinds = append(kinds, PGDiskFull)
			}
			for _, k := range kinds {
				if co[k] < own.MinEach || ce[k] != 0 {
					t.Fatalf("cluster %v seed %d: %s %d times with the own cluster, %d with an external server", cluster, seed, k, co[k], ce[k])
				}
			}
		}
	}
	if DefaultWeights[RestartPG] == 0 || withoutPGCrashes(nil)[RestartPG] != 0 || DefaultWeights[RestartPG] == 0 {
		t.Error("withoutPGCrashes changed DefaultWeights or left PostgreSQL restarts on")
	}
}
