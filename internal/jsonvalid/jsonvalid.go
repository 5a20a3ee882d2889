// Package jsonvalid reports whether bytes are valid JSON, exactly as
// encoding/json.Valid does (same grammar, same nesting limit, no UTF-8
// check), several times faster: encoding/json's scanner makes an indirect
// call per byte. Stores check every payload they are given and
// gojsoncodec every input it decodes, so the check is on every save and
// on every load from a snapshot.
package jsonvalid

// maxDepth is encoding/json's limit on nested arrays and objects.
const maxDepth = 10000

// Valid reports whether data is one JSON value, with optional whitespace
// around it.
func Valid(data []byte) bool {
	i, ok := value(data, space(data, 0), 0)
	return ok && space(data, i) == len(data)
}

// space returns the index of the first byte at or after i that is not
// JSON whitespace.
func space(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value checks the value starting at data[i], inside depth open arrays
// and objects, and returns the index just past it.
func value(data []byte, i, depth int) (int, bool) {
	if i >= len(data) {
		return i, false
	}
	switch c := data[i]; {
	case c == '"':
		return str(data, i)
	case c == '{':
		return object(data, i, depth+1)
	case c == '[':
		return array(data, i, depth+1)
	case c == 't':
		return literal(data, i, "true")
	case c == 'f':
		return literal(data, i, "false")
	case c == 'n':
		return literal(data, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return number(data, i)
	}
	return i, false
}

func literal(data []byte, i int, lit string) (int, bool) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// str checks the string starting at data[i] (a '"').
func str(data []byte, i int) (int, bool) {
	for i++; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			i++
			if i >= len(data) {
				return i, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(data)-i <= 4 {
					return i, false
				}
				for _, h := range data[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return i, false
					}
				}
				i += 4
			default:
				return i, false
			}
		}
	}
	return i, false
}

// digits returns the index past the run of decimal digits at data[i:].
func digits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

// number checks the number starting at data[i]: -?(0|[1-9][0-9]*)
// (.[0-9]+)?([eE][+-]?[0-9]+)?
func number(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return i, false
	case data[i] == '0':
		i++
	case data[i] >= '1' && data[i] <= '9':
		i = digits(data, i+1)
	default:
		return i, false
	}
	if i < len(data) && data[i] == '.' {
		j := digits(data, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digits(data, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

// object checks the object starting at data[i] (a '{'), the depth-th
// open array or object.
func object(data []byte, i, depth int) (int, bool) {
	if depth > maxDepth {
		return i, false
	}
	i = space(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return i, false
		}
		var ok bool
		if i, ok = str(data, i); !ok {
			return i, false
		}
		if i = space(data, i); i >= len(data) || data[i] != ':' {
			return i, false
		}
		if i, ok = value(data, space(data, i+1), depth); !ok {
			return i, false
		}
		if i = space(data, i); i >= len(data) {
			return i, false
		}
		switch data[i] {
		case '}':
			return i + 1, true
		case ',':
			i = space(data, i+1)
		default:
			return i, false
		}
	}
}

// array checks the array starting at data[i] (a '['), the depth-th open
// array or object.
func array(data []byte, i, depth int) (int, bool) {
	if depth > maxDepth {
		return i, false
	}
	i = space(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = value(data, i, depth); !ok {
			return i, false
		}
		if i = space(data, i); i >= len(data) {
			return i, false
		}
		switch data[i] {
		case ']':
			return i + 1, true
		case ',':
			i = space(data, i+1)
		default:
			return i, false
		}
	}
}
