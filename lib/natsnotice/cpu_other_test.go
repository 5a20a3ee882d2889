//go:build !unix

package natsnotice_test

import "time"

// processCPU is not measured on this platform: the cpu-µs/notice metrics
// read 0.
func processCPU() time.Duration { return 0 }
