package chaos

import "syscall"

// sysProcAttr puts a child in its own process group (a Ctrl-C on the
// terminal reaches only the suite, which stops the children itself) and
// has the kernel kill it if the suite dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// DieWithParent asks the kernel to send the calling process SIGTERM when
// its parent exits, so that a suite started by `go run` shuts down (and
// cleans up) when the go command is killed.
func DieWithParent() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
}
