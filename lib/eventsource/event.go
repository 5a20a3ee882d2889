package eventsource

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Event is a domain event. Every event type is a Go type (usually a struct
// value) whose EventType method returns an explicit, stable name: the name is
// what is stored, so renaming the Go type never orphans stored events.
//
// EventType must return a constant that does not depend on the receiver's
// contents; a Registry calls it on the zero value.
type Event interface {
	EventType() string
}

// Metadata travels with every stored event.
type Metadata struct {
	// CorrelationID ties together every event caused by one request or flow.
	CorrelationID string `json:"correlation_id,omitempty"`
	// CausationID names the message or event that caused this one.
	CausationID string `json:"causation_id,omitempty"`
	// Attributes holds any further string metadata an application wants to keep.
	Attributes map[string]string `json:"attributes,omitempty"`
}

// IsZero reports whether m carries no metadata at all.
func (m Metadata) IsZero() bool {
	return m.CorrelationID == "" && m.CausationID == "" && len(m.Attributes) == 0
}

// Clone returns a copy of m that shares no map with it.
func (m Metadata) Clone() Metadata {
	if m.Attributes != nil {
		attrs := make(map[string]string, len(m.Attributes))
		for k, v := range m.Attributes {
			attrs[k] = v
		}
		m.Attributes = attrs
	}
	return m
}

type metadataKey struct{}

// ContextWithMetadata returns a context whose metadata [Repository.Save]
// stamps on every event it appends. Use it to carry correlation and causation
// ids from a request into the events it produces.
func ContextWithMetadata(ctx context.Context, md Metadata) context.Context {
	return context.WithValue(ctx, metadataKey{}, md)
}

// MetadataFromContext returns the metadata set by [ContextWithMetadata], or
// the zero Metadata.
func MetadataFromContext(ctx context.Context) Metadata {
	md, _ := ctx.Value(metadataKey{}).(Metadata)
	return md
}

// NewEvent is an event to append: its envelope without the fields the store
// assigns (aggregate identity and version).
type NewEvent struct {
	// ID identifies the event; unique across the store.
	ID uuid.UUID
	// Type is the event's stable type name (Event.EventType()).
	Type string
	// Payload is the encoded event (JSON).
	Payload []byte
	// Event is the decoded event. Stores that keep events in memory may hold
	// it and hand it back in RecordedEvent.Event; other stores ignore it.
	Event Event
	// Metadata is stored with the event.
	Metadata Metadata
	// OccurredAt is when the event was raised, UTC, truncated to microseconds
	// (the precision every backend keeps).
	OccurredAt time.Time
}

// RecordedEvent is a stored event with its full envelope.
type RecordedEvent struct {
	// ID identifies the event; unique across the store.
	ID uuid.UUID
	// AggregateType and AggregateID name the stream the event belongs to.
	AggregateType string
	AggregateID   uuid.UUID
	// Version is the aggregate's version after this event: 1 for the first.
	Version int64
	// Type is the event's stable type name.
	Type string
	// Payload is the encoded event, as stored.
	Payload []byte
	// Event is the decoded event when the store has it at hand (memstore);
	// nil otherwise. Readers go through [Registry.DecodeRecorded], which
	// uses it only when the registry registers Type to its Go type, and
	// otherwise decodes Payload (or reports the type unknown).
	Event Event
	// Metadata is the metadata stored with the event.
	Metadata Metadata
	// OccurredAt is when the event was raised (UTC, microsecond precision).
	OccurredAt time.Time
}

// nowMicro is the clock for event and snapshot times: UTC, truncated to the
// microsecond precision that every backend can store exactly.
func nowMicro() time.Time {
	return time.Now().UTC().Truncate(time.Microsecond)
}
