package eventsource

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Appended describes one committed append. In [ModeExternal] the repository
// hands one to its [AppendNotifier] after every successful Save.
type Appended struct {
	AggregateType string
	AggregateID   uuid.UUID
	// FirstVersion and LastVersion are the versions of the first and last
	// event appended.
	FirstVersion int64
	LastVersion  int64
	// EventTypes are the appended events' types, in order (repeats kept).
	EventTypes []string
	// CommittedAt is when the store committed the append.
	CommittedAt time.Time
}

// AppendNotifier receives committed appends in [ModeExternal].
//
// Notify is called on the saving goroutine after the events are committed.
// It must return quickly (within a bound the implementation documents, e.g.
// by buffering) and must take care of retries itself. An error it returns
// (for example "buffer full, notice dropped") is logged and counted by the
// repository and never turns the save into an error: the events are
// committed. ctx carries the save's trace context.
type AppendNotifier interface {
	Notify(ctx context.Context, a Appended) error
}
