//go:build !linux

package natsserver

import "syscall"

// sysProcAttr puts the server in its own process group (a Ctrl-C on the
// terminal reaches only its parent, which stops it).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
