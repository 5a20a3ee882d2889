package natsnotice

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Decode parses and validates a notice. Every failure matches ErrMalformed
// and says what was wrong; Decode never panics.
//
// Decode accepts exactly the messages that encoding/json's Unmarshal into
// a Notice followed by [Notice.Validate] accepts, and returns the same
// notice (its commit time in UTC): unknown fields are ignored, a key
// matches a field case-insensitively as in encoding/json, the last of
// repeated keys wins, null leaves a field as it was (and empties the
// event types), invalid UTF-8 in strings becomes U+FFFD, and numbers with
// a fraction or an exponent are refused for integer fields. Validate's
// errors are the same too; errors about the JSON (its syntax, a value of
// the wrong kind) are worded differently.
func Decode(data []byte) (Notice, error) {
	var n Notice
	if len(data) == 0 {
		return n, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if err := decodeJSON(data, &n); err != nil {
		return Notice{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := n.Validate(); err != nil {
		return Notice{}, err
	}
	n.CommittedAt = n.CommittedAt.UTC()
	return n, nil
}

// The decoder below reads the notice schema by hand, without reflection.
// It stays because the worker measurably needs it: with encoding/json in
// its place, the not-due path of the worker benchmark lost about 10% of
// its notices/s and took about 10% more CPU per notice, and
// goccy/go-json, faster, accepts JSON this decoder refuses (the decision
// record on kept libraries in docs/decisions has the figures). It mirrors
// encoding/json rule for rule (its default implementation, not
// the one GOEXPERIMENT=jsonv2 builds on encoding/json/v2), checked by
// FuzzDecode against it:
//
//   - the whole message must be valid JSON (RFC 8259, nesting at most
//     maxDepth deep, only white space after the value), whatever fields
//     it holds, and a syntax error anywhere wins over any other error;
//   - a top-level null decodes to the zero notice (which Validate
//     refuses); any other non-object is refused;
//   - a key is unquoted, then matched exactly, then by encoding/json's
//     case folding (so "V", "Aggregate_Type" and "firſt_verſion" with
//     U+017F match too); other keys are skipped;
//   - null leaves a field as it was, except the event types, which it
//     sets to nil; a value of the wrong JSON kind is refused;
//   - event types decode into the list a repeated key left, as
//     encoding/json reuses the slice: a null element keeps what that
//     position held last (nothing in a fresh list), [] is an empty list;
//   - integers must be JSON numbers without fraction or exponent that fit
//     the field; the aggregate id goes through uuid.UUID.UnmarshalText
//     once unquoted, the commit time through time.Time.UnmarshalJSON as
//     written (encoding/json does not unescape it either).
//
// Strings are not copied while parsing: the decoder keeps where each one
// is in data (on the stack, for up to MaxEventTypes event types) and
// builds them all into one allocation at the end, so a valid notice costs
// two allocations, its strings and its event type list (and time.Time's
// parser one or two more for a commit time that is not in UTC).

// maxDepth is how deeply encoding/json lets arrays and objects nest.
const maxDepth = 10000

// The notice's fields, as decodeJSON tells them apart.
const (
	fieldUnknown = iota
	fieldVersion
	fieldAggregateType
	fieldAggregateID
	fieldFirstVersion
	fieldLastVersion
	fieldEventTypes
	fieldTruncated
	fieldCommittedAt
	fieldReason
)

// fieldNames are the JSON names of the fields, by field constant.
var fieldNames = [...]string{
	fieldUnknown:       "",
	fieldVersion:       "v",
	fieldAggregateType: "aggregate_type",
	fieldAggregateID:   "aggregate_id",
	fieldFirstVersion:  "first_version",
	fieldLastVersion:   "last_version",
	fieldEventTypes:    "event_types",
	fieldTruncated:     "truncated",
	fieldCommittedAt:   "committed_at",
	fieldReason:        "reason",
}

// span is where a JSON string's contents (between the quotes) are in the
// input; escaped is set when they need unquoting (escapes or invalid
// UTF-8). The zero span is the empty string.
type span struct {
	start, end int
	escaped    bool
}

// decoder reads one JSON message. Syntax errors end decoding at once;
// errors about a value (the wrong kind, a bad id or time) are kept in err,
// the first one only, and decoding goes on so that a later syntax error
// still wins, as in encoding/json.
type decoder struct {
	data []byte
	off  int
	err  error
}

// decodeJSON decodes data, a JSON notice, into n without validating it.
func decodeJSON(data []byte, n *Notice) error {
	d := decoder{data: data}
	d.space()
	if d.off < len(data) && data[d.off] == '{' {
		if err := d.notice(n); err != nil {
			return err
		}
	} else {
		start := d.off
		if err := d.skip(0); err != nil {
			return err
		}
		if data[start] != 'n' { // null decodes to the zero notice
			d.wrongKind("the notice", start, "an object")
		}
	}
	d.space()
	if d.off < len(data) {
		return d.syntaxError("after top-level value")
	}
	return d.err
}

// notice decodes the object at d.off into n.
func (d *decoder) notice(n *Notice) error {
	var (
		aggregateType span
		reason        span
		typesBuf      [MaxEventTypes]span
		types         = typesBuf[:0]
		typesNull     = true
	)
	d.off++ // {
	d.space()
	if d.off < len(d.data) && d.data[d.off] == '}' {
		d.off++
		return nil
	}
	for {
		d.space()
		if d.off >= len(d.data) || d.data[d.off] != '"' {
			return d.syntaxError("looking for beginning of object key string")
		}
		key, err := d.str()
		if err != nil {
			return err
		}
		field := d.field(key)
		d.space()
		if d.off >= len(d.data) || d.data[d.off] != ':' {
			return d.syntaxError("after object key")
		}
		d.off++
		d.space()
		switch field {
		case fieldVersion:
			v, ok, err := d.integer(field, strconv.IntSize)
			if err != nil {
				return err
			}
			if ok {
				n.Version = int(v)
			}
		case fieldFirstVersion, fieldLastVersion:
			v, ok, err := d.integer(field, 64)
			if err != nil {
				return err
			}
			if ok && field == fieldFirstVersion {
				n.FirstVersion = v
			} else if ok {
				n.LastVersion = v
			}
		case fieldAggregateType, fieldReason:
			if d.peek() == '"' {
				s, err := d.str()
				if err != nil {
					return err
				}
				if field == fieldReason {
					reason = s
				} else {
					aggregateType = s
				}
			} else if err := d.nullOr(field, "a string"); err != nil {
				return err
			}
		case fieldAggregateID:
			if d.peek() == '"' {
				start := d.off
				s, err := d.str()
				if err != nil {
					return err
				}
				text := d.data[s.start:s.end]
				if s.escaped {
					text = d.unquote(nil, s)
				}
				if err := n.AggregateID.UnmarshalText(text); err != nil {
					d.setErrAt(start, "aggregate_id: %v", err)
				}
			} else if err := d.nullOr(field, "a string"); err != nil {
				return err
			}
		case fieldEventTypes:
			switch d.peek() {
			case '[':
				if types, err = d.eventTypes(types); err != nil {
					return err
				}
				typesNull = false
			case 'n':
				if err := d.literal("null"); err != nil {
					return err
				}
				clear(types[:cap(types)]) // encoding/json sets the slice to nil
				types, typesNull = types[:0], true
			default:
				if err := d.nullOr(field, "an array of strings"); err != nil {
					return err
				}
			}
		case fieldTruncated:
			switch d.peek() {
			case 't':
				if err := d.literal("true"); err != nil {
					return err
				}
				n.Truncated = true
			case 'f':
				if err := d.literal("false"); err != nil {
					return err
				}
				n.Truncated = false
			default:
				if err := d.nullOr(field, "true or false"); err != nil {
					return err
				}
			}
		case fieldCommittedAt:
			// time.Time's UnmarshalJSON takes the value as written, null
			// included, as encoding/json hands it over.
			start := d.off
			if err := d.skip(1); err != nil {
				return err
			}
			if err := n.CommittedAt.UnmarshalJSON(d.data[start:d.off]); err != nil {
				d.setErrAt(start, "committed_at: %v", err)
			}
		default:
			if err := d.skip(1); err != nil {
				return err
			}
		}
		d.space()
		if d.off < len(d.data) && d.data[d.off] == ',' {
			d.off++
			continue
		}
		if d.off < len(d.data) && d.data[d.off] == '}' {
			d.off++
			break
		}
		return d.syntaxError("after object key:value pair")
	}
	if d.err != nil {
		return nil // the caller returns d.err once the rest is checked
	}
	d.build(n, aggregateType, reason, types, typesNull)
	return nil
}

// build sets n's aggregate type, reason and event types from where they
// are in d.data, all in one allocation.
func (d *decoder) build(n *Notice, aggregateType, reason span, types []span, typesNull bool) {
	size := aggregateType.end - aggregateType.start + reason.end - reason.start
	for _, s := range types {
		size += s.end - s.start
	}
	var b strings.Builder
	b.Grow(size) // unquoting can make a string longer: b then grows
	d.write(&b, aggregateType)
	typeEnd := b.Len()
	d.write(&b, reason)
	reasonEnd := b.Len()
	for i, s := range types {
		start := b.Len()
		d.write(&b, s)
		types[i] = span{start: start, end: b.Len()} // now where it is in b
	}
	all := b.String()
	n.AggregateType = all[:typeEnd]
	n.Reason = all[typeEnd:reasonEnd]
	if typesNull {
		n.EventTypes = nil
		return
	}
	n.EventTypes = make([]string, len(types))
	for i, s := range types {
		n.EventTypes[i] = all[s.start:s.end]
	}
}

// write writes the string at s to b, unquoted.
func (d *decoder) write(b *strings.Builder, s span) {
	if !s.escaped {
		b.Write(d.data[s.start:s.end])
		return
	}
	var buf [64]byte
	b.Write(d.unquote(buf[:0], s))
}

// eventTypes decodes the array at d.off into types, the list a previous
// event_types key left (empty when none did), the way encoding/json
// decodes into a slice it already holds.
func (d *decoder) eventTypes(types []span) ([]span, error) {
	d.off++ // [
	d.space()
	if d.off < len(d.data) && d.data[d.off] == ']' {
		d.off++
		// encoding/json sets a fresh empty slice: forget the old elements.
		clear(types[:cap(types)])
		return types[:0], nil
	}
	i := 0
	for {
		d.space()
		// Grow the list as encoding/json grows a slice: positions beyond
		// its length keep what a longer list left there (zero if none).
		switch {
		case i < len(types):
		case i < cap(types):
			types = types[:i+1]
		default:
			types = append(types, span{})
		}
		switch d.peek() {
		case '"':
			s, err := d.str()
			if err != nil {
				return types, err
			}
			types[i] = s
		case 'n':
			// null leaves the element as it was.
			if err := d.literal("null"); err != nil {
				return types, err
			}
		default:
			start := d.off
			if err := d.skip(2); err != nil {
				return types, err
			}
			d.wrongKind(fmt.Sprintf("event_types[%d]", i), start, "a string")
		}
		i++
		d.space()
		if d.off < len(d.data) && d.data[d.off] == ',' {
			d.off++
			continue
		}
		if d.off < len(d.data) && d.data[d.off] == ']' {
			d.off++
			return types[:i], nil
		}
		return types, d.syntaxError("after array element")
	}
}

// integer decodes the integer for field, of size bits, at d.off; ok is
// false when the value is null or not such an integer (noted in d.err).
func (d *decoder) integer(field, bits int) (v int64, ok bool, err error) {
	c := d.peek()
	if c != '-' && (c < '0' || c > '9') {
		return 0, false, d.nullOr(field, "an integer")
	}
	start := d.off
	isInt, err := d.number()
	if err != nil {
		return 0, false, err
	}
	if isInt {
		if v, ok := parseInt(d.data[start:d.off]); ok && v<<(64-bits)>>(64-bits) == v {
			return v, true, nil
		}
	}
	d.setErrAt(start, "%s: number %s is not a %d-bit integer", fieldNames[field], d.data[start:d.off], bits)
	return 0, false, nil
}

// parseInt parses b, a JSON number without fraction or exponent, as
// strconv.ParseInt(b, 10, 64) does; ok is false when it overflows.
func parseInt(b []byte) (int64, bool) {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	limit := uint64(1<<63 - 1)
	if neg {
		limit++
	}
	var u uint64
	for _, c := range b {
		digit := uint64(c - '0')
		if u > (limit-digit)/10 {
			return 0, false
		}
		u = u*10 + digit
	}
	if neg {
		return -int64(u), true
	}
	return int64(u), true
}

// nullOr reads the value at d.off for field: null is skipped; a value of
// another kind is skipped and noted as the wrong kind (want is the kind
// expected).
func (d *decoder) nullOr(field int, want string) error {
	start := d.off
	if err := d.skip(1); err != nil {
		return err
	}
	if d.data[start] != 'n' {
		d.wrongKind(fieldNames[field], start, want)
	}
	return nil
}

// field returns which field key, a span of d.data, names: encoding/json
// looks for an exact match first, then for one up to case folding.
func (d *decoder) field(key span) int {
	name := d.data[key.start:key.end]
	var buf [64]byte
	if key.escaped {
		name = d.unquote(buf[:0], key)
	}
	switch string(name) {
	case "v":
		return fieldVersion
	case "aggregate_type":
		return fieldAggregateType
	case "aggregate_id":
		return fieldAggregateID
	case "first_version":
		return fieldFirstVersion
	case "last_version":
		return fieldLastVersion
	case "event_types":
		return fieldEventTypes
	case "truncated":
		return fieldTruncated
	case "committed_at":
		return fieldCommittedAt
	case "reason":
		return fieldReason
	}
	// A rune folds to at most utf8.UTFMax times fewer bytes: longer keys
	// cannot fold to any field name.
	if len(name) > utf8.UTFMax*len("aggregate_type") {
		return fieldUnknown
	}
	var folded [64]byte
	switch string(appendFoldedName(folded[:0], name)) {
	case "V":
		return fieldVersion
	case "AGGREGATE_TYPE":
		return fieldAggregateType
	case "AGGREGATE_ID":
		return fieldAggregateID
	case "FIRST_VERSION":
		return fieldFirstVersion
	case "LAST_VERSION":
		return fieldLastVersion
	case "EVENT_TYPES":
		return fieldEventTypes
	case "TRUNCATED":
		return fieldTruncated
	case "COMMITTED_AT":
		return fieldCommittedAt
	case "REASON":
		return fieldReason
	}
	return fieldUnknown
}

// appendFoldedName appends in folded to out, as encoding/json folds a key
// to match it case-insensitively: ASCII letters upper-cased, other runes
// replaced by the smallest rune of their simple case folding orbit.
func appendFoldedName(out, in []byte) []byte {
	for i := 0; i < len(in); {
		if c := in[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(in[i:])
		out = utf8.AppendRune(out, foldRune(r))
		i += n
	}
	return out
}

// foldRune returns the smallest rune of r's simple case folding orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// space skips white space.
func (d *decoder) space() {
	for d.off < len(d.data) {
		switch d.data[d.off] {
		case ' ', '\t', '\n', '\r':
			d.off++
		default:
			return
		}
	}
}

// peek returns the byte at d.off, 0 at the end of the input.
func (d *decoder) peek() byte {
	if d.off < len(d.data) {
		return d.data[d.off]
	}
	return 0
}

// skip checks the JSON value at d.off and moves past it. depth is how many
// arrays and objects enclose it.
func (d *decoder) skip(depth int) error {
	// open holds the arrays and objects opened inside the value: '[' or '{'.
	var openBuf [32]byte
	open := openBuf[:0]
	for {
		// A value.
		d.space()
		switch d.peek() {
		case '{', '[':
			c := d.data[d.off]
			if depth+len(open)+1 > maxDepth {
				return d.syntaxError("exceeded max depth")
			}
			d.off++
			d.space()
			if c == '{' && d.peek() == '}' || c == '[' && d.peek() == ']' {
				d.off++
				break
			}
			open = append(open, c)
			if c == '{' {
				if err := d.key(); err != nil {
					return err
				}
			}
			continue
		case '"':
			if _, err := d.str(); err != nil {
				return err
			}
		case 't':
			if err := d.literal("true"); err != nil {
				return err
			}
		case 'f':
			if err := d.literal("false"); err != nil {
				return err
			}
		case 'n':
			if err := d.literal("null"); err != nil {
				return err
			}
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			if _, err := d.number(); err != nil {
				return err
			}
		default:
			return d.syntaxError("looking for beginning of value")
		}
		// What follows a value: close what it ends, or go on to the next.
		for {
			if len(open) == 0 {
				return nil
			}
			d.space()
			last := open[len(open)-1]
			switch c := d.peek(); {
			case c == ',':
				d.off++
				if last == '{' {
					if err := d.key(); err != nil {
						return err
					}
				}
			case last == '{' && c == '}', last == '[' && c == ']':
				d.off++
				open = open[:len(open)-1]
				continue
			case last == '{':
				return d.syntaxError("after object key:value pair")
			default:
				return d.syntaxError("after array element")
			}
			break
		}
	}
}

// key checks an object key and its colon at d.off and moves past them.
func (d *decoder) key() error {
	d.space()
	if d.peek() != '"' {
		return d.syntaxError("looking for beginning of object key string")
	}
	if _, err := d.str(); err != nil {
		return err
	}
	d.space()
	if d.peek() != ':' {
		return d.syntaxError("after object key")
	}
	d.off++
	return nil
}

// literal checks that want (true, false or null) is at d.off and moves
// past it.
func (d *decoder) literal(want string) error {
	for i := 0; i < len(want); i++ {
		if d.off >= len(d.data) || d.data[d.off] != want[i] {
			return d.syntaxError("in literal " + want)
		}
		d.off++
	}
	return nil
}

// number checks the JSON number at d.off and moves past it; isInt reports
// that it has neither fraction nor exponent.
func (d *decoder) number() (isInt bool, err error) {
	data, i := d.data, d.off
	digits := func() bool {
		start := i
		for i < len(data) && '0' <= data[i] && data[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(data) && data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case !digits():
		d.off = i
		return false, d.syntaxError("in numeric literal")
	}
	isInt = true
	if i < len(data) && data[i] == '.' {
		isInt = false
		i++
		if !digits() {
			d.off = i
			return false, d.syntaxError("after decimal point in numeric literal")
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		isInt = false
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if !digits() {
			d.off = i
			return false, d.syntaxError("in exponent of numeric literal")
		}
	}
	d.off = i
	return isInt, nil
}

// str checks the JSON string at d.off, moves past it and returns where its
// contents are.
func (d *decoder) str() (span, error) {
	data := d.data
	s := span{start: d.off + 1}
	for i := s.start; i < len(data); {
		c := data[i]
		switch {
		case plain[c]:
			i++
		case c == '"':
			s.end = i
			d.off = i + 1
			return s, nil
		case c == '\\':
			s.escaped = true
			i++
			if i >= len(data) {
				break
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				i++
				for range 4 {
					if i >= len(data) {
						break
					}
					if !isHex(data[i]) {
						d.off = i
						return s, d.syntaxError("in \\u hexadecimal character escape")
					}
					i++
				}
			default:
				d.off = i
				return s, d.syntaxError("in string escape code")
			}
		case c < ' ':
			d.off = i
			return s, d.syntaxError("in string literal")
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				s.escaped = true // invalid UTF-8 becomes U+FFFD
			}
			i += size
		}
	}
	d.off = len(data)
	return s, d.syntaxError("")
}

// plain tells the bytes that stand for themselves in a JSON string: ASCII
// but for control characters, '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// unquote appends the contents of the string at s to dst, escapes decoded
// and invalid UTF-8 replaced by U+FFFD, exactly as encoding/json unquotes
// (a \u escape of half a surrogate pair becomes U+FFFD too).
func (d *decoder) unquote(dst []byte, s span) []byte {
	b := d.data[s.start:s.end]
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '\\':
			switch c := b[i+1]; c {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := getu4(b[i:])
				i += 6
				if utf16.IsSurrogate(r) {
					if dec := utf16.DecodeRune(r, getu4(b[i:])); dec != unicode.ReplacementChar {
						i += 6
						dst = utf8.AppendRune(dst, dec)
						continue
					}
					r = unicode.ReplacementChar
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // " \ /
				dst = append(dst, c)
			}
			i += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			dst = utf8.AppendRune(dst, r)
			i += size
		}
	}
	return dst
}

// getu4 decodes the \uXXXX escape at the start of b, or returns -1.
func getu4(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// syntaxError returns the error for the byte at d.off, which is not valid
// JSON there (context says where, as encoding/json does).
func (d *decoder) syntaxError(context string) error {
	if d.off >= len(d.data) {
		return fmt.Errorf("invalid JSON: unexpected end of input")
	}
	return fmt.Errorf("invalid JSON: invalid character %s %s at byte %d", quoteChar(d.data[d.off]), context, d.off)
}

// quoteChar formats c as encoding/json's syntax errors do.
func quoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// wrongKind notes that the value at start, for what, is not the kind of
// JSON value wanted.
func (d *decoder) wrongKind(what string, start int, want string) {
	kind := "number"
	switch d.data[start] {
	case '{':
		kind = "object"
	case '[':
		kind = "array"
	case '"':
		kind = "string"
	case 't', 'f':
		kind = "boolean"
	case 'n':
		kind = "null"
	}
	d.setErrAt(start, "%s is a JSON %s, want %s", what, kind, want)
}

// setErrAt notes an error about the value at byte start, unless one was
// noted already.
func (d *decoder) setErrAt(start int, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format+" (at byte %d)", append(args, start)...)
	}
}
