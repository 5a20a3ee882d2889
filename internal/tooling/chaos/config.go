package chaos

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ClusterNodes is how many nats-servers the cluster mode runs; the notice
// stream has a replica on each.
const ClusterNodes = 3

// Config configures a run. Start from [DefaultConfig].
type Config struct {
	// Short selects the short form (CI): about a minute in total, with at
	// least one fault of each kind.
	Short bool
	// Duration is how long the load runs, faults included.
	Duration time.Duration
	// Workers is how many snapshotter run processes there are (at least 2).
	Workers int
	// Seed derives the fault schedule.
	Seed uint64

	// RepoDir is the module root the binaries are built from.
	RepoDir string
	// PostgresURL names an external server (any database on it) where the
	// run creates and drops its own database. "" (the default) runs a
	// PostgreSQL cluster of the suite's own (internal/tooling/pgcluster),
	// which the PostgreSQL faults restart and crash; with an external
	// server those faults are left out, since the suite restarts only
	// what it started.
	PostgresURL string
	// PGBinDir holds initdb and postgres for the own cluster; "" finds
	// them (initdb in PATH, else /usr/lib/postgresql/*/bin).
	PGBinDir string
	// NATSServer is the nats-server binary; "" means the version go.mod
	// pins, built on demand into a cache directory (internal/tooling/natsbin).
	NATSServer string
	// Cluster runs ClusterNodes nats-servers as a JetStream cluster with
	// the notice stream at ClusterNodes replicas, and kills the stream's
	// leader and followers instead of restarting the one server.
	Cluster bool

	// Load generator: aggregates, saves per second, saving goroutines.
	Aggregates  int
	Rate        float64
	Concurrency int

	// Threshold is the snapshot threshold of both types (Order also
	// snapshots on OrderPaid and OrderShipped).
	Threshold int
	// SweepInterval is the workers' reconciliation sweep period.
	SweepInterval time.Duration
	// AckWait is the workers' JetStream ack wait: how soon the notices of
	// a killed worker are redelivered.
	AckWait time.Duration
	// DrainTimeout is the workers' drain timeout; a SIGTERMed worker must
	// exit 0 within it (plus DrainSlack for process shutdown).
	DrainTimeout time.Duration
	DrainSlack   time.Duration
	// ConvergeTimeout bounds the wait for every aggregate to come within
	// the threshold of its head after the load stops.
	ConvergeTimeout time.Duration

	// The rollback phase (after the main load): v1 and v2 of the Account
	// save side by side for RollbackSideBySide, each load at
	// RollbackRate saves/s with a worker of its own, then v2 is rolled
	// back and v1 goes on alone for RollbackAfter. A RollbackSideBySide
	// of 0 skips the phase.
	RollbackSideBySide, RollbackAfter time.Duration
	RollbackRate                      float64

	// Schedule shape: the mean gap between faults, the minimum number of
	// each kind, and the longest outages.
	MeanGap       time.Duration
	MinEach       int
	MaxWorkerDown time.Duration
	MaxNATSDown   time.Duration
	HardNATSShare float64
	// MaxPGDown bounds how long PostgreSQL stays down after an immediate
	// shutdown or a SIGKILL before it is started again (a clean restart
	// starts it at once, as pg_ctl restart does).
	MaxPGDown time.Duration
	// ReconnectTimeout bounds the wait, after each PostgreSQL fault, for
	// the load generator and every worker to write again.
	ReconnectTimeout time.Duration

	// Sabotage damages the stores on purpose after the run (one snapshot
	// moved back a version, one event deleted), to show that the checks
	// catch it. The run must then fail.
	Sabotage bool
	// Keep leaves the work directory (logs, record file) and the database
	// in place for investigation.
	Keep bool
	// Out receives progress and the report (default os.Stdout).
	Out io.Writer
}

// DefaultConfig returns the full form's settings, or the short form's.
func DefaultConfig(short bool) Config {
	c := Config{
		Duration:           5 * time.Minute,
		Workers:            3,
		Seed:               uint64(time.Now().UnixNano()),
		Aggregates:         200,
		Rate:               300,
		Concurrency:        8,
		Threshold:          20,
		SweepInterval:      2 * time.Second,
		AckWait:            5 * time.Second,
		DrainTimeout:       10 * time.Second,
		DrainSlack:         2 * time.Second,
		ConvergeTimeout:    90 * time.Second,
		RollbackSideBySide: 30 * time.Second,
		RollbackAfter:      20 * time.Second,
		RollbackRate:       100,
		MeanGap:            4 * time.Second,
		MinEach:            5,
		MaxWorkerDown:      3 * time.Second,
		MaxNATSDown:        5 * time.Second,
		HardNATSShare:      0.3,
		MaxPGDown:          2 * time.Second,
		// A worker killed by another fault meanwhile is back within
		// MaxWorkerDown plus its start-up.
		ReconnectTimeout: 30 * time.Second,
		Out:              os.Stdout,
	}
	if short {
		c.Short = true
		c.Duration = 50 * time.Second
		c.MeanGap = 5 * time.Second
		c.MinEach = 1
		c.MaxNATSDown = 3 * time.Second
		c.ConvergeTimeout = 45 * time.Second
		c.RollbackSideBySide, c.RollbackAfter = 5*time.Second, 4*time.Second
	}
	return c
}

