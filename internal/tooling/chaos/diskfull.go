//go:build unix

package chaos

// The disk-full faults. Each nats-server's store directory and
// PostgreSQL's data directory (pg_wal included) are a tmpfs of the run's
// own (volume_linux.go), so a fault can fill one to ENOSPC, keep it full
// for a few seconds, and free it, while the load saves.
//
// What the servers do, found by experiment (nats-server v2.15.2,
// PostgreSQL 15; docs/chaos.md and decision 34 have the detail):
//
//   - One nats-server: the stream whose write failed keeps the error
//     ("Critical write error" in its log; the file store's write error is
//     never cleared) and refuses every later notice with it after space
//     returns, until the server restarts. JetStream itself stays on.
//   - A cluster node: a failed Raft write shuts JetStream down on that
//     node ("JetStream out of resources, will be DISABLED"), and it stays
//     down until the server restarts; the other two carry the stream.
//   - PostgreSQL: a statement that needs a new page fails with "could not
//     extend file ...: No space left on device" (SQLSTATE 53100) and the
//     server runs on. A WAL segment it cannot create is a PANIC: the
//     server restarts itself, recovery cannot write its checkpoint, and
//     the postmaster exits; it must be started again once there is space.
//
// So after freeing the disk the suite restarts a nats-server that took no
// notice again by itself, and starts a PostgreSQL that shut down, as an
// operator or a supervisor would; what it checks is that no save failed
// for a notice, that saves failed only with PostgreSQL's disk-full error
// while its disk was full (or during the outage a PANIC made), and that
// everything converged afterwards.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Sizes of the tmpfs volumes: far above what a run writes (a tmpfs takes
// memory only for what it holds; a fill first shrinks it, see volume).
// JetStream reserves the notice stream's 1 GiB cap out of 75% of the
// space free when it starts, so a nats-server's volume needs 1.4 GiB.
const (
	natsVolumeSize = 2 << 30
	pgVolumeSize   = 4 << 30
)

// pgVolumeSettings are the settings of a cluster whose data directory is
// a tmpfs: a WAL of bounded size (it is memory), and WAL segments created
// anew rather than recycled, so that a segment switch while the disk is
// full needs space it cannot have (wal_recycle=off, as on copy-on-write
// file systems); log times in UTC, which panicTime reads.
var pgVolumeSettings = []string{"max_wal_size=256MB", "wal_recycle=off", "log_timezone=UTC"}

// noticeProbe is how long the suite waits, after space returns, for a
// nats-server to store a notice by itself before it restarts it.
const noticeProbe = 3 * time.Second

// diskState is the suite's part of the disk-full faults.
type diskState struct {
	nats []*volume // by index of suite.nats; nil without disk-full faults
	pg   *volume   // nil without them, or with an external server

	mu sync.Mutex
	// full are the windows in which PostgreSQL's disk was full, from the
	// fill to the free.
	full []Window
}

// diskFaults reports whether the run has disk-full faults.
func (s *suite) diskFaults() bool { return s.cfg.DiskFullSkipReason() == "" }

// mountNATSStore mounts a volume on the store directory of the next
// nats-server (when the run has disk-full faults) and has the cleanup
// unmount it after the server has stopped.
func (s *suite) mountNATSStore(dir string) error {
	if !s.diskFaults() {
		s.fig.DiskSkipped = s.cfg.DiskFullSkipReason()
		s.disk.nats = append(s.disk.nats, nil)
		return nil
	}
	v, err := mountVolume(dir, natsVolumeSize)
	if err != nil {
		return err
	}
	s.disk.nats = append(s.disk.nats, v)
	s.defer_(func() { s.releaseVolume(v) })
	return nil
}

// pgDataVolume returns a data directory on a volume of its own for the
// suite's PostgreSQL cluster, and the settings that go with it ("" and
// nil without disk-full faults). The cleanup unmounts it after the
// cluster is removed.
func (s *suite) pgDataVolume() (string, []string, error) {
	if !s.diskFaults() {
		return "", nil, nil
	}
	parent, err := os.MkdirTemp("", "evsnap-chaos-pgdata-*")
	if err != nil {
		return "", nil, err
	}
	data := filepath.Join(parent, "data")
	err = os.Chmod(parent, 0o755) // the server's OS user goes through it
	if err == nil {
		err = os.Mkdir(data, 0o700)
	}
	var v *volume
	if err == nil {
		v, err = mountVolume(data, pgVolumeSize)
	}
	if err != nil {
		os.RemoveAll(parent)
		return "", nil, err
	}
	s.disk.pg = v
	s.defer_(func() {
		s.releaseVolume(v)
		if !s.cfg.Keep {
			os.RemoveAll(parent)
		}
	})
	return data, pgVolumeSettings, nil
}

