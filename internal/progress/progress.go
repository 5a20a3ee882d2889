// Package progress prints the progress of a long step for people to read.
//
// On a terminal a [Line] is one line redrawn in place with a carriage
// return, at most every [TerminalEvery]. Anywhere else (a file, a pipe, a
// CI log) carriage returns would run every update into one huge line, so
// a Line writes whole lines instead, at most one every [LogEvery]. In both
// cases the step ends with [Line.Done], whose line is always written and
// ends with a newline.
//
// Every progress display of the cmd/ programs goes through this package.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

const (
	// TerminalEvery is how often a Line on a terminal is redrawn at most.
	TerminalEvery = 200 * time.Millisecond
	// LogEvery is how often a Line elsewhere writes a line at most.
	LogEvery = 5 * time.Second
)

// Line shows the progress of one step on a writer. Its methods may be
// called from several goroutines.
type Line struct {
	mu       sync.Mutex
	w        io.Writer
	terminal bool
	every    time.Duration
	now      func() time.Time
	last     time.Time // when a line was last written, or the Line made
	width    int       // terminal: runes of the line open on screen; 0 none
}

// Option configures a Line.
type Option func(*Line)

// Terminal overrides the detection of a terminal (see IsTerminal).
func Terminal(on bool) Option { return func(l *Line) { l.terminal = on } }

// Clock sets the Line's clock (time.Now by default), for tests.
func Clock(now func() time.Time) Option { return func(l *Line) { l.now = now } }

// New returns a Line writing to w, which is a terminal if IsTerminal says
// so (or Terminal overrides it).
func New(w io.Writer, opts ...Option) *Line {
	l := &Line{w: w, terminal: IsTerminal(w), now: time.Now}
	for _, o := range opts {
		o(l)
	}
	if l.every == 0 {
		l.every = LogEvery
		if l.terminal {
			l.every = TerminalEvery
		}
	}
	l.last = l.now()
	return l
}

// IsTerminal reports whether w is a character device such as a terminal
// (an *os.File for a tty). A buffer, a pipe or a regular file is not.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Update reports progress. It is written only if the Line's interval has
// passed since the last line written (or since New): redrawn in place on
// a terminal, as a whole line elsewhere.
func (l *Line) Update(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.last) < l.every {
		return
	}
	l.last = now
	text := fmt.Sprintf(format, args...)
	if !l.terminal {
		fmt.Fprintln(l.w, text)
		return
	}
	fmt.Fprint(l.w, "\r"+text+l.pad(text))
	l.width = utf8.RuneCountInString(text)
}

// Done writes the step's last line, always, ending it with a newline; on
// a terminal it replaces the line Update drew. The Line can be used again
// for a next step.
func (l *Line) Done(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	text := fmt.Sprintf(format, args...)
	if l.terminal && l.width > 0 {
		text = "\r" + text + l.pad(text)
	}
	fmt.Fprintln(l.w, text)
	l.width = 0
	l.last = l.now()
}

// pad returns the spaces that blank what is left of the line on screen
// after text is drawn over it.
func (l *Line) pad(text string) string {
	return strings.Repeat(" ", max(0, l.width-utf8.RuneCountInString(text)))
}
