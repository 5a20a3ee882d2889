//go:build unix

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/pgcluster"
	"github.com/evsnap/evsnap/lib/pgstore"
)

// PGFault is what one PostgreSQL restart or crash did, as the report
// prints it.
type PGFault struct {
	Kind FaultKind
	// At is when it began, from the start of the load.
	At time.Duration
	// Stop is what stopping the server did; Down is the pause before the
	// start; Start is what starting it again did.
	Stop  pgcluster.StopResult
	Down  time.Duration
	Start pgcluster.StartResult
	// Outage is from the fault to the server accepting connections again.
	Outage time.Duration
	// LoadBack is from the server's return to the first event the load
	// generator committed after it (-1: none within the reconnect
	// timeout); WorkersBack is the same for the last worker to write a
	// snapshot, SlowestWorker its name, and NotBack names the workers
	// that wrote none.
	LoadBack      time.Duration
	WorkersBack   time.Duration
	SlowestWorker string
	NotBack       []string
}

// String is the fault's line in the report.
func (f PGFault) String() string {
	return fmt.Sprintf("%6.1fs %-10s %s", f.At.Seconds(), f.Kind, f.detail())
}

// detail is what happened, without the time and the kind.
func (f PGFault) detail() string {
	var b strings.Builder
	fmt.Fprintf(&b, "outage %v (stop %v, down %v, start %v",
		f.Outage.Round(time.Millisecond), f.Stop.Took.Round(time.Millisecond), f.Down.Round(time.Millisecond), f.Start.Took.Round(time.Millisecond))
	if f.Start.CrashRecovery {
		b.WriteString(", crash recovery")
	}
	if f.Stop.Leftovers > 0 {
		fmt.Fprintf(&b, ", %d processes left by the postmaster, %d killed", f.Stop.Leftovers, f.Stop.LeftoversKilled)
	}
	if f.Start.StaleLockRemoved {
		b.WriteString(", stale postmaster.pid removed")
	}
	b.WriteString("); writing again after it: load ")
	b.WriteString(backText(f.LoadBack))
	b.WriteString(", workers ")
	b.WriteString(backText(f.WorkersBack))
	if f.SlowestWorker != "" {
		b.WriteString(" (slowest " + f.SlowestWorker + ")")
	}
	if len(f.NotBack) > 0 {
		b.WriteString("; NOT BACK: " + strings.Join(f.NotBack, ", "))
	}
	return b.String()
}

func backText(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(time.Millisecond).String()
}

// setupPostgres starts the suite's own PostgreSQL cluster, unless the
// configuration names an external server, and returns the URL to create
// the run's database on.
func (s *suite) setupPostgres(ctx context.Context) (string, error) {
	cfg := &s.cfg
	if cfg.PostgresURL != "" {
		s.fig.PGServer = "external server " + pgstore.RedactDSN(cfg.PostgresURL)
		s.fig.PGSkipped = cfg.PGSkipReason()
		s.logf("PostgreSQL: %s; restarts and crashes skipped: %s", s.fig.PGServer, cfg.PGSkipReason())
		return cfg.PostgresURL, nil
	}
	dir, err := os.MkdirTemp("", "evsnap-chaos-pg-*")
	if err != nil {
		return "", err
	}
	began := time.Now()
	dataDir, volSettings, err := s.pgDataVolume() // a disk of its own, for the disk-full faults
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	c, err := pgcluster.Init(ctx, pgcluster.Options{
		BinDir: cfg.PGBinDir, Dir: dir, DataDir: dataDir,
		// A worker killed by a fault holds connections until the server
		// notices; room for them and for the faults' restarts.
		Settings: append(append([]string{"max_connections=200"}, volSettings...), s.labPGSettings()...),
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := s.allowLab(c); err != nil {
		c.Remove()
		return "", err
	}
	s.pg = c
	s.defer_(func() {
		if cfg.Keep {
			if _, err := c.Stop(context.Background(), pgcluster.Fast); err != nil {
				fmt.Fprintf(s.out, "cleanup: stop PostgreSQL: %v\n", err)
			}
			fmt.Fprintf(s.out, "kept the PostgreSQL cluster %s (stopped; start it with: %s)\n", c.Dir(), c.StartCommand())
			return
		}
		if err := c.Remove(); err != nil {
			fmt.Fprintf(s.out, "cleanup: %v\n", err)
		}
	})
	if _, err := c.Start(ctx); err != nil {
		return "", err
	}
	s.fig.PGServer = fmt.Sprintf("%s, a cluster of the suite's own on port %d", pgVersion(ctx, c), c.Port())
	s.logf("PostgreSQL: initdb and start of a cluster of its own in %s on port %d (%s) took %v", c.Dir(), c.Port(), c.BinDir(), time.Since(began).Round(time.Millisecond))
	return c.URL("postgres"), nil
}

// pgVersion is what postgres --version prints, without the program name.
func pgVersion(ctx context.Context, c *pgcluster.Cluster) string {
	out, _, code, err := runOnce(ctx, 10*time.Second, c.Dir(), os.Environ(), filepath.Join(c.BinDir(), "postgres"), "--version")
	if err != nil || code != 0 {
		return "PostgreSQL, unknown version"
	}
	return "PostgreSQL " + strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "postgres (PostgreSQL)"))
}

