//go:build unix

package natsnotice_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) the test process has used,
// the embedded nats-server's included.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
