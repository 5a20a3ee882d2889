package eventsource

import "time"

// SetClock replaces the clock that rate-limits r's log lines, so tests
// decide when an interval has passed instead of racing the wall clock.
func SetClock[T any, PT AggregatePtr[T]](r *Repository[T, PT], now func() time.Time) { r.now = now }
