package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// labPrefix is the first two octets of every lab's addresses: a run takes
// one /24 of 10.233.0.0/16 that no address, route or rule on the machine
// uses yet.
const labPrefix = "10.233."

// The priorities of the lab's blackhole rules, before the main table
// (32766) and after the local one (0): pairRulePref for a cut between two
// addresses (from X to Y), oneRulePref for an address cut off from all
// (from X, to X). They differ because the kernel matches a rule to add or
// delete loosely, its unset selectors as wildcards: at one priority,
// "from X" would count as existing, and be deleted, in place of
// "from X to Y".
const (
	pairRulePref = "1033"
	oneRulePref  = "1032"
)

// lab is the run's own network, for the partitions: a network namespace
// per process the suite cuts off (each nats-server, each worker, the load,
// and the Toxiproxy that carries the workers' links), each joined to the
// host by a veth pair with a /30 of the run's /24. The host routes between
// the pairs: forwarding is on for the pairs' host ends only (the host's
// net.ipv4.ip_forward is left as it is, and the setting goes with the
// interfaces), and each namespace has a route to the /24 and nothing else,
// so no packet leaves the lab. A cut is a set of policy routing rules
// (ip rule add from A to B blackhole): the host drops the packets it
// would forward between A and B in silence, with no reset and no ICMP, as
// on a cut cable, and deleting the rules heals it. The processes and
// their connections stay up. Everything is removed by [lab.remove].
type lab struct {
	tag    string // random hex, in every name the lab creates
	subnet int    // the third octet: labPrefix<subnet>.0/24
	nodes  []*labNode

	mu    sync.Mutex
	rules map[string]int // rule (its selector) -> cuts that hold it
}

// labNode is one namespace of the lab.
type labNode struct {
	role         string // what runs in it: links, nats-1, worker-2, load
	name         string // the namespace
	hostIf, nsIf string
	hostIP, ip   string // the pair's two ends
	extra        []string
}

// labSkipReason says why the machine cannot have a lab ("" when it can):
// namespaces, veth pairs and rules need root and iproute2's ip.
func labSkipReason() string {
	if os.Geteuid() != 0 {
		return "network namespaces need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "network namespaces need the ip command (iproute2)"
	}
	return ""
}

// newLab creates a namespace per role, in order (the first pair's host
// end is the lab's address of the host: [lab.hostAddr]), and extra
// addresses for the roles that have them (more /32s of the namespace,
// routed by the host). On error it removes what it made.
func newLab(ctx context.Context, roles []string, extra map[string]int) (*lab, error) {
	if why := labSkipReason(); why != "" {
		return nil, errors.New(why)
	}
	if len(roles) == 0 || len(roles) > 48 {
		return nil, fmt.Errorf("lab: %d namespaces; want 1 to 48", len(roles))
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	used, err := labSubnetsInUse(ctx)
	if err != nil {
		return nil, err
	}
	subnet, err := pickSubnet(used)
	if err != nil {
		return nil, err
	}
	l := &lab{tag: hex.EncodeToString(b[:]), subnet: subnet, rules: map[string]int{}}
	nextExtra := 200
	for i, role := range roles {
		n := &labNode{
			role:   role,
			name:   "evsnap-chaos-" + l.tag + "-" + role,
			hostIf: fmt.Sprintf("ev%s%dh", l.tag, i),
			nsIf:   fmt.Sprintf("ev%s%dn", l.tag, i),
			hostIP: l.addr(4*i + 1),
			ip:     l.addr(4*i + 2),
		}
		for range extra[role] {
			n.extra = append(n.extra, l.addr(nextExtra))
			nextExtra++
		}
		l.nodes = append(l.nodes, n)
		if err := l.create(ctx, n); err != nil {
			l.remove()
			return nil, fmt.Errorf("lab: namespace %s: %w", n.name, err)
		}
	}
	return l, nil
}

// prefix is the lab's addresses' first three octets, with the dot.
func (l *lab) prefix() string { return labPrefix + strconv.Itoa(l.subnet) + "." }

// addr is the lab's address with last octet i.
func (l *lab) addr(i int) string { return l.prefix() + strconv.Itoa(i) }

// cidr is the lab's /24.
func (l *lab) cidr() string { return l.addr(0) + "/24" }

// hostAddr is an address of the host that every namespace reaches (the
// first pair's host end): where the host's own servers listen for the
// lab (PostgreSQL).
func (l *lab) hostAddr() string { return l.nodes[0].hostIP }

// node returns the namespace of role (nil if there is none).
func (l *lab) node(role string) *labNode {
	if l == nil {
		return nil
	}
	for _, n := range l.nodes {
		if n.role == role {
			return n
		}
	}
	return nil
}

func (l *lab) create(ctx context.Context, n *labNode) error {
	steps := [][]string{
		{"netns", "add", n.name},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf, "netns", n.name},
		{"addr", "add", n.hostIP + "/30", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.name, "addr", "add", n.ip + "/30", "dev", n.nsIf},
		{"-n", n.name, "link", "set", n.nsIf, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
		{"-n", n.name, "route", "add", l.cidr(), "via", n.hostIP},
	}
	for _, a := range n.extra {
		steps = append(steps,
			[]string{"-n", n.name, "addr", "add", a + "/32", "dev", n.nsIf},
			[]string{"route", "add", a + "/32", "via", n.ip, "dev", n.hostIf})
	}
	for i, args := range steps {
		if err := ipCmd(ctx, args...); err != nil {
			return err
		}
		if i == 3 {
			// Packets that come in on this pair may be forwarded; the
			// setting goes with the interface.
			p := filepath.Join("/proc/sys/net/ipv4/conf", n.hostIf, "forwarding")
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				return fmt.Errorf("forwarding on %s: %w", n.hostIf, err)
			}
		}
	}
	return nil
}

