//go:build unix

package chaos

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/pgcluster"
	"github.com/nats-io/nats.go/jetstream"
)

// The lab's roles besides the nats-servers and the workers, whose
// namespaces are named after them (nats-server, nats-N, worker-N).
const (
	linksRole = "links" // Toxiproxy: the workers' links to PostgreSQL and NATS
	loadRole  = "load"  // the main load generator
)

// natsNames are the names of the run's nats-servers.
func natsNames(nodes int) []string {
	if nodes == 1 {
		return []string{"nats-server"}
	}
	out := make([]string, nodes)
	for i := range out {
		out[i] = "nats-" + strconv.Itoa(i+1)
	}
	return out
}

// setupLab creates the run's network (lab.go) unless the partitions are
// skipped: a namespace for Toxiproxy (with a second address, where the
// NATS proxies listen, so that a worker's link to NATS and its link to
// PostgreSQL can be cut apart), one per nats-server, one per worker, and
// one for the load. The own PostgreSQL cluster stays on the host and
// listens on the lab's address of the host too.
func (s *suite) setupLab(ctx context.Context) error {
	cfg := &s.cfg
	if why := cfg.PartitionSkipReason(); why != "" {
		s.fig.PartitionSkipped = why
		s.logf("partitions skipped: %s", why)
		return nil
	}
	nodes := 1
	if cfg.Cluster {
		nodes = ClusterNodes
	}
	roles := append([]string{linksRole}, natsNames(nodes)...)
	for i := range cfg.Workers {
		roles = append(roles, "worker-"+strconv.Itoa(i+1))
	}
	roles = append(roles, loadRole)
	began := time.Now()
	l, err := newLab(ctx, roles, map[string]int{linksRole: 1})
	if err != nil {
		return fmt.Errorf("the partitions' network: %w", err)
	}
	s.lab = l
	s.defer_(l.remove)
	s.logf("network of the run's own for the partitions, made in %v: %s; the host is %s", time.Since(began).Round(time.Millisecond), l, l.hostAddr())
	return nil
}

// labPGSettings are the own PostgreSQL cluster's settings for the lab:
// it listens on the lab's address of the host as well as on loopback.
func (s *suite) labPGSettings() []string {
	if s.lab == nil {
		return nil
	}
	return []string{"listen_addresses=127.0.0.1," + s.lab.hostAddr()}
}

// allowLab lets the lab's namespaces connect to the cluster as loopback
// does (trust: a throwaway cluster on addresses only this machine has).
func (s *suite) allowLab(c *pgcluster.Cluster) error {
	if s.lab == nil {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(c.DataDir(), "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pg_hba.conf: %w", err)
	}
	_, err = fmt.Fprintf(f, "host all all %s trust\n", s.lab.cidr())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// loadPGURL is the chaos database's URL for the loads: on the lab's
// address of the host when there is a lab (the main load runs in a
// namespace; the rollback phase's, on the host, reach it there too).
func (s *suite) loadPGURL() string {
	raw := s.db.dbURL(appLoad)
	u, err := url.Parse(raw)
	if err != nil || s.lab == nil {
		return raw
	}
	u.Host = net.JoinHostPort(s.lab.hostAddr(), u.Port())
	return u.String()
}

// Cut is one partition, as the report shows it.
type Cut struct {
	Kind FaultKind
	// At is when the cut began (after any turn it waited for), from the
	// start of the load; Down how long it lasted.
	At, Down time.Duration
	// Target is what was cut off: a worker, the load, a nats-server.
	Target string
	// Back is from the heal to the target working again: the worker's
	// next snapshot write, or notices being stored again (0 when a new
	// leader stored them during the cut; -1: not within the reconnect
	// timeout).
	Back time.Duration
	// Elected (a cluster's NATS partition) is how soon after the cut the
	// majority's new leader stored a notice (0: none did during the cut),
	// and Leader the node that led the stream when notices were stored
	// again.
	Elected time.Duration
	Leader  string
	// Written counts the worker's snapshot writes during the cut; Saved
	// the load's events committed during it (app-nats-partition; -1 when
	// PostgreSQL was down to count them).
	Written int
	Saved   int64
}

// String is the cut's line in the report.
func (c Cut) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs %-21s %s cut off for %v", c.At.Seconds(), c.Kind, c.Target, c.Down.Round(time.Millisecond))
	switch c.Kind {
	case PartitionWorkerNATS, PartitionWorkerPG:
		fmt.Fprintf(&b, "; %d snapshot writes during the cut; writing again %s after the heal", c.Written, backText(c.Back))
	case PartitionAppNATS:
		saved := strconv.FormatInt(c.Saved, 10)
		if c.Saved < 0 {
			saved = "? (PostgreSQL down)"
		}
		fmt.Fprintf(&b, "; the load committed %s events during the cut; notices stored again %s after the heal", saved, backText(c.Back))
	case PartitionNATS:
		if c.Elected > 0 {
			fmt.Fprintf(&b, "; %s, elected by the majority, stored notices %v after the cut began", c.Leader, c.Elected.Round(time.Millisecond))
		} else {
			fmt.Fprintf(&b, "; notices stored again %s after the heal", backText(c.Back))
			if c.Leader != "" {
				fmt.Fprintf(&b, " (leader %s)", c.Leader)
			}
		}
	}
	return b.String()
}

