package benchharness

import "syscall"

// replicaSysProcAttr puts a replica in its own process group (a Ctrl-C on
// the terminal reaches only the harness, which stops it) and has the
// kernel kill it if the harness dies.
func replicaSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
