package jsonvalid

import (
	"encoding/json"
	"strings"
	"testing"
)

// cases are inputs at the edges of the grammar; each is checked against
// encoding/json.Valid, and seeds FuzzValid.
var cases = []string{
	``, ` `, `0`, `-0`, `-`, `01`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-1.25e-10`, `00`, `+1`, `1 2`,
	`true`, `false`, `null`, `tru`, `nul`, `True`, `truex`, `nullnull`,
	`""`, `"a"`, `"\""`, `"\\"`, `"\/"`, `"\b\f\n\r\t"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00e"`, `"\x"`, `"\`, `"abc`, "\"a\tb\"", "\"a\x01\"", "\"\xff\xfe\"", `"☃"`,
	`[]`, `[ ]`, `[1]`, `[1,]`, `[,1]`, `[1 2]`, `[[[]]]`, `[`, `]`, `[1,[2,[3]]]`,
	`{}`, `{ }`, `{"a":1}`, `{"a" : 1 , "b":[true,null]}`, `{"a":}`, `{"a" 1}`, `{a:1}`, `{"a":1,}`, `{,"a":1}`, `{"a":1 "b":2}`, `{"a":{"b":{}}}`, `{`, `}`, `{"a"`, `{"a":1`,
	" \t\r\n{\"amount\":10}\n ", `{"amount":10}x`, `{"account_id":"6f1c2e0a-4b7d-4e8a-9a51-0c3f1d2e4b5a","amount":1.25,"currency":"EUR","note":"deposit number 1","balance_after":10}`,
}

func TestAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range cases {
		if got, want := Valid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("Valid(%q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

// Nesting is limited as encoding/json limits it: 10,000 open arrays or
// objects are valid, 10,001 are not.
func TestNestingLimit(t *testing.T) {
	for _, depth := range []int{maxDepth, maxDepth + 1} {
		for _, open := range []string{"[", `{"a":`} {
			closeWith := "]"
			if open != "[" {
				closeWith = "}"
			}
			data := []byte(strings.Repeat(open, depth) + "1" + strings.Repeat(closeWith, depth))
			if got, want := Valid(data), json.Valid(data); got != want || got != (depth <= maxDepth) {
				t.Errorf("%d nested %q: Valid %v, encoding/json %v", depth, open, got, want)
			}
		}
	}
}

func FuzzValid(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := Valid(data), json.Valid(data); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", data, got, want)
		}
	})
}

func BenchmarkValid(b *testing.B) {
	for _, c := range []struct{ name, data string }{
		{"deposit", `{"amount":10}`},
		{"state", `{"open":true,"owner_name":"Bench","balance":1255,"transaction_count":99}`},
		{"tutorial", cases[len(cases)-1]},
	} {
		data := []byte(c.data)
		b.Run(c.name+"/jsonvalid", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				Valid(data)
			}
		})
		b.Run(c.name+"/encoding-json", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				json.Valid(data)
			}
		})
	}
}
