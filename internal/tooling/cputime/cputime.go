// Package cputime reads the CPU time the process has used, for benchmarks
// that report CPU per operation: on a shared machine that figure moves far
// less with other load than wall-clock throughput does.
package cputime

import "time"

// Process returns the CPU time (user + system) this process has used so
// far, every goroutine's included (an embedded server's too). It returns 0
// where the platform does not say (see [Supported]).
func Process() time.Duration { return process() }

// Supported reports whether [Process] measures on this platform.
func Supported() bool { return supported }
