package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/google/uuid"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// The dispatcher never runs two groups of one aggregate at once, keeps at
// most Concurrency running, and loses no notice: follow-ups are merged and
// run after the group in flight.
func TestDispatcherSerialisesPerAggregate(t *testing.T) {
	const concurrency, groups = 3, 200
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	var (
		mu        sync.Mutex
		running   = map[uuid.UUID]int{}
		total     int
		maxTotal  int
		seen      = map[string]bool{}
		violation string
	)
	l, err := New(Config{Concurrency: concurrency, Logger: slog.New(slog.DiscardHandler)}, func(ctx context.Context, g *Group) error {
		mu.Lock()
		running[g.AggregateID]++
		total++
		if running[g.AggregateID] > 1 {
			violation = fmt.Sprintf("aggregate %s ran %d groups at once", g.AggregateID, running[g.AggregateID])
		}
		maxTotal = max(maxTotal, total)
		for _, m := range g.EventTypes {
			seen[m] = true
		}
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		running[g.AggregateID]--
		total--
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d := newDispatcher(context.Background(), l)
	for i := range groups {
		id := ids[i%len(ids)]
		d.dispatch(&Group{AggregateType: "T", AggregateID: id, HeadHint: int64(i), EventTypes: []string{fmt.Sprint(i)}, FirstCommit: time.Now()})
	}
	d.wait()
	if violation != "" {
		t.Fatal(violation)
	}
	if maxTotal > concurrency {
		t.Fatalf("%d groups ran at once, limit %d", maxTotal, concurrency)
	}
	if len(seen) != groups {
		t.Fatalf("handled %d of %d notices", len(seen), groups)
	}
	if len(d.busy) != 0 {
		t.Fatalf("%d aggregates left marked busy", len(d.busy))
	}
}

func TestGroupMerge(t *testing.T) {
	t0 := time.Now()
	g := &Group{HeadHint: 5, FirstHint: 4, Delivered: 1, FirstCommit: t0, EventTypes: []string{"A"}}
	g.merge(&Group{HeadHint: 9, FirstHint: 1, Delivered: 3, FirstCommit: t0.Add(-time.Second), EventTypes: []string{"A", "B"}})
	if g.HeadHint != 9 || g.FirstHint != 1 || g.Delivered != 3 || !g.FirstCommit.Equal(t0.Add(-time.Second)) || len(g.EventTypes) != 2 {
		t.Fatalf("merged %+v", g)
	}
}

// A read notice's group keeps the highest first version read notices
// announce and counts them; its time is not a commit's, so the group's
// first commit is the append notices' alone.
func TestGroupMergeReads(t *testing.T) {
	t0 := time.Now()
	g := &Group{HeadHint: 300, FirstHint: 1, ReadFirst: 1, Reads: 1}
	g.merge(&Group{HeadHint: 300, FirstHint: 201, ReadFirst: 201, Reads: 1})
	if g.ReadFirst != 201 || g.Reads != 2 || !g.FirstCommit.IsZero() {
		t.Fatalf("merged reads %+v", g)
	}
	g.merge(&Group{HeadHint: 301, FirstHint: 301, FirstCommit: t0})
	g.merge(&Group{HeadHint: 300, FirstHint: 300, ReadFirst: 300, Reads: 1})
	if g.HeadHint != 301 || g.FirstHint != 1 || g.ReadFirst != 300 || g.Reads != 3 || !g.FirstCommit.Equal(t0) {
		t.Fatalf("merged reads and an append %+v", g)
	}
}

func TestDefaultNakDelay(t *testing.T) {
	for n, want := range map[uint64]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: time.Minute, 100: time.Minute} {
		if got := DefaultNakDelay(n); got != want {
			t.Errorf("DefaultNakDelay(%d) = %v, want %v", n, got, want)
		}
	}
}

// BenchmarkDispatch measures the loop's own cost per group: dispatching
// it to a runner, the in-progress timer and settling, with a handler that
// does nothing, 16 at once.
//
//	go test -run '^$' -bench Dispatch -benchmem ./internal/consumer/
func BenchmarkDispatch(b *testing.B) {
	l, err := New(Config{Concurrency: 16}, func(context.Context, *Group) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]uuid.UUID, 64)
	for i := range ids {
		ids[i] = uuid.New()
	}
	d := newDispatcher(context.Background(), l)
	b.ResetTimer()
	for i := range b.N {
		d.dispatch(&Group{AggregateType: "T", AggregateID: ids[i%len(ids)], FirstCommit: time.Now()})
	}
	d.wait()
}
