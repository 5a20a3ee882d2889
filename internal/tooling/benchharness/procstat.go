package benchharness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times: USER_HZ, 100 on
// every Linux architecture's user-space ABI.
const clockTick = 10 * time.Millisecond

// procTimes is one process's CPU time from /proc/<pid>/stat: its own
// user + system time, and that of its waited-for children (how the
// postmaster inherits the time of the backends that exited).
type procTimes struct {
	Comm           string
	Self, Children time.Duration
}

// parseProcStat parses the text of /proc/<pid>/stat. The command name is
// in parentheses and may itself hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseProcStat(text string) (procTimes, error) {
	open, end := strings.IndexByte(text, '('), strings.LastIndexByte(text, ')')
	if open < 0 || end < open {
		return procTimes{}, fmt.Errorf("malformed /proc stat %q", text)
	}
	f := strings.Fields(text[end+1:])
	// f[0] is field 3 (state); utime, stime, cutime, cstime are fields
	// 14 to 17.
	if len(f) < 15 {
		return procTimes{}, fmt.Errorf("malformed /proc stat %q: %d fields", text, len(f)+2)
	}
	var n [4]int64
	for i := range n {
		v, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return procTimes{}, fmt.Errorf("malformed /proc stat field %d %q", 14+i, f[11+i])
		}
		n[i] = v
	}
	return procTimes{
		Comm:     text[open+1 : end],
		Self:     time.Duration(n[0]+n[1]) * clockTick,
		Children: time.Duration(n[2]+n[3]) * clockTick,
	}, nil
}

// readProcTimes reads /proc/<pid>/stat.
func readProcTimes(pid int) (procTimes, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procTimes{}, err
	}
	return parseProcStat(string(b))
}

// cpuSample is the CPU time of a set of processes at one moment, by pid
// (Self + Children).
type cpuSample map[int]time.Duration

// sampleCPU reads the CPU time of pids that are running a program named
// comm ("" any); a pid that is gone is left out.
func sampleCPU(pids []int, comm string) cpuSample {
	s := cpuSample{}
	for _, pid := range pids {
		t, err := readProcTimes(pid)
		if err != nil || (comm != "" && t.Comm != comm) {
			continue
		}
		s[pid] = t.Self + t.Children
	}
	return s
}

// cpuDelta is the CPU time the processes of after used since before; a
// process absent from before started in between and counts whole.
func cpuDelta(before, after cpuSample) time.Duration {
	var d time.Duration
	for pid, a := range after {
		d += max(0, a-before[pid])
	}
	return d
}

// machineCPU is /proc/stat's first line: busy and total time of every
// core.
type machineCPU struct{ Busy, Total time.Duration }

func parseMachineCPU(text string) (machineCPU, error) {
	line, _, _ := strings.Cut(text, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("malformed /proc/stat line %q", line)
	}
	var m machineCPU
	for i, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("malformed /proc/stat line %q", line)
		}
		d := time.Duration(v) * clockTick
		m.Total += d
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user and nice.
		switch i {
		case 3, 4: // idle, iowait
		case 8, 9:
			m.Total -= d
		default:
			m.Busy += d
		}
	}
	return m, nil
}

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	return parseMachineCPU(string(b))
}

// parseListenInodes returns the socket inodes of /proc/net/tcp (or tcp6)
// text that listen on one of ports.
func parseListenInodes(text string, ports map[int]bool) []uint64 {
	var out []uint64
	for _, line := range strings.Split(text, "\n") {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil || !ports[int(port)] {
			continue
		}
		if inode, err := strconv.ParseUint(f[9], 10, 64); err == nil && inode != 0 {
			out = append(out, inode)
		}
	}
	return out
}

// listenerPIDs returns the processes on this machine that hold a socket
// listening on one of ports (TCP, IPv4 or IPv6). Processes whose file
// descriptors cannot be read (another user's, without root) are missed.
func listenerPIDs(ports map[int]bool) []int {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, ino := range parseListenInodes(string(b), ports) {
			inodes["socket:["+strconv.FormatUint(ino, 10)+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	procs, _ := os.ReadDir("/proc")
	var out []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + p.Name() + "/fd")
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); err == nil && inodes[l] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}