// partition carries out the four partitions: it adds the blackhole
// rules, waits f.Down, heals, and measures how soon the target works
// again (failing the fault after the reconnect timeout). A worker's
// partitions take turns with its kills and drains, the NATS partition
// with the other faults on NATS; both hold the lock only until the heal.
func (s *suite) partition(ctx context.Context, f Fault) {
	rec := Cut{Kind: f.Kind, Down: f.Down}
	var rules []string
	var writer, leader string // the worker's application name; the stream leader cut off
	var seqBefore uint64
	var posBefore int64
	var release func()
	switch f.Kind {
	case PartitionNATS:
		s.natsMu.Lock()
		release = s.natsMu.Unlock
		n := s.nats[0]
		if s.cfg.Cluster {
			info := s.awaitWhole(ctx, f.Kind)
			if info == nil {
				s.natsMu.Unlock()
				return
			}
			leader, seqBefore = info.Cluster.Leader, info.State.LastSeq
			i := slices.IndexFunc(s.nats, func(n *natsServer) bool { return n.name == leader })
			if i < 0 {
				s.natsMu.Unlock()
				s.fail("%s: stream info names %s, which is not one of the run's servers", f.Kind, leader)
				return
			}
			n = s.nats[i]
		}
		rules, rec.Target = isolateRules(s.lab.node(n.name).addrs()), n.name
		if leader != "" {
			rec.Target += " (the stream leader)"
		}
	case PartitionWorkerNATS, PartitionWorkerPG:
		w := s.workers[f.Worker]
		w.mu.Lock()
		release = w.mu.Unlock
		links := s.lab.node(linksRole)
		to := links.ip // the PostgreSQL proxy's address
		if f.Kind == PartitionWorkerNATS {
			to = links.extra[0] // the NATS proxies'
		}
		rules, rec.Target, writer = cutRules(w.node.addrs(), []string{to}), w.name(), appWorkerPrefix+strconv.Itoa(w.idx+1)
	case PartitionAppNATS:
		var servers []string
		for _, n := range s.nats {
			servers = append(servers, s.lab.node(n.name).addrs()...)
		}
		rules, rec.Target = cutRules(s.lab.node(loadRole).addrs(), servers), "the load"
		posBefore, rec.Saved = -1, -1 // unknown while PostgreSQL is down
		if p, err := s.db.newestLoadEvent(ctx); err == nil {
			posBefore = p
		}
		release = func() {}
	}
	release = sync.OnceFunc(release)
	defer release()

	heal, err := s.lab.cut(ctx, rules)
	if err != nil {
		s.fail("%s: cut %s off: %v", f.Kind, rec.Target, err)
		return
	}
	cutAt := time.Now()
	rec.At = cutAt.Sub(s.t0) // after the turn it may have waited for
	s.logf("%s: cut %s off for %v (%d blackhole rules)", f.Kind, rec.Target, f.Down.Round(time.Millisecond), len(rules))
	if leader != "" {
		// The majority may elect a leader and store notices meanwhile.
		info, _ := s.pollStream(ctx, cutAt.Add(f.Down), storedUnderAnother(leader, seqBefore))
		if info != nil {
			rec.Elected, rec.Leader = time.Since(cutAt), info.Cluster.Leader
		}
	}
	sleepCtx(ctx, time.Until(cutAt.Add(f.Down)))
	if posBefore >= 0 && ctx.Err() == nil {
		if n, err := s.db.loadEventsAfter(ctx, posBefore); err == nil {
			rec.Saved = n
		}
	}
	err = heal(context.WithoutCancel(ctx))
	healed := time.Now()
	release()
	if err != nil {
		s.fail("%s: heal: %v", f.Kind, err)
		return
	}
	if ctx.Err() != nil {
		return
	}

	deadline := healed.Add(s.cfg.ReconnectTimeout)
	switch {
	case writer != "":
		rec.Written, rec.Back = s.writingAgain(ctx, writer, cutAt, healed, deadline)
	case rec.Elected > 0:
		rec.Back = 0
	default:
		// Notices flow again: the stream's last sequence grows past the
		// first one read after the heal.
		var first uint64
		read := false
		info, _ := s.pollStream(ctx, deadline, func(i *jetstream.StreamInfo) bool {
			if !read {
				first, read = i.State.LastSeq, true
				return false
			}
			return i.State.LastSeq > first
		})
		rec.Back = -1
		if info != nil {
			rec.Back = time.Since(healed)
			if info.Cluster != nil && s.cfg.Cluster {
				rec.Leader = info.Cluster.Leader
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	if rec.Back < 0 {
		s.fail("%s: %s not working again %v after the heal", f.Kind, rec.Target, s.cfg.ReconnectTimeout)
	}
	if f.Kind == PartitionAppNATS && rec.Saved <= 0 && !s.pgDownDuring(cutAt, healed) {
		s.fail("%s: the load committed %d events (-1: could not count them) in %v cut off from NATS, with PostgreSQL up: saves must not wait for notices",
			f.Kind, rec.Saved, f.Down.Round(time.Millisecond))
	}
	s.count(func(fg *Figures) {
		fg.Cuts = append(fg.Cuts, rec)
		slices.SortFunc(fg.Cuts, func(a, b Cut) int { return int(a.At - b.At) })
	}, f.Kind)
	s.logf("healed: %s", strings.TrimSpace(rec.String()))
}

// writingAgain counts writer's snapshot writes between from and to, and
// waits until deadline for its first write at or after to; back is how
// long after to that came (-1: not by the deadline).
func (s *suite) writingAgain(ctx context.Context, writer string, from, to, deadline time.Time) (during int, back time.Duration) {
	back = -1
	for ctx.Err() == nil {
		n, next, err := s.db.writesBy(ctx, writer, from, to)
		if err == nil {
			during = n
			if !next.IsZero() {
				return during, max(next.Sub(to), 0)
			}
		}
		if time.Now().After(deadline) {
			break
		}
		sleepCtx(ctx, stallPoll)
	}
	return during, back
}

// pollStream asks for the notice stream's info every stallPoll until ok
// accepts it or deadline passes, and returns the info accepted (nil if
// none) and the last error.
func (s *suite) pollStream(ctx context.Context, deadline time.Time, ok func(*jetstream.StreamInfo) bool) (*jetstream.StreamInfo, error) {
	var last error
	for ctx.Err() == nil {
		info, err := streamInfo(ctx, s.natsURL(), noticeStream, 500*time.Millisecond)
		if err == nil && ok(info) {
			return info, nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			break
		}
		sleepCtx(ctx, stallPoll)
	}
	return nil, last
}

// pgDownDuring reports whether a PostgreSQL outage overlapped [from, to].
func (s *suite) pgDownDuring(from, to time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.pgOutages {
		if !w.From.After(to) && (w.To.IsZero() || !w.To.Before(from)) {
			return true
		}
	}
	return false
}

// newestLoadEvent is the position of the newest event a load saved (the
// history clients' registers left out: they save all the time).
func (d *database) newestLoadEvent(ctx context.Context) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var pos int64
	err := d.ctl.QueryRow(cctx, `SELECT coalesce(max(position), 0) FROM events WHERE aggregate_type <> $1`, historyType).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("newest event: %w", err)
	}
	return pos, nil
}

// loadEventsAfter counts the loads' events after position pos.
func (d *database) loadEventsAfter(ctx context.Context, pos int64) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int64
	err := d.ctl.QueryRow(cctx, `SELECT count(*) FROM events WHERE position > $1 AND aggregate_type <> $2`, pos, historyType).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count events: %w", err)
	}
	return n, nil
}