func (s *suite) releaseVolume(v *volume) {
	if s.cfg.Keep {
		fmt.Fprintf(s.out, "kept the tmpfs on %s mounted (umount %s when done)\n", v.dir, v.dir)
		return
	}
	if err := v.unmount(); err != nil {
		fmt.Fprintf(s.out, "cleanup: %v\n", err)
	}
}

// diskFullWindows are the windows in which PostgreSQL's disk was full.
func (s *suite) diskFullWindows() []Window {
	s.disk.mu.Lock()
	defer s.disk.mu.Unlock()
	return slices.Clone(s.disk.full)
}

// fillFor fills v, keeps it full for d (topping the filler up as servers
// delete files), calling halfway (when not nil) halfway through, and
// frees it. It returns when the disk became full, when it was freed, and
// the filler's size.
func (s *suite) fillFor(ctx context.Context, v *volume, d time.Duration, halfway func()) (full, freed time.Time, filler int64, err error) {
	filler, err = v.fill()
	full = time.Now()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for err == nil && time.Since(full) < d && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		if halfway != nil && time.Since(full) >= d/2 {
			halfway()
			halfway = nil
		}
		var n int64
		n, err = v.topUp()
		filler += n
	}
	ferr := v.free()
	freed = time.Now()
	if err == nil {
		err = ferr
	}
	return full, freed, filler, err
}

// fileSize is the size of the file at path (0 if it cannot be read).
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince returns the lines of the log at path from offset on.
func logSince(path string, offset int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b := make([]byte, max(fileSize(path)-offset, 0))
	n, _ := f.ReadAt(b, offset)
	return strings.Split(string(b[:n]), "\n")
}

func countLines(lines []string, substr string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(strings.ToLower(l), strings.ToLower(substr)) {
			n++
		}
	}
	return n
}