// Validate reports what is wrong with c.
func (c *Config) Validate() error {
	switch {
	case c.Workers < 2:
		return fmt.Errorf("--workers %d: the suite needs at least 2 workers", c.Workers)
	case c.Workers > 16:
		return fmt.Errorf("--workers %d: at most 16", c.Workers)
	case c.Duration < 20*time.Second:
		return fmt.Errorf("--duration %v: at least 20s (faults start after a warm-up and stop before the end)", c.Duration)
	case c.Aggregates < 1 || c.Rate <= 0 || c.Concurrency < 1:
		return errors.New("load: aggregates, rate and concurrency must be positive")
	case c.Threshold < 1:
		return errors.New("threshold must be at least 1")
	case c.SweepInterval <= 0:
		return errors.New("the sweep interval must be positive: convergence relies on the sweep")
	case c.AckWait < time.Second || c.DrainTimeout <= 0 || c.ConvergeTimeout <= 0:
		return errors.New("ack wait must be at least 1s; drain and convergence timeouts positive")
	case c.RollbackSideBySide < 0 || (c.RollbackSideBySide > 0 && (c.RollbackAfter <= 0 || c.RollbackRate <= 0)):
		return errors.New("the rollback phase needs a positive time after the rollback and a positive rate (or a side-by-side time of 0 to skip it)")
	case c.RepoDir == "":
		return errors.New("no repository directory")
	case c.MaxPGDown < 0 || c.ReconnectTimeout <= 0:
		return errors.New("the PostgreSQL down time must not be negative, the reconnect timeout must be positive")
	case c.PostgresURL != "" && c.PGBinDir != "":
		return errors.New("--pg-bin is for the suite's own cluster; --postgres-url names an external server")
	}
	if c.NATSServer != "" {
		if _, err := os.Stat(c.NATSServer); err != nil {
			return fmt.Errorf("nats-server binary: %w", err)
		}
	}
	return nil
}

// scheduleConfig is the fault window: a warm-up of a tenth of the run (at
// least 3s) and a quiet end that leaves time for the last restarts.
func (c Config) scheduleConfig() ScheduleConfig {
	start := max(3*time.Second, c.Duration/10)
	end := c.Duration - max(c.MaxNATSDown, c.MaxWorkerDown, c.MaxPGDown+time.Second) - 2*time.Second
	if end <= start {
		end = start + time.Second
	}
	sc := ScheduleConfig{
		Start: start, End: end, MeanGap: c.MeanGap, Workers: c.Workers, MinEach: c.MinEach,
		MaxWorkerDown: c.MaxWorkerDown, MaxNATSDown: c.MaxNATSDown, MaxPGDown: c.MaxPGDown, HardNATSShare: c.HardNATSShare,
	}
	if c.Cluster {
		sc.Weights = ClusterWeights
		sc.NATSPartition = [2]time.Duration{4 * time.Second, maxLeaderPartition}
	}
	if c.PostgresURL != "" {
		sc.Weights = withoutPGCrashes(sc.Weights)
	}
	if c.PartitionSkipReason() != "" {
		sc.Weights = withoutPartitions(sc.Weights)
	}
	if c.DiskFullSkipReason() != "" {
		sc.Weights = withoutDiskFull(sc.Weights)
	}
	return sc
}

// PartitionSkipReason says why a run has no partitions ("" when it has
// them): they need a network of the run's own (lab.go: root and the ip
// command), where the processes run in network namespaces and reach
// PostgreSQL on an address of the lab, so a cluster of the suite's own.
func (c Config) PartitionSkipReason() string {
	if c.PostgresURL != "" {
		return "--postgres-url names a server the suite did not start, which the network namespaces may not reach"
	}
	return labSkipReason()
}

// PGSkipReason says why a run has no PostgreSQL restarts and crashes (""
// when it has them).
func (c Config) PGSkipReason() string {
	if c.PostgresURL == "" {
		return ""
	}
	return "--postgres-url names a server the suite did not start; it restarts and crashes only a cluster of its own"
}

// policy is the workers' --policy flag.
func (c *Config) policy() string {
	return fmt.Sprintf("Account=threshold:%d;Order=threshold:%d,milestones:OrderPaid|OrderShipped", c.Threshold, c.Threshold)
}

// FindRepo returns the directory of the evsnap module containing dir.
func FindRepo(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.TrimSpace(line) == "module github.com/evsnap/evsnap" {
					return d, nil
				}
			}
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no github.com/evsnap/evsnap module at or above %s", dir)
		}
	}
}
