package composetest

import (
	"slices"
	"testing"
)

func TestShellWords(t *testing.T) {
	cases := map[string][]string{
		`run --a 1`:                 {"run", "--a", "1"},
		`  run   "two words" 'x y'`: {"run", "two words", "x y"},
		`a\ b "c\"d" 'e\f'`:         {"a b", `c"d`, `e\f`},
		`""`:                        {""},
		"":                          nil,
	}
	for in, want := range cases {
		got, err := ShellWords(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ShellWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`"open`, `'open`, `trailing\`} {
		if _, err := ShellWords(bad); err == nil {
			t.Errorf("ShellWords(%q): no error", bad)
		}
	}
}

func TestWords(t *testing.T) {
	got, err := Words([]any{"run", 8, nil})
	if err != nil || !slices.Equal(got, []string{"run", "8", ""}) {
		t.Errorf("Words(list) = %q, %v", got, err)
	}
	if _, err := Words(map[string]any{}); err == nil {
		t.Error("Words(map): no error")
	}
}

func TestInterpolate(t *testing.T) {
	v := map[string]any{
		"a": "${X:-def} ${Y-other} ${Z} $W $$HOME",
		"l": []any{"${P:-1}", 3},
	}
	Interpolate(v)
	if got := v["a"]; got != "def other   $HOME" {
		t.Errorf("interpolated %q", got)
	}
	if got := Dig(v, "l"); StrOf(ListOf(got)[0]) != "1" || StrOf(ListOf(got)[1]) != "3" {
		t.Errorf("list %v", got)
	}
	if Dig(v, "missing", "deeper") != nil || MapOf("x") != nil {
		t.Error("missing keys and wrong types must read as nil")
	}
}
