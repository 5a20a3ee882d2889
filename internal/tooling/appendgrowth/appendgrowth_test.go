package appendgrowth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// A save that pays for periodic work (a checkpoint) in the last window
// moves the mean per event, not the typical save. (The saves' durations
// are given, so that the machine's load cannot move them.)
func TestStreamTypicalIgnoresOneSlowSave(t *testing.T) {
	sizes := []int{1000, 10000}
	saves := make([]time.Duration, 10000/Save)
	for i := range saves {
		saves[i] = time.Millisecond
	}
	saves[9500/Save] = 6 * time.Millisecond // one save of the last window's ten
	res := summarize(sizes, saves)
	// The last window: nine saves of 1 ms and one of 6 ms, 15 ms for
	// 1,000 events against 10 ms.
	if r := res.Ratio(sizes); r != 1.5 {
		t.Errorf("mean ratio %.3f, want 1.5", r)
	}
	if r := res.TypicalRatio(sizes); r != 1 {
		t.Errorf("typical ratio %.3f, want 1", r)
	}
	if res.Total != 105*time.Millisecond {
		t.Errorf("total %v, want 105ms", res.Total)
	}
	if res.Slowest[10000] < 6*time.Millisecond || res.Slowest[1000] >= 6*time.Millisecond {
		t.Errorf("slowest saves %v at 1,000 and %v at 10,000, want the 6 ms one only in the last window", res.Slowest[1000], res.Slowest[10000])
	}
}

// Stream writes the stream in saves of Save events, in order, up to the
// largest size, and stops at the first failed save, naming it.
func TestStreamWritesInOrderAndStopsAtAFailure(t *testing.T) {
	var froms []int
	write := func(_ context.Context, from int, events []eventsource.NewEvent) error {
		if len(events) != Save {
			t.Errorf("save at %d: %d events, want %d", from, len(events), Save)
		}
		froms = append(froms, from)
		return nil
	}
	res, err := Stream(context.Background(), write, uuid.New, []int{1000, 2000})
	if err != nil {
		t.Fatal(err)
	}
	if len(froms) != 20 || froms[0] != 0 || froms[19] != 1900 {
		t.Errorf("saves from %v, want 0, 100, ..., 1900", froms)
	}
	if len(res.PerEvent) != 2 || len(res.Typical) != 2 {
		t.Errorf("result %+v, want a figure per size", res)
	}
	boom := errors.New("boom")
	_, err = Stream(context.Background(), func(_ context.Context, from int, _ []eventsource.NewEvent) error {
		if from == 300 {
			return boom
		}
		return nil
	}, uuid.New, []int{1000})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "save at version 300") {
		t.Errorf("error %v, want the save at version 300's", err)
	}
}
