package eventsource

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
)

// Codec encodes events and snapshot state. Its output must be JSON: the SQL
// backends store payloads and state as JSON, and other processes (the
// snapshotter worker) decode them. Implementations must be safe for
// concurrent use.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// jsonCodec is the default Codec, backed by encoding/json.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Registry maps stable event type names to Go types and decodes stored
// payloads. Create one with [NewRegistry] and fill it with [Register]; there
// is no global registry, so which events exist never depends on imports.
// A Registry is safe for concurrent use.
type Registry struct {
	codec Codec

	// types is replaced whole by Register (copy on write, under mu), so
	// the per-event lookups of a load take no lock.
	mu    sync.Mutex
	types atomic.Pointer[map[string]registration]
}

// lookup returns the registration of the event type name.
func (r *Registry) lookup(name string) (registration, bool) {
	reg, ok := (*r.types.Load())[name]
	return reg, ok
}

type registration struct {
	goType reflect.Type
	decode func(codec Codec, data []byte) (Event, error)
}

// RegistryOption configures a Registry.
type RegistryOption func(*Registry)

// WithCodec makes the registry encode and decode with c instead of
// encoding/json (lib/gojsoncodec is a faster one). Every process that
// shares a store must use compatible codecs.
func WithCodec(c Codec) RegistryOption {
	return func(r *Registry) {
		if c != nil {
			r.codec = c
		}
	}
}

// NewRegistry returns an empty registry.
func NewRegistry(opts ...RegistryOption) *Registry {
	r := &Registry{codec: jsonCodec{}}
	r.types.Store(&map[string]registration{})
	for _, o := range opts {
		o(r)
	}
	return r
}

// Register adds the event type E to r under the name E's EventType method
// returns. Decoded events are values of type E, so aggregates can apply them
// with a type switch. Registering a second Go type under a name already taken
// is an error; registering the same type twice is not.
func Register[E Event](r *Registry) error {
	var zero E
	goType := reflect.TypeFor[E]()
	name := safeEventType(zero)
	if name == "" {
		return fmt.Errorf("eventsource: register %v: EventType() of the zero value must return a non-empty, constant name", goType)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.lookup(name); ok {
		if prev.goType == goType {
			return nil
		}
		return fmt.Errorf("eventsource: register %v: event type %q is already registered to %v", goType, name, prev.goType)
	}
	types := maps.Clone(*r.types.Load())
	types[name] = registration{
		goType: goType,
		decode: func(codec Codec, data []byte) (Event, error) {
			var e E
			if err := safeUnmarshal(codec, data, &e); err != nil {
				return nil, err
			}
			return e, nil
		},
	}
	r.types.Store(&types)
	return nil
}

// MustRegister is like [Register] but panics on error. It is meant for
// program setup, where a clash is a programming error.
func MustRegister[E Event](r *Registry) {
	if err := Register[E](r); err != nil {
		panic(err)
	}
}

// safeEventType calls EventType on a zero value, turning a nil-pointer panic
// (a pointer receiver that reads fields) into an empty name.
func safeEventType(e Event) (name string) {
	defer func() {
		if recover() != nil {
			name = ""
		}
	}()
	if e == nil {
		return ""
	}
	return e.EventType()
}

// Codec returns the codec r encodes and decodes with.
func (r *Registry) Codec() Codec { return r.codec }

// Types returns the registered event type names, sorted.
func (r *Registry) Types() []string {
	return slices.Sorted(maps.Keys(*r.types.Load()))
}

// Has reports whether an event type of that name is registered.
func (r *Registry) Has(eventType string) bool {
	_, ok := r.lookup(eventType)
	return ok
}

// Encode returns e's payload. The event's type must be registered, so that
// everything written can be read back.
func (r *Registry) Encode(e Event) ([]byte, error) {
	if e == nil {
		return nil, fmt.Errorf("eventsource: encode: nil event")
	}
	name := e.EventType()
	reg, ok := r.lookup(name)
	if !ok {
		return nil, &UnknownEventTypeError{Type: name}
	}
	if got := reflect.TypeOf(e); got != reg.goType {
		return nil, fmt.Errorf("eventsource: encode %q: value of type %v, but the name is registered to %v", name, got, reg.goType)
	}
	data, err := r.codec.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("eventsource: encode %q: %w", name, err)
	}
	return data, nil
}

// Decode turns a stored payload back into the registered Go type. An
// unregistered name gives an [*UnknownEventTypeError]; a payload that does not
// decode gives a [*DecodeError] naming the event type.
func (r *Registry) Decode(eventType string, payload []byte) (Event, error) {
	reg, ok := r.lookup(eventType)
	if !ok {
		return nil, &UnknownEventTypeError{Type: eventType}
	}
	e, err := reg.decode(r.codec, payload)
	if err != nil {
		return nil, &DecodeError{What: "event " + eventType, Err: err}
	}
	return e, nil
}

// DecodeRecorded returns rec's decoded event, as r registers its type: an
// unregistered type gives an [*UnknownEventTypeError] and an undecodable
// payload a [*DecodeError], whatever the store kept. rec.Event, the value
// an in-memory store may keep from the append, is handed back only when
// it is of the Go type r registers under rec.Type (so the decode it saves
// would give the same type); otherwise the payload is decoded. A load
// therefore fails on every backend alike when the reader's registry lacks
// an event type that the writer's had.
func (r *Registry) DecodeRecorded(rec *RecordedEvent) (Event, error) {
	reg, ok := r.lookup(rec.Type)
	if !ok {
		return nil, &UnknownEventTypeError{Type: rec.Type}
	}
	if rec.Event != nil && reflect.TypeOf(rec.Event) == reg.goType {
		return rec.Event, nil
	}
	e, err := reg.decode(r.codec, rec.Payload)
	if err != nil {
		return nil, &DecodeError{What: fmt.Sprintf("event %s v%d of %s %s", rec.Type, rec.Version, rec.AggregateType, rec.AggregateID), Err: err}
	}
	return e, nil
}

// safeUnmarshal decodes with c, turning a panic in the codec (third-party
// decoders have panicked on malformed input) into an error: stored bytes
// must never crash a load.
func safeUnmarshal(c Codec, data []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("codec panicked: %v", r)
		}
	}()
	return c.Unmarshal(data, v)
}
