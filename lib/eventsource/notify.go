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
// Notify is called on the saving goroutine after the events are committed,
// and Save waits for it: whatever it takes is added to every save. It must
// not do network I/O inline; it should queue the notice and return within
// microseconds (natsnotice.Publisher takes about 0.1–1 µs, and at most its
// WithMaxEnqueueWait, never more than a second, when its buffer is full),
// and must take care of retries itself. An error it returns (for example
// "buffer full, notice dropped"), and even a panic, is logged and counted
// by the repository and never reaches Save's caller: the events are
// committed, and a caller who saw a failure might append them twice. ctx
// carries the save's trace context.
//
// Flush waits until every notice Notify accepted before the call is sent
// (or has failed and been counted), and returns ctx's error if ctx ends
// first; [Repository.AwaitPendingSnapshots] calls it in ModeExternal, and
// tests and demos use that to wait for the snapshotter to see a save. A
// notifier that sends inline has nothing to wait for and returns nil.
type AppendNotifier interface {
	Notify(ctx context.Context, a Appended) error
	Flush(ctx context.Context) error
}

// SnapshotRequest is a load's request for a snapshot, made when the load
// replayed at least the events [WithLoadTrigger] names. In [ModeExternal]
// the repository hands it to its notifier's [SnapshotRequester].
type SnapshotRequest struct {
	AggregateType string
	AggregateID   uuid.UUID
	// FirstVersion is the first event the load replayed: one past the
	// snapshot it started from, or 1 when it had none usable.
	// LastVersion is the version the load reached, the aggregate's head
	// as the load saw it.
	FirstVersion int64
	LastVersion  int64
	// RequestedAt is when the load asked.
	RequestedAt time.Time
}

// SnapshotRequester is an [AppendNotifier] that can also pass on a load's
// request for a snapshot to whatever takes snapshots in [ModeExternal]:
// [WithLoadTrigger] in that mode needs a notifier that implements it
// (natsnotice.Publisher does, with a notice whose reason is "read").
//
// RequestSnapshot is called on the loading goroutine after the load has
// built the aggregate, and Load waits for it: it follows Notify's rules
// (no network I/O inline, queue and return within microseconds, retries
// are its own). An error or a panic is logged and counted by the
// repository and never reaches Load's caller. ctx carries the load's
// trace context.
type SnapshotRequester interface {
	RequestSnapshot(ctx context.Context, r SnapshotRequest) error
}
