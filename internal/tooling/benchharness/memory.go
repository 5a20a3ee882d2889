package benchharness

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// MemoryRow is the memory of one full replay of the largest aggregate.
type MemoryRow struct {
	Backend string
	Events  int
	// PeakHeap is the highest heap growth (live and not yet swept objects,
	// above the level after a GC just before the load) sampled every
	// 250µs during one Load, with the garbage collector at GOGC=memGOGC;
	// median over the runs, in bytes.
	PeakHeap float64
	// Allocated is how many bytes the load allocated in all (median).
	Allocated float64
	// Collected is what holding the aggregate's events at once costs: the
	// heap retained by a slice of its RecordedEvents plus their decoded
	// events (measured once).
	Collected float64
	// LoadTime is the median duration of those loads (slowed by the
	// frequent collections; not comparable with the load table).
	LoadTime time.Duration
}

// memGOGC is the GOGC the memory step runs with: collections happen after
// every few percent of heap growth, so the sampled peak shows what the
// load keeps alive rather than how much garbage the pacer let pile up.
const memGOGC = 5

const (
	metricHeap  = "/memory/classes/heap/objects:bytes"
	metricAlloc = "/gc/heap/allocs:bytes"
)

func readMetric(s []metrics.Sample) uint64 {
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// measurePeak runs fn while sampling the heap, and returns the peak growth
// above the post-GC level and the bytes allocated meanwhile.
func measurePeak(fn func() error) (peak, alloc uint64, err error) {
	old := debug.SetGCPercent(memGOGC)
	defer debug.SetGCPercent(old)
	heap := []metrics.Sample{{Name: metricHeap}}
	allocs := []metrics.Sample{{Name: metricAlloc}}
	runtime.GC()
	base := readMetric(heap)
	a0 := readMetric(allocs)
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		s := []metrics.Sample{{Name: metricHeap}}
		top := base
		t := time.NewTicker(250 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- top
				return
			case <-t.C:
				top = max(top, readMetric(s))
			}
		}
	}()
	err = fn()
	end := readMetric(heap)
	close(stop)
	top := max(<-done, end)
	return top - base, readMetric(allocs) - a0, err
}

// collectedSize measures the heap a caller would hold if it read every
// event of the aggregate into memory before applying them.
func (h *Harness) collectedSize(ctx context.Context, s eventsource.EventStore, id uuid.UUID, n int) (uint64, error) {
	heap := []metrics.Sample{{Name: metricHeap}}
	runtime.GC()
	base := readMetric(heap)
	recs := make([]eventsource.RecordedEvent, 0, n)
	evs := make([]eventsource.Event, 0, n)
	for rec, err := range s.ReadEvents(ctx, exampledomain.AccountType, id, 0) {
		if err != nil {
			return 0, err
		}
		e, err := h.reg.DecodeRecorded(&rec)
		if err != nil {
			return 0, err
		}
		recs = append(recs, rec)
		evs = append(evs, e)
	}
	runtime.GC()
	after := readMetric(heap)
	runtime.KeepAlive(recs)
	runtime.KeepAlive(evs)
	if len(recs) != n {
		return 0, fmt.Errorf("%w: read %d events, want %d", errSanity, len(recs), n)
	}
	if after < base {
		return 0, nil
	}
	return after - base, nil
}

// measureMemory is step 5 for one backend.
func (h *Harness) measureMemory(ctx context.Context, b string, s *site, plain *accountRepo, id uuid.UUID, n int) error {
	var peaks, allocs []float64
	var times []time.Duration
	for range h.cfg.Runs {
		var took time.Duration
		peak, alloc, err := measurePeak(func() error {
			t := time.Now()
			a, err := plain.Load(ctx, id)
			took = time.Since(t)
			if err == nil && a.Version() != int64(n) {
				err = fmt.Errorf("%w: loaded v%d, want v%d", errSanity, a.Version(), n)
			}
			return err
		})
		if err != nil {
			return err
		}
		times = append(times, took)
		peaks = append(peaks, float64(peak))
		allocs = append(allocs, float64(alloc))
	}
	collected, err := h.collectedSize(ctx, s.store, id, n)
	if err != nil {
		return err
	}
	row := MemoryRow{Backend: b, Events: n, PeakHeap: Median(peaks), Allocated: Median(allocs), Collected: float64(collected), LoadTime: Median(times)}
	h.report.Memory = append(h.report.Memory, row)
	h.progress("memory / %s: peak heap growth %s MB during a %s-event load (holding the events: %s MB)", b, mb(row.PeakHeap), thousands(int64(n)), mb(row.Collected))
	return nil
}