// writesBy counts writer's snapshot writes in [from, to) and returns the
// time of its first write at or after to (zero if none yet).
func (d *database) writesBy(ctx context.Context, writer string, from, to time.Time) (int, time.Time, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var n int
	var next *time.Time
	err := d.ctl.QueryRow(cctx, `
SELECT count(*) FILTER (WHERE written_at < $3), min(written_at) FILTER (WHERE written_at >= $3)
FROM chaos_snapshot_audit WHERE writer = $1 AND written_at >= $2`, writer, from, to).Scan(&n, &next)
	if err != nil {
		return 0, time.Time{}, err
	}
	if next == nil {
		return n, time.Time{}, nil
	}
	return n, *next, nil
}

// reportRow is one row of the report's table.
type reportRow struct {
	name  string
	value any
	note  string
}

// partitionRows are the report's rows for the partitions: one per kind,
// or one saying why there were none.
func partitionRows(f Figures) []reportRow {
	if f.PartitionSkipped != "" {
		return []reportRow{{"partitions", "-", "skipped: " + f.PartitionSkipped}}
	}
	var rows []reportRow
	for _, k := range partitionKinds {
		var n int
		var total, back time.Duration
		var saved int64
		elected, uncounted := 0, 0
		for _, c := range f.Cuts {
			if c.Kind != k {
				continue
			}
			n++
			total += c.Down
			saved += max(c.Saved, 0)
			if c.Saved < 0 {
				uncounted++
			}
			if c.Elected > 0 {
				elected++
			}
			if c.Back < 0 || back < 0 {
				back = -1
			} else {
				back = max(back, c.Back)
			}
		}
		after := fmt.Sprintf("%v in all; ", total.Round(time.Millisecond))
		switch k {
		case PartitionNATS:
			what := "the nats-server cut off from everything"
			if f.Cluster {
				what = fmt.Sprintf("the stream leader cut off from everything, its peers too (a new leader stored notices during %d of them)", elected)
			}
			rows = append(rows, reportRow{"NATS partitions", n, what + ": " + after + "notices stored again max " + backText(back) + " after the heal" + ifElected(f.Cluster)})
		case PartitionWorkerNATS:
			rows = append(rows, reportRow{"worker-NATS partitions", n, "a worker cut off from NATS alone: " + after + "it wrote snapshots again max " + backText(back) + " after the heal"})
		case PartitionWorkerPG:
			rows = append(rows, reportRow{"worker-PG partitions", n, "a worker cut off from PostgreSQL alone: " + after + "it wrote snapshots again max " + backText(back) + " after the heal"})
		case PartitionAppNATS:
			counted := ""
			if uncounted > 0 {
				counted = fmt.Sprintf(" (%d cuts not counted: PostgreSQL was down)", uncounted)
			}
			rows = append(rows, reportRow{"app-NATS partitions", n, fmt.Sprintf("the load cut off from NATS alone: %s%d events saved during the cuts%s; notices stored again max %s after the heal", after, saved, counted, backText(back))})
		}
	}
	return rows
}

// ifElected notes, for a cluster, what a 0 after the heal means.
func ifElected(cluster bool) string {
	if cluster {
		return " (0: a new leader stored them during the cut)"
	}
	return ""
}

// partitionSummary is the partitions' part of the "every kind of fault"
// check's detail.
func partitionSummary(f Figures) string {
	if f.PartitionSkipped != "" {
		return "partitions skipped"
	}
	counts := map[FaultKind]int{}
	for _, c := range f.Cuts {
		counts[c.Kind]++
	}
	parts := make([]string, len(partitionKinds))
	for i, k := range partitionKinds {
		parts[i] = fmt.Sprintf("%s %d", k, counts[k])
	}
	return strings.Join(parts, ", ")
}