// wrap returns the command line that runs path with args in the
// namespace (ip netns exec execs it, so the process keeps its pid, and
// signals reach it).
func (n *labNode) wrap(path string, args []string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.name, path}, args...)
}

// addrs are every address of the namespace.
func (n *labNode) addrs() []string { return append([]string{n.ip}, n.extra...) }

// cutRules are the rules that cut a from b both ways: for every address
// x of a and y of b, the host drops what it would forward from x to y and
// from y to x.
func cutRules(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			out = append(out, "from "+x+" to "+y, "from "+y+" to "+x)
		}
	}
	return out
}

// isolateRules are the rules that cut addrs off from everything: every
// packet the host would forward from or to them is dropped (the host's
// own packets to them fail to route).
func isolateRules(addrs []string) []string {
	var out []string
	for _, x := range addrs {
		out = append(out, "from "+x, "to "+x)
	}
	return out
}

// cut adds rules (each "from X to Y", "from X" or "to Y") as blackhole
// rules and returns what heals them. Cuts may overlap: a rule that two
// cuts hold goes when the second heals.
func (l *lab) cut(ctx context.Context, rules []string) (heal func(context.Context) error, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var added []string
	for _, r := range rules {
		if l.rules[r] == 0 {
			if err := ipCmd(ctx, ruleArgs("add", r)...); err != nil {
				for _, a := range added {
					l.rules[a]--
					if l.rules[a] == 0 {
						_ = ipCmd(context.WithoutCancel(ctx), ruleArgs("del", a)...)
					}
				}
				return nil, err
			}
		}
		l.rules[r]++
		added = append(added, r)
	}
	return func(ctx context.Context) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		var errs []error
		for _, r := range added {
			if l.rules[r] == 0 {
				continue // removed already
			}
			l.rules[r]--
			if l.rules[r] == 0 {
				if err := ipCmd(ctx, ruleArgs("del", r)...); err != nil {
					errs = append(errs, err)
				}
				delete(l.rules, r)
			}
		}
		return errors.Join(errs...)
	}, nil
}

// ruleArgs is the ip command line that adds or deletes rule.
func ruleArgs(op, rule string) []string {
	pref := oneRulePref
	if f := strings.Fields(rule); len(f) == 4 {
		pref = pairRulePref
	}
	return append(append([]string{"rule", op}, strings.Fields(rule)...), "blackhole", "pref", pref)
}

// remove deletes the rules still in place and the namespaces (with them
// the veth pairs and their settings). It is idempotent.
func (l *lab) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l.mu.Lock()
	for r := range l.rules {
		_ = ipCmd(ctx, ruleArgs("del", r)...)
	}
	l.rules = map[string]int{}
	l.mu.Unlock()
	// Any rule of the lab's /24 left over (an interrupted add).
	if out, err := exec.CommandContext(ctx, "ip", "-4", "rule", "show").Output(); err == nil {
		for _, r := range labRulesIn(string(out), l.prefix()) {
			_ = ipCmd(ctx, ruleArgs("del", r)...)
		}
	}
	for _, n := range l.nodes {
		_ = ipCmd(ctx, "link", "del", n.hostIf)
		_ = ipCmd(ctx, "netns", "del", n.name)
	}
	l.nodes = nil
}

var ruleLine = regexp.MustCompile(`^(?:` + pairRulePref + `|` + oneRulePref + `):\s+(from \S+(?: to \S+)?)\s+blackhole\s*$`)

// labRulesIn returns the lab rules in ip rule show's output whose
// addresses start with prefix ("10.233.7."), as cut takes them.
func labRulesIn(out, prefix string) []string {
	var rules []string
	for _, line := range strings.Split(out, "\n") {
		m := ruleLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || !strings.Contains(m[1], prefix) {
			continue
		}
		r := strings.TrimPrefix(m[1], "from all ") // "to X"
		rules = append(rules, r)
	}
	return rules
}

// labSubnetsInUse returns the third octets of the 10.233.x.0/24 networks
// that an address, a route or a rule on the machine uses.
func labSubnetsInUse(ctx context.Context) (map[int]bool, error) {
	used := map[int]bool{}
	for _, args := range [][]string{{"-4", "addr", "show"}, {"-4", "route", "show", "table", "all"}, {"-4", "rule", "show"}} {
		out, err := exec.CommandContext(ctx, "ip", args...).Output()
		if err != nil {
			return nil, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for k := range subnetsIn(string(out)) {
			used[k] = true
		}
	}
	return used, nil
}

var labAddr = regexp.MustCompile(`\b10\.233\.(\d{1,3})\.`)

// subnetsIn returns the third octets of the 10.233.x addresses in s.
func subnetsIn(s string) map[int]bool {
	out := map[int]bool{}
	for _, m := range labAddr.FindAllStringSubmatch(s, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil && n < 256 {
			out[n] = true
		}
	}
	return out
}

// pickSubnet draws a third octet that used does not hold.
func pickSubnet(used map[int]bool) (int, error) {
	var free []int
	for i := range 256 {
		if !used[i] {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return 0, fmt.Errorf("lab: every /24 of %s0.0/16 is in use", labPrefix)
	}
	i, err := rand.Int(rand.Reader, big.NewInt(int64(len(free))))
	if err != nil {
		return 0, err
	}
	return free[i.Int64()], nil
}

// String lists the lab's namespaces: role and address.
func (l *lab) String() string {
	parts := make([]string, len(l.nodes))
	for i, n := range l.nodes {
		parts[i] = n.role + " " + strings.Join(n.addrs(), "+")
	}
	return l.cidr() + ": " + strings.Join(parts, ", ")
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
