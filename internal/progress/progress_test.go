package progress

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClock advances only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// run reports progress every 100 ms for 12 s, then ends the step.
func run(l *Line, c *fakeClock) {
	for i := 1; i <= 120; i++ {
		c.t = c.t.Add(100 * time.Millisecond)
		l.Update("step %d/120", i)
	}
	l.Done("done: %d", 120)
}

// Not a terminal (a buffer, as a file or a CI log): whole lines, one per
// LogEvery, then the last line; never a carriage return.
func TestNotATerminalWritesWholeLinesAtAModestRate(t *testing.T) {
	var buf bytes.Buffer
	c := &fakeClock{t: time.Unix(0, 0)}
	run(New(&buf, Clock(c.now)), c)
	want := "step 50/120\nstep 100/120\ndone: 120\n"
	if buf.String() != want {
		t.Fatalf("got %q, want %q", buf.String(), want)
	}
}

// A terminal (forced): the line is redrawn in place at most every
// TerminalEvery, and the last line replaces it, blanking what is left of
// a longer one, and ends it.
func TestTerminalRedrawsOneLine(t *testing.T) {
	var buf bytes.Buffer
	c := &fakeClock{t: time.Unix(0, 0)}
	l := New(&buf, Clock(c.now), Terminal(true))
	run(l, c)
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("%d newlines in %q: want one, at the end", n, out)
	}
	if n := strings.Count(out, "\r"); n != 61 { // 60 redraws (every 2nd update) and the last line
		t.Fatalf("%d redraws in %q, want 61", n, out)
	}
	if !strings.HasSuffix(out, "\rdone: 120   \n") { // "step 120/120" is 3 runes longer
		t.Fatalf("last line %q does not replace the progress", out[strings.LastIndex(out, "\r"):])
	}
	// A step that ends before its first redraw prints only its last line.
	buf.Reset()
	l.Done("quick")
	if buf.String() != "quick\n" {
		t.Fatalf("got %q", buf.String())
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) || IsTerminal(&bytes.Buffer{}) {
		t.Fatal("a regular file or a buffer taken for a terminal")
	}
}
