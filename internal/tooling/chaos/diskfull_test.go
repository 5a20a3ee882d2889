//go:build unix

package chaos

import (
	"testing"
	"time"
)

func TestPanicTime(t *testing.T) {
	lines := []string{
		`2026-12-06 16:39:34.412 UTC [28282] evsnap-chaos-load ERROR:  could not extend file "base/5/16394": No space left on device`,
		`2026-12-06 16:39:34.435 UTC [28282] evsnap-chaos-load PANIC:  could not write to file "pg_wal/xlogtemp.28282": No space left on device`,
		`2026-12-06 16:39:34.438 UTC [28223] LOG:  server process (PID 28282) was terminated by signal 6: Aborted`,
	}
	at, ok := panicTime(lines)
	if want := time.Date(2026, 12, 6, 16, 39, 34, 435e6, time.UTC); !ok || !at.Equal(want) {
		t.Errorf("panicTime: %v %v, want %v", at, ok, want)
	}
	if _, ok := panicTime(lines[:1]); ok {
		t.Error("panicTime found a PANIC in a log without one")
	}
}
