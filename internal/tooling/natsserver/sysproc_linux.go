package natsserver

import "syscall"

// sysProcAttr puts the server in its own process group (a Ctrl-C on the
// terminal reaches only its parent, which stops it) and has the kernel
// kill it if its parent dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