// pgFault carries out RestartPG, CrashPG and KillPG: it takes the server
// down, starts it again after f.Down (at once for a clean restart), and
// measures how long the load generator and the workers take to write
// again. Faults on PostgreSQL (these and TerminatePG) take turns.
func (s *suite) pgFault(ctx context.Context, f Fault) {
	s.pgMu.Lock()
	defer s.pgMu.Unlock()
	mode := map[FaultKind]pgcluster.StopMode{RestartPG: pgcluster.Fast, CrashPG: pgcluster.Immediate, KillPG: pgcluster.Kill}[f.Kind]
	rec := PGFault{Kind: f.Kind, At: time.Since(s.t0), Down: f.Down}
	pid := s.pg.PID()
	from := time.Now()
	s.mu.Lock()
	s.pgOutages = append(s.pgOutages, Window{From: from})
	s.mu.Unlock()
	st, err := s.pg.Stop(ctx, mode)
	rec.Stop = st
	if err != nil {
		s.fail("%s: stop PostgreSQL (%s): %v", f.Kind, mode, err)
	}
	if sleepCtx(ctx, f.Down); ctx.Err() != nil {
		return
	}
	res, err := s.pg.Start(ctx)
	back := time.Now()
	s.mu.Lock()
	s.pgOutages[len(s.pgOutages)-1].To = back
	s.mu.Unlock()
	rec.Start, rec.Outage = res, back.Sub(from)
	if err != nil {
		if ctx.Err() == nil {
			s.fail("%s: PostgreSQL did not come back: %v", f.Kind, err)
		}
		return
	}
	rec.LoadBack, rec.WorkersBack, rec.SlowestWorker, rec.NotBack = s.measureReconnect(ctx, back)
	if len(rec.NotBack) > 0 || rec.LoadBack < 0 {
		s.fail("%s: not writing %v after PostgreSQL came back: load %s, workers %v", f.Kind, s.cfg.ReconnectTimeout, backText(rec.LoadBack), rec.NotBack)
	}
	s.count(func(fg *Figures) { fg.PGFaults = append(fg.PGFaults, rec) }, f.Kind)
	s.logf("PostgreSQL %s (postmaster pid %d): %s", mode, pid, rec.detail())
}

// measureReconnect waits, at most the reconnect timeout, until the load
// generator has committed an event and every worker has written a
// snapshot after back, and returns how long each took (-1: not within the
// timeout) and the workers that wrote none.
func (s *suite) measureReconnect(ctx context.Context, back time.Time) (load, workers time.Duration, slowest string, notBack []string) {
	load, workers = -1, -1
	deadline := back.Add(s.cfg.ReconnectTimeout)
	var after int64 = -1 // the newest event's position once the server is back
	seen := map[string]time.Duration{}
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if pos, err := s.db.newestLoadEvent(cctx); err == nil {
			switch {
			case after < 0:
				after = pos
			case load < 0 && pos > after:
				load = time.Since(back)
			}
		}
		rows, err := s.db.ctl.Query(cctx, `
SELECT writer, min(written_at) FROM chaos_snapshot_audit
WHERE written_at >= $1 AND writer LIKE $2 GROUP BY writer`, back, appWorkerPrefix+"%")
		if err == nil {
			var w string
			var at time.Time
			for rows.Next() {
				if rows.Scan(&w, &at) == nil {
					if _, ok := seen[w]; !ok {
						seen[w] = max(at.Sub(back), 0)
					}
				}
			}
			rows.Close()
		}
		cancel()
		if load >= 0 && len(seen) == len(s.workers) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	for _, w := range s.workers {
		app := appWorkerPrefix + fmt.Sprint(w.idx+1)
		d, ok := seen[app]
		if !ok {
			notBack = append(notBack, w.name())
			continue
		}
		if d > workers {
			workers, slowest = d, w.name()
		}
	}
	if len(notBack) > 0 {
		workers = -1
	}
	return load, workers, slowest, notBack
}

// monitorPG restarts the suite's cluster if its postmaster exited without
// being asked to, and records it as a failure.
func (s *suite) monitorPG(ctx context.Context) {
	if s.pg == nil || !s.pgMu.TryLock() {
		return
	}
	defer s.pgMu.Unlock()
	gone, how := s.pg.ExitedUnexpectedly()
	if !gone {
		return
	}
	s.fail("PostgreSQL's postmaster exited on its own: %s. Log: %s", how, tailLog(s.pg.LogPath(), 8))
	s.mu.Lock()
	s.pgOutages = append(s.pgOutages, Window{From: time.Now()})
	s.mu.Unlock()
	if _, err := s.pg.Stop(ctx, pgcluster.Kill); err != nil { // what it left behind
		s.fail("PostgreSQL: %v", err)
	}
	_, err := s.pg.Start(ctx)
	s.mu.Lock()
	s.pgOutages[len(s.pgOutages)-1].To = time.Now()
	s.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		s.fail("PostgreSQL did not come back: %v", err)
	}
}
