//go:build unix && !linux

package chaos

import "syscall"

// sysProcAttr puts a child in its own process group (a Ctrl-C on the
// terminal reaches only the suite, which stops the children itself).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// DieWithParent does nothing outside Linux.
func DieWithParent() {}
