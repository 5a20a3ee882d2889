package eventsource

import (
	"time"

	"github.com/google/uuid"
)

// State is the constraint on an aggregate's state type S: a value that
// evolves by applying events. Apply returns the state after e and must be
// deterministic and free of side effects; dispatch on the event with a type
// switch. Apply should ignore event types it does not know, so that
// removing handling for an old event never breaks a replay.
//
// S is encoded with the registry's Codec for snapshots, so its exported
// fields must hold all of its meaning.
type State[S any] interface {
	Apply(e Event) S
}

// Aggregate is what a [Repository] loads and saves. Implement it by
// embedding [Root] in a struct and declaring the aggregate's type name and
// state schema version:
//
//	type Account struct{ eventsource.Root[AccountState] }
//
//	func (*Account) AggregateType() string { return "Account" }
//	func (*Account) SchemaVersion() int    { return 1 }
//
// The unexported methods come from Root; an Aggregate cannot be implemented
// without it.
type Aggregate interface {
	// AggregateType returns the stable type name stored with events and
	// snapshots. It must be a constant.
	AggregateType() string
	// SchemaVersion returns the version of the state's encoded form. Bump it
	// whenever a change to the state type makes older snapshots unusable;
	// loads then ignore those snapshots and replay the events. It runs from
	// 1 to [MaxSchemaVersion]; NewRepository refuses other values.
	SchemaVersion() int

	rootCore() *core
	applyEvent(e Event)
	exportState(c Codec) ([]byte, error)
	restoreState(c Codec, data []byte) error
	resetState()
}

// core is the non-generic part of Root.
type core struct {
	id      uuid.UUID
	version int64
	// lastEventID is the id of the stored event at version: from the
	// snapshot or the events a load read, or the last event a save
	// appended. Snapshots record it (Snapshot.EventID). It is nil for an
	// aggregate built with LoadFromHistory, which cannot be snapshotted.
	lastEventID uuid.UUID
	// pending are raised but not yet saved, in order.
	pending []pendingEvent
	// snapshotVersion is the version of the latest snapshot this instance
	// knows to be stored (loaded from, or written by a save); 0 for none.
	snapshotVersion int64
	// fromSnapshot and replayed describe how the instance was loaded.
	fromSnapshot bool
	replayed     int64
}

type pendingEvent struct {
	id         uuid.UUID
	event      Event
	occurredAt time.Time
}

// Root is the embeddable aggregate root for state type S. It tracks the
// aggregate's id, version, state and the events raised since the last save.
// A Root is not safe for concurrent use: load an aggregate per command.
type Root[S State[S]] struct {
	c     core
	state S
}

// ID returns the aggregate's id.
func (r *Root[S]) ID() uuid.UUID { return r.c.id }

// Version returns the aggregate's version including raised, unsaved events.
func (r *Root[S]) Version() int64 { return r.c.version }

// CommittedVersion returns the version of the aggregate as last loaded or
// saved: Version minus the unsaved events.
func (r *Root[S]) CommittedVersion() int64 { return r.c.version - int64(len(r.c.pending)) }

// NextVersion returns the version the next raised event will get.
func (r *Root[S]) NextVersion() int64 { return r.c.version + 1 }

// State returns the current state.
func (r *Root[S]) State() S { return r.state }

// Raise applies e to the state and records it to be appended by the next
// save. Validate commands before raising: an event is a fact.
func (r *Root[S]) Raise(e Event) {
	if e == nil {
		panic("eventsource: Raise(nil)")
	}
	r.state = r.state.Apply(e)
	r.c.version++
	at := nowMicro()
	r.c.pending = append(r.c.pending, pendingEvent{id: newEventID(at), event: e, occurredAt: at})
}

// Uncommitted returns the events raised since the last save, in order.
func (r *Root[S]) Uncommitted() []Event {
	out := make([]Event, len(r.c.pending))
	for i, p := range r.c.pending {
		out[i] = p.event
	}
	return out
}

// LoadFromHistory applies already-stored events, advancing the version by
// one per event without recording them. Tests can use it to build an
// aggregate in a known state. The events carry no stored ids, so such an
// aggregate cannot be snapshotted until a save appends events of its own
// (a snapshot names the stored event at its version: Snapshot.EventID).
func (r *Root[S]) LoadFromHistory(events ...Event) {
	for _, e := range events {
		r.applyEvent(e)
	}
	r.c.lastEventID = uuid.Nil
}

// SnapshotVersion returns the version of the latest snapshot this instance
// knows to be stored: the one it was loaded from or the last one a save
// wrote. 0 means none.
func (r *Root[S]) SnapshotVersion() int64 { return r.c.snapshotVersion }

// LoadedFromSnapshot reports whether the last load started from a snapshot,
// and how many events it replayed on top.
func (r *Root[S]) LoadedFromSnapshot() (fromSnapshot bool, eventsReplayed int64) {
	return r.c.fromSnapshot, r.c.replayed
}

func (r *Root[S]) rootCore() *core { return &r.c }

func (r *Root[S]) applyEvent(e Event) {
	r.state = r.state.Apply(e)
	r.c.version++
}

func (r *Root[S]) exportState(c Codec) ([]byte, error) {
	return c.Marshal(r.state)
}

// restoreState replaces the state with the one data encodes. It decodes
// into the zeroed state in place (a copy would be one more allocation per
// load); on failure the state is left zero.
func (r *Root[S]) restoreState(c Codec, data []byte) error {
	r.resetState()
	if err := safeUnmarshal(c, data, &r.state); err != nil {
		r.resetState()
		return err
	}
	return nil
}

func (r *Root[S]) resetState() {
	var zero S
	r.state = zero
}

// rootHooks is the part of Aggregate that Root provides. The assertion
// below keeps Root implementing it (and tells linters the methods are used).
type rootHooks interface {
	rootCore() *core
	applyEvent(e Event)
	exportState(c Codec) ([]byte, error)
	restoreState(c Codec, data []byte) error
	resetState()
}

type noState struct{}

func (s noState) Apply(Event) noState { return s }

var _ rootHooks = (*Root[noState])(nil)
