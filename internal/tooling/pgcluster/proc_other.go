//go:build unix && !linux

package pgcluster

import "syscall"

// sysProcAttr runs a child as cred (nil: as the caller) in its own
// process group.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// Processes cannot find the cluster's processes outside Linux (there is
// no /proc to read their working directories from): it finds none.
func (c *Cluster) Processes() []int { return nil }
