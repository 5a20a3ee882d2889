package eventsource

import (
	"context"
	"time"
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
