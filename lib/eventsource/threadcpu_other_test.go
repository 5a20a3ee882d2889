//go:build !linux

package eventsource_test

import "time"

// threadCPU returns the wall clock where the thread's CPU time is not at
// hand.
func threadCPU() time.Duration { return time.Duration(time.Now().UnixNano()) }
