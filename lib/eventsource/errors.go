package eventsource

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Sentinel errors. Match them with errors.Is; the typed errors below match
// the sentinel of their kind and carry the details.
var (
	// ErrConcurrencyConflict: an append's expected version did not match the
	// stream. Nothing was committed. Reload and retry the command.
	ErrConcurrencyConflict = errors.New("eventsource: concurrency conflict")
	// ErrAggregateNotFound: no events and no snapshot exist for the aggregate.
	ErrAggregateNotFound = errors.New("eventsource: aggregate not found")
	// ErrUnknownEventType: a stored or raised event's type is not registered.
	ErrUnknownEventType = errors.New("eventsource: unknown event type")
	// ErrDecode: stored bytes (an event payload or snapshot state) could not
	// be decoded.
	ErrDecode = errors.New("eventsource: decode failed")
	// ErrInvalidOption: a constructor was given an invalid option.
	ErrInvalidOption = errors.New("eventsource: invalid option")
	// ErrClosed: the repository was closed.
	ErrClosed = errors.New("eventsource: repository closed")
	// ErrInvalidArgument: a method was called with an argument it cannot
	// accept (a nil aggregate, a negative version, an empty type name, ...).
	ErrInvalidArgument = errors.New("eventsource: invalid argument")
	// ErrSnapshotTooLarge: an encoded state exceeds the repository's
	// maximum (WithMaxSnapshotBytes); no snapshot is stored.
	ErrSnapshotTooLarge = errors.New("eventsource: snapshot state too large")
	// ErrCorruptStream: a stream read back with a gap or a version out of
	// order. It points at a broken store, never at a caller mistake.
	ErrCorruptStream = errors.New("eventsource: corrupt event stream")
	// ErrDuplicateEventID: an append held an event id that is already
	// stored (in any stream: event ids are unique across a store) or that
	// appears twice in the append. Nothing was committed. It wraps
	// ErrInvalidArgument, so every error that matches it also matches
	// ErrInvalidArgument: retrying the same append cannot succeed.
	ErrDuplicateEventID = fmt.Errorf("%w: duplicate event id", ErrInvalidArgument)
)

// ConflictError is the typed form of [ErrConcurrencyConflict]. Stores return
// it from Append; the repository passes it through Save.
type ConflictError struct {
	AggregateType string
	AggregateID   uuid.UUID
	// Expected is the version the caller expected the stream to be at
	// (0 for "must not exist").
	Expected int64
	// Actual is the stream's version when the append was refused, or -1
	// when the store could not read it (the error text then says why).
	Actual int64
}

// Error implements error.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventsource: concurrency conflict on %s %s: expected version %d, stream is at %d",
		e.AggregateType, e.AggregateID, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConcurrencyConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConcurrencyConflict }

// DuplicateEventIDError is the typed form of [ErrDuplicateEventID], which
// every store returns from Append for an event id that is already stored or
// repeated within the append; nothing is committed then. It matches both
// [ErrDuplicateEventID] and [ErrInvalidArgument] with errors.Is (the
// [EventStore.Append] contract counts a duplicate id among the invalid
// arguments, and [IsPermanent] relies on that).
type DuplicateEventIDError struct {
	// EventID is the duplicated event id.
	EventID uuid.UUID
	// AggregateType and AggregateID name the stream of the refused append
	// (not the stream that holds the stored event, which may be another).
	AggregateType string
	AggregateID   uuid.UUID
	// InBatch is true when the append itself held EventID twice, false
	// when EventID was already stored.
	InBatch bool
}

// Error implements error.
func (e *DuplicateEventIDError) Error() string {
	where := "is already stored"
	if e.InBatch {
		where = "appears twice in the append"
	}
	return fmt.Sprintf("eventsource: duplicate event id in append to %s %s: %s %s; nothing was committed",
		e.AggregateType, e.AggregateID, e.EventID, where)
}

// Is makes errors.Is(err, ErrDuplicateEventID) and errors.Is(err,
// ErrInvalidArgument) true.
func (e *DuplicateEventIDError) Is(target error) bool {
	return target == ErrDuplicateEventID || target == ErrInvalidArgument
}

// UnknownEventTypeError is the typed form of [ErrUnknownEventType].
type UnknownEventTypeError struct {
	// Type is the event type name that has no registration.
	Type string
}

// Error implements error.
func (e *UnknownEventTypeError) Error() string {
	return fmt.Sprintf("eventsource: unknown event type %q: register it with eventsource.Register", e.Type)
}

// Is makes errors.Is(err, ErrUnknownEventType) true.
func (e *UnknownEventTypeError) Is(target error) bool { return target == ErrUnknownEventType }

// DecodeError is the typed form of [ErrDecode].
type DecodeError struct {
	// What names what failed to decode, e.g. "event MoneyDeposited v7 of Account 3f…".
	What string
	Err  error
}

// Error implements error.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("eventsource: decode %s: %v", e.What, e.Err)
}

// Unwrap returns the codec's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrDecode) true.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }

// IsPermanent reports whether err can never succeed on retry: an unknown
// event type, undecodable data, a corrupt stream, a state too large to
// snapshot or an invalid argument.
// Everything else (I/O, timeouts, conflicts) may succeed later. The
// snapshotter uses it to choose between retrying a notice and terminating it.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrUnknownEventType) ||
		errors.Is(err, ErrDecode) ||
		errors.Is(err, ErrCorruptStream) ||
		errors.Is(err, ErrSnapshotTooLarge) ||
		errors.Is(err, ErrInvalidArgument)
}
