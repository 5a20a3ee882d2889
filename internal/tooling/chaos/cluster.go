//go:build unix

package chaos

import (
	"cmp"
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// stallPoll is how often the suite asks for the notice stream's state
// while it measures a stall after a kill; it is the measurement's
// resolution, together with the time one stream info request takes.
const stallPoll = 50 * time.Millisecond

// leaderWait bounds how long a fault on a NATS node waits for the
// cluster to be whole before it picks its target (see awaitWhole).
const leaderWait = 30 * time.Second

// killNATSNode carries out KillNATSLeader and KillNATSFollower: it asks
// the cluster which node leads the notice stream, sends SIGKILL to that
// node or to a follower, measures how long notices stall (from the kill
// to the first notice stored after it, under a leader that is alive),
// and restarts the node f.Down after the kill on its ports and store
// directory. It first waits for the cluster to be whole (awaitWhole).
func (s *suite) killNATSNode(ctx context.Context, f Fault) {
	s.natsMu.Lock()
	defer s.natsMu.Unlock()
	info := s.awaitWhole(ctx, f.Kind)
	if info == nil {
		return
	}
	leader, before := info.Cluster.Leader, info.State.LastSeq
	target := leader
	if f.Kind == KillNATSFollower {
		var followers []string
		for _, r := range info.Cluster.Replicas {
			followers = append(followers, r.Name)
		}
		if len(followers) == 0 {
			s.fail("%s: stream leader %s reports no followers", f.Kind, leader)
			return
		}
		slices.Sort(followers)
		target = followers[int(f.At)%len(followers)] // a follower, chosen by the seed
	}
	i := slices.IndexFunc(s.nats, func(n *natsServer) bool { return n.name == target })
	if i < 0 {
		s.fail("%s: stream info names %s, which is not one of the run's servers", f.Kind, target)
		return
	}
	n := s.nats[i]
	pid := n.proc.pid()
	killed := time.Now()
	n.stop(syscall.SIGKILL)

	// The stall: until a live leader stores a notice past the last one
	// stored before the kill. The node comes back after f.Down whatever
	// the others are doing, as a supervisor would restart it: if the two
	// left have not elected a leader that stored a notice by then, the
	// measurement goes on with the node back (any leader will do then).
	info, err := s.pollStream(ctx, killed.Add(f.Down), storedUnderAnother(target, before))
	restarted := false
	if info == nil {
		if sleepCtx(ctx, time.Until(killed.Add(f.Down))); ctx.Err() != nil {
			return
		}
		if err := n.start(ctx, 30*time.Second); err != nil {
			if ctx.Err() == nil {
				s.fail("%s did not come back: %v", target, err)
			}
			return
		}
		restarted = true
		info, err = s.pollStream(ctx, killed.Add(60*time.Second), func(i *jetstream.StreamInfo) bool {
			return i.Cluster != nil && i.Cluster.Leader != "" && i.State.LastSeq > before
		})
	}
	if ctx.Err() != nil {
		return
	}
	stall, newLeader := time.Since(killed), ""
	if info != nil {
		newLeader = info.Cluster.Leader
	} else {
		s.fail("%s: no notice stored within 60s of SIGKILL to %s, restarted after %v (last error: %v)", f.Kind, target, f.Down.Round(time.Millisecond), err)
	}
	s.count(func(fg *Figures) {
		if f.Kind == KillNATSLeader {
			fg.LeaderStalls = append(fg.LeaderStalls, stall)
		} else {
			fg.FollowerStalls = append(fg.FollowerStalls, stall)
		}
	}, f.Kind)
	role := "stream leader"
	if f.Kind == KillNATSFollower {
		role = "follower (leader " + leader + ")"
	}
	if restarted {
		s.logf("SIGKILL %s, the %s (pid %d); no leader stored a notice before its restart %v after the kill; %s leads, notices stored again %v after the kill",
			target, role, pid, f.Down.Round(time.Millisecond), newLeader, stall.Round(time.Millisecond))
		return
	}
	s.logf("SIGKILL %s, the %s (pid %d); %s leads, notices stored again %v after the kill; restarting in %v",
		target, role, pid, newLeader, stall.Round(time.Millisecond), time.Until(killed.Add(f.Down)).Round(time.Millisecond))
	if sleepCtx(ctx, time.Until(killed.Add(f.Down))); ctx.Err() != nil {
		return
	}
	if err := n.start(ctx, 30*time.Second); err != nil && ctx.Err() == nil {
		s.fail("%s did not come back: %v", target, err)
	}
}

// awaitWhole returns the notice stream's info once the cluster is whole
// again: a leader, and every other server of the run a current, online
// replica. A fault on one NATS node is what an R3 stream is built to
// ride out; one that lands while another node is still rejoining after
// an earlier fault (a partition healed a moment ago, a restart) takes
// two of three and the stream's quorum with it, which tests nothing of
// evsnap's and stalls the notices for as long as NATS takes to elect
// again (60s in one CI run: a leader killed 0.4s after a partition of
// another node healed). So a fault that needs the leader waits up to
// leaderWait for the cluster to be whole; one that is not whole by then
// fails the run, as a node that cannot rejoin is a finding. It returns
// nil after a failure or when ctx ends.
func (s *suite) awaitWhole(ctx context.Context, kind FaultKind) *jetstream.StreamInfo {
	// Twice, a second apart, under the same leader: a leader cut off a
	// moment ago may still answer for the stream, with its own stale
	// view of the replicas.
	asked := time.Now()
	deadline := asked.Add(leaderWait)
	var info *jetstream.StreamInfo
	var err error
	for info == nil && ctx.Err() == nil {
		first, ferr := s.pollStream(ctx, deadline, func(i *jetstream.StreamInfo) bool { return whole(i, len(s.nats)) })
		if first == nil {
			err = ferr
			break
		}
		sleepCtx(ctx, time.Second)
		second, serr := streamInfo(ctx, s.natsURL(), noticeStream, 3*time.Second)
		switch {
		case serr == nil && whole(second, len(s.nats)) && second.Cluster.Leader == first.Cluster.Leader:
			info = second
		case time.Now().After(deadline):
			return s.notWhole(ctx, kind, cmp.Or(serr, errNotWholeTwice))
		}
	}
	if info == nil {
		return s.notWhole(ctx, kind, err)
	}
	if waited := time.Since(asked); waited > 2*time.Second { // the second look takes one
		s.logf("%s: waited %v for the NATS cluster to be whole (a leader and every replica current)", kind, waited.Round(time.Millisecond))
	}
	return info
}

// notWhole fails the run for awaitWhole (unless ctx ended) and returns nil.
func (s *suite) notWhole(ctx context.Context, kind FaultKind, err error) *jetstream.StreamInfo {
	if ctx.Err() == nil {
		s.fail("%s: the NATS cluster was not whole again (a leader and %d current replicas) within %v (last error: %v)", kind, len(s.nats)-1, leaderWait, err)
	}
	return nil
}

// errNotWholeTwice is awaitWhole's last error when the cluster looked
// whole once but not a second later.
var errNotWholeTwice = errors.New("whole once, not a second later under the same leader")

// whole reports whether stream info shows a leader and servers-1
// replicas, each current and online.
func whole(i *jetstream.StreamInfo, servers int) bool {
	if i.Cluster == nil || i.Cluster.Leader == "" {
		return false
	}
	current := 0
	for _, r := range i.Cluster.Replicas {
		if r != nil && r.Current && !r.Offline {
			current++
		}
	}
	return current >= servers-1
}

// storedUnderAnother accepts stream info that shows a notice stored past
// before under a leader other than old.
func storedUnderAnother(old string, before uint64) func(*jetstream.StreamInfo) bool {
	return func(i *jetstream.StreamInfo) bool {
		return i.Cluster != nil && i.Cluster.Leader != "" && i.Cluster.Leader != old && i.State.LastSeq > before
	}
}

// natsVersion is what binary --version prints ("nats-server: v2.15.2"),
// without the program name.
func natsVersion(ctx context.Context, binary string) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, binary, "--version").Output()
	if err != nil {
		return "unknown version"
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nats-server:"))
}
