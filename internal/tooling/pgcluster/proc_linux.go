package pgcluster

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// sysProcAttr runs a child as cred (nil: as the caller) in its own
// process group, and has the kernel kill it if the caller dies. Go sets
// the parent-death signal after the credentials, which would clear it.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
}

// Processes returns the pids of the cluster's processes: every process
// whose working directory is the data directory (the postmaster changes
// into it and its children inherit it). Processes the caller may not
// inspect are skipped; zombies have no working directory.
func (c *Cluster) Processes() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == c.dataDir {
			out = append(out, pid)
		}
	}
	return out
}
