package benchharness

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// cgroupSetup is where this machine's CPU controller lives: cgroup v1's
// cpu hierarchy (cpu.cfs_quota_us, cpu.cfs_period_us) with cpuacct for the
// usage (often mounted together as cpu,cpuacct, separately on some
// machines), or cgroup v2's unified hierarchy (cpu.max, cpu.stat).
type cgroupSetup struct {
	V2 bool
	// CPU is the v1 cpu hierarchy's mount point, or the v2 mount point.
	CPU string
	// Acct is the v1 cpuacct hierarchy's mount point ("" when there is
	// none: the usage then comes from the process's rusage); on v2 the
	// same as CPU.
	Acct string
}

// String says which interface the quota goes through.
func (c cgroupSetup) String() string {
	if c.V2 {
		return "cgroup v2 (" + c.CPU + ", cpu.max)"
	}
	s := "cgroup v1 (" + c.CPU + ", cpu.cfs_quota_us / cpu.cfs_period_us"
	if c.Acct != "" {
		s += "; usage from " + c.Acct + " cpuacct.usage"
	}
	return s + ")"
}

// parseMountinfo finds the cgroup CPU controller in the text of
// /proc/self/mountinfo. A v1 hierarchy with the cpu controller wins (on a
// hybrid machine the controller is bound there and absent from v2);
// otherwise a cgroup2 mount whose cgroup.controllers, as controllers
// reads it, lists cpu.
func parseMountinfo(text string, controllers func(mount string) string) (cgroupSetup, error) {
	var v2 []string
	var c cgroupSetup
	for line := range strings.SplitSeq(text, "\n") {
		// id parent major:minor root mount options [optional...] - fstype source super
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 1 {
			continue
		}
		mount := unescapeMount(f[4])
		switch g[0] {
		case "cgroup":
			if len(g) < 3 {
				continue
			}
			opts := strings.Split(g[2], ",")
			if slices.Contains(opts, "cpu") && c.CPU == "" {
				c.CPU = mount
			}
			if slices.Contains(opts, "cpuacct") && c.Acct == "" {
				c.Acct = mount
			}
		case "cgroup2":
			v2 = append(v2, mount)
		}
	}
	if c.CPU != "" {
		return c, nil
	}
	for _, m := range v2 {
		if slices.Contains(strings.Fields(controllers(m)), "cpu") {
			return cgroupSetup{V2: true, CPU: m, Acct: m}, nil
		}
	}
	return cgroupSetup{}, errors.New("no cgroup CPU controller: neither a cgroup v1 hierarchy with cpu nor a cgroup v2 mount listing cpu in cgroup.controllers")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// detectCgroups finds the CPU controller and checks that this process may
// create cgroups under it (root, or a delegated hierarchy).
func detectCgroups() (cgroupSetup, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return cgroupSetup{}, fmt.Errorf("cgroups: %w (Linux only)", err)
	}
	c, err := parseMountinfo(string(b), func(m string) string {
		b, _ := os.ReadFile(filepath.Join(m, "cgroup.controllers"))
		return string(b)
	})
	if err != nil {
		return c, err
	}
	probe := filepath.Join(c.CPU, "evsnap-bench-probe-"+randomHex(4))
	if err := os.Mkdir(probe, 0o755); err != nil {
		who := "this user"
		if os.Geteuid() != 0 {
			who = "a user other than root"
		}
		return c, fmt.Errorf("cannot create a cgroup under %s as %s: %w", c.CPU, who, err)
	}
	_ = os.Remove(probe)
	return c, nil
}

// cgroupParent is one directory per run under each hierarchy, holding the
// replicas' cgroups.
type cgroupParent struct {
	setup cgroupSetup
	dirs  []string // the parent under CPU (and Acct when separate)
}

// newCgroupParent creates evsnap-bench-<random> under the hierarchies.
// On v2 it enables the cpu controller for its children.
func (c cgroupSetup) newCgroupParent() (*cgroupParent, error) {
	name := "evsnap-bench-" + randomHex(4)
	p := &cgroupParent{setup: c}
	roots := []string{c.CPU}
	if !c.V2 && c.Acct != "" && c.Acct != c.CPU {
		roots = append(roots, c.Acct)
	}
	for _, r := range roots {
		d := filepath.Join(r, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			_ = p.remove()
			return nil, err
		}
		p.dirs = append(p.dirs, d)
	}
	if c.V2 {
		for _, d := range []string{c.CPU, p.dirs[0]} {
			if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
				_ = p.remove()
				return nil, fmt.Errorf("enable the cpu controller in %s: %w", d, err)
			}
		}
	}
	return p, nil
}