// natsDiskFull carries out NATSDiskFull: it fills the store of the one
// server (of node f.Node in a cluster) for f.Down, frees it, and restarts
// the server when it does not take notices again by itself.
func (s *suite) natsDiskFull(ctx context.Context, f Fault) {
	s.natsMu.Lock()
	defer s.natsMu.Unlock()
	i := f.Node % len(s.nats)
	n, v := s.nats[i], s.disk.nats[i]
	rec := DiskFault{Kind: f.Kind, At: time.Since(s.t0), Target: n.name, StoredAgain: -1}
	logFrom := fileSize(n.proc.logPath)
	if s.cfg.Cluster {
		before := s.awaitWhole(ctx, f.Kind)
		if before == nil {
			return
		}
		rec.LedStream = before.Cluster.Leader == n.name
	}
	full, freed, filler, err := s.fillFor(ctx, v, f.Down, nil)
	rec.Filler, rec.Full = filler, freed.Sub(full)
	if err != nil {
		if ctx.Err() == nil {
			s.fail("%s: %s's store: %v", f.Kind, n.name, err)
		}
		return
	}
	if !n.proc.running() {
		s.fail("%s exited while its disk was full. Log: %s", n.name, tailLog(n.proc.logPath, 8))
		if err := n.start(ctx, 30*time.Second); err != nil && ctx.Err() == nil {
			s.fail("%s did not come back: %v", n.name, err)
		}
		return
	}

	// Does it take notices again by itself? One server: the stream
	// stores one. A cluster node: JetStream is still on there and its
	// replica is current.
	lines := logSince(n.proc.logPath, logFrom)
	rec.Disabled = countLines(lines, "will be DISABLED") > 0
	if s.cfg.Cluster {
		rec.Stuck = rec.Disabled || s.replicaCurrent(ctx, n.name, freed, noticeProbe) < 0
	} else {
		var seq uint64
		if info, err := streamInfo(ctx, s.natsURL(), noticeStream, time.Second); err == nil {
			seq = info.State.LastSeq
		}
		rec.StoredAgain = s.noticeStored(ctx, seq, freed, noticeProbe)
		rec.Stuck = rec.StoredAgain < 0
	}
	if rec.Stuck {
		// As an operator would: restart it.
		if rec.Disabled {
			s.logf("%s disabled JetStream when its disk filled; restarting it", n.name)
		} else {
			s.logf("%s stored no notice in the %v after its disk was freed; restarting it", n.name, time.Since(freed).Round(time.Millisecond))
		}
		var seq uint64
		if info, err := streamInfo(ctx, s.natsURL(), noticeStream, time.Second); err == nil {
			seq = info.State.LastSeq
		}
		s.mu.Lock()
		s.outages = append(s.outages, outage{from: time.Now()})
		s.mu.Unlock()
		n.stop(syscall.SIGTERM)
		err := n.start(ctx, 30*time.Second)
		s.mu.Lock()
		s.outages[len(s.outages)-1].to = time.Now()
		s.mu.Unlock()
		if err != nil {
			if ctx.Err() == nil {
				s.fail("%s did not come back after its disk was full: %v", n.name, err)
			}
			return
		}
		rec.Restarted = true
		if s.cfg.Cluster {
			if rec.Rejoined = s.replicaCurrent(ctx, n.name, freed, 30*time.Second); rec.Rejoined < 0 {
				s.fail("%s: %s's replica of the notice stream not current 30s after its restart", f.Kind, n.name)
			}
		} else if rec.StoredAgain = s.noticeStored(ctx, seq, freed, 15*time.Second); rec.StoredAgain < 0 {
			s.fail("%s: no notice stored within 15s of restarting %s after its disk was full", f.Kind, n.name)
		}
	}
	rec.WriteErrors = countLines(logSince(n.proc.logPath, logFrom), "no space left on device")
	if after, err := streamInfo(ctx, s.natsURL(), noticeStream, 3*time.Second); err == nil && after.Cluster != nil && s.cfg.Cluster {
		rec.NewLeader = after.Cluster.Leader
	}
	s.count(func(fg *Figures) { fg.DiskFaults = append(fg.DiskFaults, rec) }, f.Kind)
	s.logf("NATS disk full: %s", rec)
}

// noticeStored waits, at most timeout, until the notice stream's last
// sequence passes seq, and returns how long after since that was seen (-1
// if not in time).
func (s *suite) noticeStored(ctx context.Context, seq uint64, since time.Time, timeout time.Duration) time.Duration {
	for deadline := time.Now().Add(timeout); ctx.Err() == nil; sleepCtx(ctx, stallPoll) {
		if info, err := streamInfo(ctx, s.natsURL(), noticeStream, time.Second); err == nil && info.State.LastSeq > seq {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			break
		}
	}
	return -1
}

// replicaCurrent waits, at most timeout, until node leads the notice
// stream or holds a current replica of it, and returns how long after
// since that was seen (-1 if not in time).
func (s *suite) replicaCurrent(ctx context.Context, node string, since time.Time, timeout time.Duration) time.Duration {
	for deadline := time.Now().Add(timeout); ctx.Err() == nil; sleepCtx(ctx, 200*time.Millisecond) {
		if info, err := streamInfo(ctx, s.natsURL(), noticeStream, time.Second); err == nil && info.Cluster != nil {
			if info.Cluster.Leader == node || slices.ContainsFunc(info.Cluster.Replicas, func(r *jetstream.PeerInfo) bool {
				return r.Name == node && r.Current && !r.Offline
			}) {
				return time.Since(since)
			}
		}
		if time.Now().After(deadline) {
			break
		}
	}
	return -1
}

