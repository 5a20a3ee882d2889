//go:build !linux

package benchharness

import "syscall"

// replicaSysProcAttr puts a replica in its own process group. (The
// scale-out step needs Linux cgroups and is skipped elsewhere.)
func replicaSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
