package cputime_test

import (
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/cputime"
)

// TestProcessCountsWork: spinning for 50 ms of wall time adds CPU time.
func TestProcessCountsWork(t *testing.T) {
	if !cputime.Supported() {
		t.Skip("no process CPU time on this platform")
	}
	before := cputime.Process()
	x := 0
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		x++
	}
	if got := cputime.Process() - before; got <= 0 {
		t.Fatalf("50 ms of spinning (%d loops) added %v of CPU time", x, got)
	}
}
