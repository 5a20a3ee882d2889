package natsnotice

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// FormatVersion is the version of the notice format this package writes.
// Decoders accept every version up to it and refuse newer ones with
// [ErrMalformed], so a rolling deploy never misreads a notice.
const FormatVersion = 1

// Stream and subject defaults.
const (
	// DefaultStream is the JetStream stream that holds notices.
	DefaultStream = "EVSNAP_APPENDED"
	// DefaultSubjectPrefix is the prefix of every notice subject:
	// <prefix>.<aggregate type>.<aggregate id>.
	DefaultSubjectPrefix = "evsnap.appended"
	// MaxEventTypes caps how many distinct event types a notice lists; a
	// save with more lists the first MaxEventTypes and sets Truncated.
	MaxEventTypes = 64
)

// ErrMalformed matches every error about a notice that can never be
// processed: bad JSON, a missing or invalid field, an unsupported version.
var ErrMalformed = errors.New("natsnotice: malformed notice")

// ErrInvalidAggregateType matches the error [ValidateAggregateType] returns
// for an aggregate type that cannot be one NATS subject token.
var ErrInvalidAggregateType = errors.New("natsnotice: invalid aggregate type")

// Notice is the public, versioned "events appended" message. Its JSON form
// is documented in docs/notice-format.md. It is a hint: the worker always
// snapshots the aggregate's head as the store has it.
type Notice struct {
	// Version is the format version (FormatVersion when written here).
	Version int `json:"v"`
	// AggregateType and AggregateID name the aggregate.
	AggregateType string    `json:"aggregate_type"`
	AggregateID   uuid.UUID `json:"aggregate_id"`
	// FirstVersion and LastVersion are the versions of the first and last
	// event the save appended.
	FirstVersion int64 `json:"first_version"`
	LastVersion  int64 `json:"last_version"`
	// EventTypes are the distinct event types the save appended, in order
	// of first appearance (at most MaxEventTypes).
	EventTypes []string `json:"event_types"`
	// Truncated is set when the save appended more distinct event types
	// than MaxEventTypes.
	Truncated bool `json:"truncated,omitempty"`
	// CommittedAt is when the event store committed the save (UTC); for
	// a notice with a reason, when it was made (for ReasonRead, when the
	// load asked).
	CommittedAt time.Time `json:"committed_at"`
	// Reason says why a notice was sent when not for an append: ""
	// (absent from the JSON) for an append, [ReasonRead] for a load's
	// request. When set it is a subject token like the aggregate type,
	// and the message id ends with it ([Notice.MsgID]). A reader treats a
	// reason it does not know as an append: every notice is a hint.
	Reason string `json:"reason,omitempty"`
}

// ReasonRead is the [Notice.Reason] of a notice a load sent because it
// replayed many events (eventsource.WithLoadTrigger): FirstVersion is the
// first event the load replayed (one past the snapshot it started from,
// or 1), LastVersion the head it reached, EventTypes empty. The
// snapshotter snapshots the aggregate unless a snapshot at or past
// FirstVersion is stored by then, whatever its policy says.
const ReasonRead = "read"

// FromAppended builds the notice for a committed append.
func FromAppended(a eventsource.Appended) Notice {
	n := Notice{
		Version:       FormatVersion,
		AggregateType: a.AggregateType,
		AggregateID:   a.AggregateID,
		FirstVersion:  a.FirstVersion,
		LastVersion:   a.LastVersion,
		CommittedAt:   a.CommittedAt.UTC(),
	}
	n.EventTypes, n.Truncated = appendDistinct(nil, a.EventTypes)
	return n
}

// extend folds into n the notice of the saves that directly follow it:
// their last version, their distinct event types (truncated says their
// list already was) and their commit time when it is earlier. Both ways
// of merging (Notify's absorb, the sender's coalesce) go through it.
func (n *Notice) extend(last int64, types []string, truncated bool, at time.Time) {
	var cut bool
	n.EventTypes, cut = appendDistinct(n.EventTypes, types)
	n.Truncated = n.Truncated || truncated || cut
	n.LastVersion = last
	if at.Before(n.CommittedAt) {
		n.CommittedAt = at
	}
}

// appendDistinct appends to dst the types of src that are not in dst yet,
// in order of first appearance, up to MaxEventTypes in all; it reports
// whether some did not fit.
func appendDistinct(dst, src []string) ([]string, bool) {
	for _, t := range src {
		if slices.Contains(dst, t) {
			continue
		}
		if len(dst) == MaxEventTypes {
			return dst, true
		}
		dst = append(dst, t)
	}
	return dst, false
}

