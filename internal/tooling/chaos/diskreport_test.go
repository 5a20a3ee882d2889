package chaos

import (
	"testing"
	"time"
)

// A save that failed with PostgreSQL's disk-full error is explained while
// the disk was full (and a moment after), and by nothing else; any other
// error while the disk was full is not explained by it.
func TestUnexplainedByDiskFull(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	windows := []Window{{From: t0, To: t0.Add(3 * time.Second)}}
	const enospc = `pgstore: append to Account x: ERROR: could not extend file "base/16384/16390": No space left on device (SQLSTATE 53100)`
	failed := func(at time.Duration, err string) FailedSave {
		return FailedSave{Save: Save{Type: "Account", ID: at.String()}, At: t0.Add(at), Err: err}
	}
	for _, tc := range []struct {
		f         FailedSave
		explained bool
	}{
		{failed(0, enospc), true},
		{failed(2*time.Second, enospc), true},
		{failed(3*time.Second+500*time.Millisecond, enospc), true}, // within the grace
		{failed(5*time.Second, enospc), false},                     // after the disk was freed
		{failed(-time.Second, enospc), false},                      // before it was full
		{failed(time.Second, "pgstore: append: ERROR: could not write block 7 of temporary file: No space left on device"), true},
		{failed(time.Second, "pgstore: append: ERROR: disk full (SQLSTATE 53100)"), true},
		{failed(time.Second, "pgstore: append: unexpected EOF"), false},
		{failed(time.Second, "pgstore: append: context deadline exceeded"), false},
	} {
		got := UnexplainedByDiskFull([]FailedSave{tc.f}, windows, diskFullGrace)
		if explained := len(got) == 0; explained != tc.explained {
			t.Errorf("failed %v after the fill with %q: explained %v, want %v", tc.f.At.Sub(t0), tc.f.Err, explained, tc.explained)
		}
	}
	if got := UnexplainedByDiskFull([]FailedSave{failed(time.Second, enospc)}, nil, diskFullGrace); len(got) != 1 {
		t.Errorf("with no disk-full window a disk-full error was explained")
	}
}