// remove removes the parent (its children must be removed first).
func (p *cgroupParent) remove() error {
	var errs []error
	for _, d := range p.dirs {
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroup is one replica's cgroup: a CPU quota, and its usage.
type cgroup struct {
	v2      bool
	cpu     string // directory in the cpu hierarchy
	acct    string // directory in the cpuacct hierarchy ("" none; v2: cpu)
	created []string
}

// cgroupQuota returns the quota and period files' values for cpus CPUs
// per period: cgroup v1 wants microseconds of quota per period, at least
// 1 ms.
func cgroupQuota(cpus float64, period time.Duration) (quotaUS, periodUS int64) {
	periodUS = period.Microseconds()
	quotaUS = max(1000, int64(math.Round(cpus*float64(periodUS))))
	return quotaUS, periodUS
}

// child creates the cgroup name with a quota of cpus CPUs per period.
func (p *cgroupParent) child(name string, cpus float64, period time.Duration) (*cgroup, error) {
	g := &cgroup{v2: p.setup.V2}
	for i, d := range p.dirs {
		dir := filepath.Join(d, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			_ = g.remove()
			return nil, err
		}
		g.created = append(g.created, dir)
		if i == 0 {
			g.cpu = dir
		} else {
			g.acct = dir
		}
	}
	if g.v2 {
		g.acct = g.cpu
	} else if p.setup.Acct == p.setup.CPU {
		g.acct = g.cpu
	}
	quota, per := cgroupQuota(cpus, period)
	var err error
	if g.v2 {
		err = os.WriteFile(filepath.Join(g.cpu, "cpu.max"), fmt.Appendf(nil, "%d %d", quota, per), 0)
	} else {
		// The period first: a quota is checked against the current period.
		if err = os.WriteFile(filepath.Join(g.cpu, "cpu.cfs_period_us"), fmt.Appendf(nil, "%d", per), 0); err == nil {
			err = os.WriteFile(filepath.Join(g.cpu, "cpu.cfs_quota_us"), fmt.Appendf(nil, "%d", quota), 0)
		}
	}
	if err != nil {
		_ = g.remove()
		return nil, fmt.Errorf("set the CPU quota of %s: %w", g.cpu, err)
	}
	return g, nil
}

// procsFiles are the cgroup.procs files a process writes its pid to, to
// join the cgroup in every hierarchy.
func (g *cgroup) procsFiles() []string {
	out := []string{filepath.Join(g.cpu, "cgroup.procs")}
	if g.acct != "" && g.acct != g.cpu {
		out = append(out, filepath.Join(g.acct, "cgroup.procs"))
	}
	return out
}

// joinScript is a /bin/sh script that writes its own pid to every file
// before "--", then execs the command after it: the program runs inside
// the cgroup from its first instruction.
const joinScript = `while [ "$1" != "--" ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"`

// command returns the argv that runs argv inside g.
func (g *cgroup) command(argv ...string) []string {
	out := append([]string{"/bin/sh", "-c", joinScript, "sh"}, g.procsFiles()...)
	return append(append(out, "--"), argv...)
}

// usage returns the CPU time the cgroup's processes used (ok false when
// this machine's cgroups do not account it).
func (g *cgroup) usage() (d time.Duration, ok bool, err error) {
	if g.acct == "" {
		return 0, false, nil
	}
	if g.v2 {
		st, err := readKeyValues(filepath.Join(g.acct, "cpu.stat"))
		if err != nil {
			return 0, false, err
		}
		return time.Duration(st["usage_usec"]) * time.Microsecond, true, nil
	}
	b, err := os.ReadFile(filepath.Join(g.acct, "cpuacct.usage"))
	if err != nil {
		return 0, false, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(n), err == nil, err
}

// throttling returns the enforcement periods in which the cgroup ran and
// those in which it ran out of quota (cpu.stat's nr_periods,
// nr_throttled).
func (g *cgroup) throttling() (periods, throttled int64, err error) {
	st, err := readKeyValues(filepath.Join(g.cpu, "cpu.stat"))
	if err != nil {
		return 0, 0, err
	}
	return st["nr_periods"], st["nr_throttled"], nil
}

// remove removes the cgroup (its processes must have exited).
func (g *cgroup) remove() error {
	var errs []error
	for _, d := range g.created {
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	g.created = nil
	return errors.Join(errs...)
}

// readKeyValues reads a "key value" per line file such as cpu.stat.
func readKeyValues(path string) (map[string]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseKeyValues(string(b)), nil
}

func parseKeyValues(text string) map[string]int64 {
	out := map[string]int64{}
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}