// isToken reports whether s can be one literal NATS subject token as this
// package uses them: 1 to 128 of A-Z a-z 0-9 _ - (what the regular
// expression ^[A-Za-z0-9_-]{1,128}$ matches, without its cost on every
// Notify).
func isToken(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidateAggregateType reports whether typ can be used in notice subjects:
// 1 to 128 letters, digits, '_' or '-' (no '.', spaces or wildcards).
func ValidateAggregateType(typ string) error {
	if !isToken(typ) {
		return fmt.Errorf("%w %s", ErrInvalidAggregateType, badTypeDetail(typ))
	}
	return nil
}

// badTypeDetail says what is wrong with an aggregate type that is not a
// subject token, after the words "invalid aggregate type".
func badTypeDetail(typ string) string {
	return fmt.Sprintf("%q: it must be one NATS subject token: use 1-128 of A-Z a-z 0-9 _ -", typ)
}

// malformedTypeError is a notice's invalid aggregate type: it matches
// ErrMalformed and ErrInvalidAggregateType, and its text names the
// package once ("natsnotice: malformed notice: invalid aggregate type
// ..."), where wrapping one sentinel's error in the other's would repeat
// the "natsnotice: " prefix.
type malformedTypeError struct{ typ string }

func (e *malformedTypeError) Error() string {
	return ErrMalformed.Error() + ": invalid aggregate type " + badTypeDetail(e.typ)
}

func (e *malformedTypeError) Unwrap() []error {
	return []error{ErrMalformed, ErrInvalidAggregateType}
}

// Validate reports what is wrong with n, as an error matching ErrMalformed
// (and ErrInvalidAggregateType when that is what is wrong).
func (n *Notice) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	if !isToken(n.AggregateType) {
		return &malformedTypeError{typ: n.AggregateType}
	}
	switch {
	case n.Version < 1:
		return bad("missing or invalid format version %d", n.Version)
	case n.Version > FormatVersion:
		return bad("format version %d is newer than this build understands (%d)", n.Version, FormatVersion)
	case n.AggregateID == uuid.Nil:
		return bad("missing aggregate id")
	case n.FirstVersion < 1:
		return bad("first version %d; versions start at 1", n.FirstVersion)
	case n.LastVersion < n.FirstVersion:
		return bad("last version %d is before first version %d", n.LastVersion, n.FirstVersion)
	case len(n.EventTypes) > MaxEventTypes:
		return bad("%d event types; at most %d", len(n.EventTypes), MaxEventTypes)
	case !representable(n.CommittedAt):
		// JSON (RFC 3339) cannot carry such a time: without this check a
		// decoded "9999-12-31T23:00:00-05:00" would fail to re-encode.
		return bad("commit time %s is outside years 0-9999 (UTC)", n.CommittedAt.UTC().Format(time.RFC3339))
	}
	for i, t := range n.EventTypes {
		if t == "" {
			return bad("event type %d is empty", i)
		}
	}
	if n.Reason != "" && !isToken(n.Reason) {
		return bad("reason %q: use 1-128 of A-Z a-z 0-9 _ -, or leave it out for an append", n.Reason)
	}
	return nil
}

// representable reports whether t's year in UTC is within 0-9999, which
// RFC 3339 can carry.
func representable(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// Encode returns n's JSON form after validating it.
func (n Notice) Encode() ([]byte, error) {
	return n.appendJSON(make([]byte, 0, 256))
}

// appendJSON validates n and appends its JSON form to b: byte for byte
// what encoding/json's Marshal writes for a Notice, without its
// reflection and allocations (the sender encodes one notice per message).
func (n *Notice) appendJSON(b []byte) ([]byte, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(n.Version), 10)
	b = append(b, `,"aggregate_type":`...)
	b = appendJSONString(b, n.AggregateType)
	b = append(b, `,"aggregate_id":"`...)
	b = appendUUID(b, n.AggregateID)
	b = append(b, `","first_version":`...)
	b = strconv.AppendInt(b, n.FirstVersion, 10)
	b = append(b, `,"last_version":`...)
	b = strconv.AppendInt(b, n.LastVersion, 10)
	b = append(b, `,"event_types":`...)
	if n.EventTypes == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, t := range n.EventTypes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, t)
		}
		b = append(b, ']')
	}
	if n.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	b = append(b, `,"committed_at":"`...)
	b, err := n.CommittedAt.AppendText(b) // RFC 3339, as Time.MarshalJSON
	if err != nil {
		return nil, fmt.Errorf("%w: commit time: %v", ErrMalformed, err)
	}
	b = append(b, '"')
	if n.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, n.Reason)
	}
	return append(b, '}'), nil
}

// appendUUID appends id in its canonical 8-4-4-4-12 lower-case form.
func appendUUID(b []byte, id uuid.UUID) []byte {
	const hexDigits = "0123456789abcdef"
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// appendJSONString appends s as a JSON string the way encoding/json does
// by default: HTML characters (<, >, &), control characters, U+2028 and
// U+2029 escaped, invalid UTF-8 replaced by \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Subject returns the subject of a notice about typ/id under prefix.
func Subject(prefix, typ string, id uuid.UUID) string {
	return prefix + "." + typ + "." + id.String()
}

// MsgID returns the JetStream message id of a notice, <type>/<id>/<last
// version>, so the stream's duplicate window drops a republished notice;
// a notice with a reason adds it, <type>/<id>/<last version>/<reason>, so
// that it is never taken for a duplicate of the append notice of the same
// version.
func (n Notice) MsgID() string {
	id := n.AggregateType + "/" + n.AggregateID.String() + "/" + strconv.FormatInt(n.LastVersion, 10)
	if n.Reason != "" {
		id += "/" + n.Reason
	}
	return id
}

// ParseSubject splits a notice subject back into aggregate type and id.
func ParseSubject(prefix, subject string) (string, uuid.UUID, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return "", uuid.Nil, fmt.Errorf("%w: subject %q does not start with %q", ErrMalformed, subject, prefix+".")
	}
	typ, idStr, ok := strings.Cut(rest, ".")
	if !ok || ValidateAggregateType(typ) != nil {
		return "", uuid.Nil, fmt.Errorf("%w: subject %q is not %s.<type>.<id>", ErrMalformed, subject, prefix)
	}
	id, err := uuid.Parse(idStr)
	if err != nil {
		return "", uuid.Nil, fmt.Errorf("%w: subject %q: aggregate id: %v", ErrMalformed, subject, err)
	}
	return typ, id, nil
}
