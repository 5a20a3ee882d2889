package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// netns is a network namespace of the run's own, joined to the host by a
// veth pair, where the nats-server runs, so the suite can cut the network
// between NATS and everything else (workers, the load, the suite) without
// stopping the server. The addresses are a /30 of 10.233.0.0/16 inside
// the pair; nothing else is routed.
type netns struct {
	name         string
	hostIf, nsIf string
	hostIP, nsIP string
	live         bool
}

// newNetns creates the namespace and the veth pair. It needs root and the
// ip command (iproute2); without them it says why, and the suite skips
// the partitions.
func newNetns(ctx context.Context) (*netns, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("network namespaces need the ip command (iproute2)")
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	tag := hex.EncodeToString(b[:])
	n := &netns{
		name:   "evsnap-chaos-" + tag,
		hostIf: "evc" + tag + "h", nsIf: "evc" + tag + "n",
		hostIP: fmt.Sprintf("10.233.%d.%d", b[0], (b[1]&0x3f)*4+1),
	}
	n.nsIP = fmt.Sprintf("10.233.%d.%d", b[0], (b[1]&0x3f)*4+2)
	steps := [][]string{
		{"netns", "add", n.name},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf},
		{"link", "set", n.nsIf, "netns", n.name},
		{"addr", "add", n.hostIP + "/30", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"netns", "exec", n.name, "ip", "addr", "add", n.nsIP + "/30", "dev", n.nsIf},
		{"netns", "exec", n.name, "ip", "link", "set", n.nsIf, "up"},
		{"netns", "exec", n.name, "ip", "link", "set", "lo", "up"},
	}
	for i, args := range steps {
		if err := ipCmd(ctx, args...); err != nil {
			if i > 0 {
				n.live = true
				n.remove()
			}
			return nil, err
		}
	}
	n.live = true
	return n, nil
}

// wrap returns the command line that runs path with args in the
// namespace (ip netns exec execs it, so the process keeps its pid).
func (n *netns) wrap(path string, args []string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.name, path}, args...)
}

// partition takes the namespace's end of the pair down: the host keeps its
// route and its sockets, and every packet to or from NATS is dropped in
// silence, as on a cut cable (no reset, no ICMP).
func (n *netns) partition(ctx context.Context) error {
	return ipCmd(ctx, "netns", "exec", n.name, "ip", "link", "set", n.nsIf, "down")
}

// heal brings the link back: connections whose peers did not give up go on
// where they stalled.
func (n *netns) heal(ctx context.Context) error {
	return ipCmd(ctx, "netns", "exec", n.name, "ip", "link", "set", n.nsIf, "up")
}

// remove deletes the namespace, and with it the veth pair.
func (n *netns) remove() {
	if !n.live {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = ipCmd(ctx, "link", "del", n.hostIf)
	_ = ipCmd(ctx, "netns", "del", n.name)
	n.live = false
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
