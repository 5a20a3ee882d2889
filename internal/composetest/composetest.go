// Package composetest reads docker-compose and Kubernetes YAML the way the
// deploy validation tests of cmd/snapshotter and cmd/example-app need:
// lenient accessors over decoded YAML, compose's variable interpolation
// (defaults only) and compose's splitting of a string command into words.
// It is for tests; nothing in a binary imports it.
package composetest

import (
	"fmt"
	"regexp"
	"strings"
)

// MapOf returns v as a map, or nil when it is not one.
func MapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// ListOf returns v as a list, or nil when it is not one.
func ListOf(v any) []any {
	l, _ := v.([]any)
	return l
}

// StrOf returns v as a string: "" for nil, a string as is, anything else
// formatted.
func StrOf(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

// Dig follows keys through nested maps; a missing key reads as nil.
func Dig(v any, keys ...string) any {
	for _, k := range keys {
		v = MapOf(v)[k]
	}
	return v
}

// composeVar is compose's interpolation: ${NAME}, ${NAME:-default},
// ${NAME-default}, $NAME; $$ is a literal $.
var composeVar = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// Interpolate replaces compose variables in every string of v (in place for
// maps and lists) with their defaults, or nothing: a compose file must work
// without the user's environment.
func Interpolate(v any) any {
	switch v := v.(type) {
	case string:
		return composeVar.ReplaceAllStringFunc(v, func(s string) string {
			if s == "$$" {
				return "$"
			}
			return composeVar.FindStringSubmatch(s)[3]
		})
	case map[string]any:
		for k, x := range v {
			v[k] = Interpolate(x)
		}
	case []any:
		for i, x := range v {
			v[i] = Interpolate(x)
		}
	}
	return v
}

// ShellWords splits a compose string command the way compose does: shell
// quoting and backslash escapes, no expansion.
func ShellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quote, escaped := false, rune(0), false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, in = true, true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// Words reads a compose command or entrypoint: a list, or a string split
// by ShellWords.
func Words(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return ShellWords(v)
	case []any:
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = StrOf(x)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("want a list or a string, have %T", v)
	}
}
