package natsnotice

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Decode parses and validates a notice. Every failure matches ErrMalformed
// and says what was wrong; Decode never panics.
//
// It is encoding/json's Unmarshal into a Notice, then [Notice.Validate],
// and returns the notice with its commit time in UTC. So, as encoding/json
// reads JSON: the whole message must be valid JSON (nested at most 10,000
// deep) with only white space after the notice; unknown fields are
// ignored; a key matches a field case-insensitively; the last of repeated
// keys wins; null leaves a field as it was (and empties the event types);
// invalid UTF-8 in strings becomes U+FFFD; a number with a fraction or an
// exponent, or out of range, is refused for an integer field. An error
// names the field that was wrong (a syntax error, the byte where the JSON
// broke); Validate's errors name the field too.
func Decode(data []byte) (Notice, error) {
	var n Notice
	if len(data) == 0 {
		return n, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	w := wireNotice{Notice: &n}
	if err := json.Unmarshal(data, &w); err != nil {
		return Notice{}, fmt.Errorf("%w: %s", ErrMalformed, jsonError(err))
	}
	n.AggregateID, n.CommittedAt = w.AggregateID.UUID, w.CommittedAt.Time
	if err := n.Validate(); err != nil {
		return Notice{}, err
	}
	n.CommittedAt = n.CommittedAt.UTC()
	return n, nil
}

// jsonError words an error of json.Unmarshal into a wireNotice: the field
// and what it wants for a value of the wrong kind, the byte where the JSON
// broke for a syntax error.
func jsonError(err error) string {
	var syntax *json.SyntaxError
	var kind *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &kind) && kind.Field == "":
		return fmt.Sprintf("the notice is a JSON %s, want an object", kind.Value)
	case errors.As(err, &kind):
		field := kind.Field[strings.LastIndexByte(kind.Field, '.')+1:]
		if field == "event_types" && kind.Type.Kind() == reflect.String {
			return fmt.Sprintf("event_types holds a JSON %s, want strings (at byte %d)", kind.Value, kind.Offset)
		}
		return fmt.Sprintf("%s is a JSON %s, want %s (at byte %d)", field, kind.Value, fieldWants[field], kind.Offset)
	}
	return err.Error() // from a field's decoder, which names the field
}

// fieldWants says what each field's JSON value must be, for errors.
var fieldWants = map[string]string{
	"v": "an integer", "aggregate_type": "a string", "aggregate_id": "a UUID string",
	"first_version": "an integer", "last_version": "an integer",
	"event_types": "a list of strings", "truncated": "true or false",
}

// wireNotice is what Decode unmarshals: the notice, with the two fields
// whose own decoders (uuid's and time's) report an error without saying
// which field it was in, read through types that add the field's name.
// encoding/json takes these over the embedded notice's fields of the same
// JSON name, being less deeply nested.
type wireNotice struct {
	*Notice
	AggregateID aggregateIDField `json:"aggregate_id"`
	CommittedAt committedAtField `json:"committed_at"`
}

// aggregateIDField reads the aggregate id.
type aggregateIDField struct{ uuid.UUID }

// UnmarshalText parses the id as uuid.UUID does; an error names the field.
func (f *aggregateIDField) UnmarshalText(b []byte) error {
	if err := f.UUID.UnmarshalText(b); err != nil {
		return fmt.Errorf("aggregate_id: %w", err)
	}
	return nil
}

// committedAtField reads the commit time.
type committedAtField struct{ time.Time }

// UnmarshalJSON parses the time as time.Time does; an error names the
// field.
func (f *committedAtField) UnmarshalJSON(b []byte) error {
	if err := f.Time.UnmarshalJSON(b); err != nil {
		return fmt.Errorf("committed_at: %w", err)
	}
	return nil
}
