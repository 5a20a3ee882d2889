package eventsource

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// SetClock replaces the clock that rate-limits r's log lines and its load
// trigger, so tests decide when an interval has passed instead of racing
// the wall clock.
func SetClock[T any, PT AggregatePtr[T]](r *Repository[T, PT], now func() time.Time) { r.now = now }

// LoadTriggerCapacity is how many aggregates a load trigger remembers per
// interval.
const LoadTriggerCapacity = loadTriggerCapacity

// LoadTriggerRemembered returns how many aggregates r's load trigger
// remembers (0 without one).
func LoadTriggerRemembered[T any, PT AggregatePtr[T]](r *Repository[T, PT]) int {
	if r.trigger == nil {
		return 0
	}
	return r.trigger.remembered()
}

// AskIfReplayedEnough runs r's load-path hook on a, as a load that built
// a does.
func AskIfReplayedEnough[T any, PT AggregatePtr[T]](ctx context.Context, r *Repository[T, PT], a PT) {
	r.askIfReplayedEnough(ctx, a)
}

// LoadUninstrumented is r.Load without its span and metrics: what
// BenchmarkTelemetry compares the instrumented load with.
func LoadUninstrumented[T any, PT AggregatePtr[T]](ctx context.Context, r *Repository[T, PT], id uuid.UUID) (PT, error) {
	a, err := r.load(ctx, id)
	if err != nil {
		return nil, err
	}
	r.askIfReplayedEnough(ctx, a)
	return a, nil
}

// SaveUninstrumented is r.Save without its span: what BenchmarkTelemetry
// compares the instrumented save with.
func SaveUninstrumented[T any, PT AggregatePtr[T]](ctx context.Context, r *Repository[T, PT], a PT) error {
	if due, err := r.saveDue(a); !due {
		return err
	}
	_, err := r.commit(ctx, a)
	return err
}

// RaceEnabled reports whether the race detector is on: allocation counts
// are not exact then (sync.Pool drops items at random).
const RaceEnabled = raceEnabled