// pgDiskFull carries out PGDiskFull: it fills the data directory's disk
// for f.Down (switching WAL segments halfway when f.Hard), frees it,
// starts the server again if it shut down, and measures how soon the
// load and the workers write again.
func (s *suite) pgDiskFull(ctx context.Context, f Fault) {
	s.pgMu.Lock()
	defer s.pgMu.Unlock()
	v := s.disk.pg
	rec := DiskFault{Kind: f.Kind, At: time.Since(s.t0), Target: "PostgreSQL", WALSwitch: f.Hard}
	logFrom := fileSize(s.pg.LogPath())
	var switchErr error
	var switched time.Time
	switchWAL := func() {
		switched = time.Now()
		// One switch needs a segment the full disk cannot hold; the
		// next WAL record (the load's) PANICs. Try a few, while the
		// server answers.
		for range 3 {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_, switchErr = s.db.ctl.Exec(cctx, "SELECT pg_switch_wal()")
			cancel()
			if switchErr != nil {
				return
			}
			if sleepCtx(ctx, 300*time.Millisecond); !s.pg.Running() {
				return
			}
		}
	}
	if !f.Hard {
		switchWAL = nil
	}
	from := time.Now() // before the fill: errors may come as soon as it begins
	full, freed, filler, err := s.fillFor(ctx, v, f.Down, switchWAL)
	rec.Filler, rec.Full = filler, freed.Sub(full)
	if err != nil {
		if ctx.Err() == nil {
			s.fail("%s: PostgreSQL's data directory: %v", f.Kind, err)
		}
		return
	}
	s.disk.mu.Lock()
	s.disk.full = append(s.disk.full, Window{From: from, To: freed})
	s.disk.mu.Unlock()

	back, restarted, err := s.pgAnswering(ctx, time.Minute)
	rec.Restarted, rec.Back = restarted, back.Sub(freed)
	lines := logSince(s.pg.LogPath(), logFrom)
	rec.WriteErrors = countLines(lines, "no space left on device")
	rec.Panicked = countLines(lines, "PANIC:") > 0
	if rec.Panicked || restarted {
		// The server went down: an outage, in which any error may come,
		// from its PANIC (or the WAL switch, or the fill, if the log does
		// not say when).
		down := from
		if at, ok := panicTime(lines); ok && at.After(from) {
			down = at
		} else if !switched.IsZero() {
			down = switched
		}
		s.mu.Lock()
		s.pgOutages = append(s.pgOutages, Window{From: down, To: back})
		s.mu.Unlock()
	}
	if err != nil {
		if ctx.Err() == nil {
			s.fail("%s: PostgreSQL did not come back after its disk was freed: %v", f.Kind, err)
		}
		return
	}
	if f.Hard && switchErr != nil && !rec.Panicked {
		s.logf("%s: pg_switch_wal: %v", f.Kind, switchErr)
	}
	rec.LoadBack, rec.WorkersBack, rec.SlowestWorker, rec.NotBack = s.measureReconnect(ctx, back)
	if len(rec.NotBack) > 0 || rec.LoadBack < 0 {
		s.fail("%s: not writing %v after PostgreSQL's disk was freed: load %s, workers %v", f.Kind, s.cfg.ReconnectTimeout, backText(rec.LoadBack), rec.NotBack)
	}
	s.count(func(fg *Figures) { fg.DiskFaults = append(fg.DiskFaults, rec) }, f.Kind)
	s.logf("PostgreSQL disk full: %s", rec)
}

// panicTime is the time of the first PANIC in PostgreSQL's log lines
// (log_line_prefix starts with %m: "2006-01-02 15:04:05.000 UTC").
func panicTime(lines []string) (time.Time, bool) {
	const layout = "2006-01-02 15:04:05.000 MST"
	for _, l := range lines {
		if strings.Contains(l, "PANIC:") && len(l) > len(layout) {
			at, err := time.Parse(layout, l[:len(layout)])
			return at, err == nil
		}
	}
	return time.Time{}, false
}

// pgAnswering waits, at most timeout, until the server answers a query,
// and starts it first if its postmaster has exited (after a PANIC while
// the disk was full, recovery cannot write and the postmaster shuts
// down). It returns when the server answered and whether it was started.
// The caller holds pgMu.
func (s *suite) pgAnswering(ctx context.Context, timeout time.Duration) (time.Time, bool, error) {
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil {
		if !s.pg.Running() {
			if _, err := s.pg.Start(ctx); err != nil {
				return time.Now(), true, err
			}
			return time.Now(), true, nil
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := s.db.ctl.Exec(cctx, "SELECT 1")
		cancel()
		if err == nil {
			return time.Now(), false, nil
		}
		if time.Now().After(deadline) {
			return time.Now(), false, fmt.Errorf("no answer within %v: %w", timeout, err)
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return time.Now(), false, ctx.Err()
}
