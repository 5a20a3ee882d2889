//go:build unix

package chaos

import (
	"context"
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

// leaderWait bounds how long a NATS kill waits for the notice stream to
// have a leader before it picks its target; a cluster that elects none
// in that time fails the run.
const leaderWait = 30 * time.Second

// killNATSNode carries out KillNATSLeader and KillNATSFollower: it asks
// the cluster which node leads the notice stream, sends SIGKILL to that
// node or to a follower, measures how long notices stall (from the kill
// to the first notice stored after it, under a leader that is alive),
// and restarts the node after f.Down on its ports and store directory.
func (s *suite) killNATSNode(ctx context.Context, f Fault) {
	s.natsMu.Lock()
	defer s.natsMu.Unlock()
	// An earlier fault (a partition, a full disk, a kill) may have left
	// the stream electing a leader; that is the cluster at work, not a
	// failure, so the fault waits for one before it picks its target.
	asked := time.Now()
	info, err := s.pollStream(ctx, asked.Add(leaderWait), func(i *jetstream.StreamInfo) bool {
		return i.Cluster != nil && i.Cluster.Leader != ""
	})
	if info == nil {
		if ctx.Err() == nil {
			s.fail("%s: the notice stream had no leader to ask for %v (last error: %v)", f.Kind, leaderWait, err)
		}
		return
	}
	if waited := time.Since(asked); waited > time.Second {
		s.logf("%s: waited %v for the notice stream to have a leader", f.Kind, waited.Round(time.Millisecond))
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
	// stored before the kill.
	info, err = s.pollStream(ctx, killed.Add(60*time.Second), storedUnderAnother(target, before))
	if ctx.Err() != nil {
		return
	}
	stall, newLeader := time.Since(killed), ""
	if info != nil {
		newLeader = info.Cluster.Leader
	} else {
		s.fail("%s: no notice stored within 60s of SIGKILL to %s (last error: %v)", f.Kind, target, err)
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
	s.logf("SIGKILL %s, the %s (pid %d); %s leads, notices stored again %v after the kill; restarting in %v",
		target, role, pid, newLeader, stall.Round(time.Millisecond), f.Down.Round(time.Millisecond))
	if sleepCtx(ctx, time.Until(killed.Add(f.Down))); ctx.Err() != nil {
		return
	}
	if err := n.start(ctx, 30*time.Second); err != nil && ctx.Err() == nil {
		s.fail("%s did not come back: %v", target, err)
	}
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
