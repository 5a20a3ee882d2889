package benchharness

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTableAligned(t *testing.T) {
	tb := NewTable("backend", "events:", "speed-up:")
	tb.Add("memstore", "100", "12×")
	tb.Add("postgres", "100,000", "7,574×")
	tb.Add("sqlite") // short row
	out := tb.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("got %d lines, want 5:\n%s", len(lines), out)
	}
	width := utf8.RuneCountInString(lines[0])
	pipes := pipePositions(lines[0])
	for i, l := range lines {
		if w := utf8.RuneCountInString(l); w != width {
			t.Errorf("line %d is %d runes wide, want %d:\n%s", i, w, width, out)
		}
		if p := pipePositions(l); !equal(p, pipes) {
			t.Errorf("line %d has pipes at %v, want %v:\n%s", i, p, pipes, out)
		}
	}
	if !strings.HasPrefix(lines[1], "| -------- | ------: | -------: |") {
		t.Errorf("separator row %q does not mark the numeric columns right-aligned", lines[1])
	}
	if !strings.Contains(lines[2], "|     100 |") {
		t.Errorf("numbers are not right-aligned: %q", lines[2])
	}
}

func TestTableEscapesPipes(t *testing.T) {
	tb := NewTable("a")
	tb.Add("x|y")
	if !strings.Contains(tb.String(), `x\|y`) {
		t.Errorf("pipe not escaped:\n%s", tb.String())
	}
}

func pipePositions(s string) []int {
	var out []int
	i := 0
	for _, r := range s {
		if r == '|' {
			out = append(out, i)
		}
		i++
	}
	return out
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
