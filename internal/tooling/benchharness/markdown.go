package benchharness

import (
	"strings"
	"unicode/utf8"
)

// Align is a column's alignment in a [Table].
type Align int

const (
	// Left aligns text columns.
	Left Align = iota
	// Right aligns numeric columns.
	Right
)

// Table is a markdown table whose source is aligned too: every cell of a
// column is padded to the column's width, so the table reads as well in a
// terminal as rendered.
type Table struct {
	// Header holds the column titles; it fixes the number of columns.
	Header []string
	// Align holds each column's alignment; missing entries are Left.
	Align []Align
	// Rows holds the cells; short rows are padded with empty cells and
	// extra cells are dropped.
	Rows [][]string
}

// NewTable returns a table with the given header. A title ending in ':'
// marks a right-aligned (numeric) column; the colon is dropped.
func NewTable(header ...string) *Table {
	t := &Table{}
	for _, h := range header {
		a := Left
		if strings.HasSuffix(h, ":") {
			a, h = Right, strings.TrimSuffix(h, ":")
		}
		t.Header = append(t.Header, h)
		t.Align = append(t.Align, a)
	}
	return t
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

func (t *Table) align(i int) Align {
	if i < len(t.Align) {
		return t.Align[i]
	}
	return Left
}

// String renders the table as markdown, one line per row, each ending in a
// newline.
func (t *Table) String() string {
	n := len(t.Header)
	cell := func(row []string, i int) string {
		if i < len(row) {
			return strings.ReplaceAll(row[i], "|", `\|`)
		}
		return ""
	}
	width := make([]int, n)
	for i := range n {
		width[i] = max(3, utf8.RuneCountInString(cell(t.Header, i)))
		for _, r := range t.Rows {
			width[i] = max(width[i], utf8.RuneCountInString(cell(r, i)))
		}
	}
	var b strings.Builder
	line := func(row []string) {
		b.WriteString("|")
		for i := range n {
			c := cell(row, i)
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			b.WriteString(" ")
			if t.align(i) == Right {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	line(t.Header)
	b.WriteString("|")
	for i := range n {
		if t.align(i) == Right {
			b.WriteString(" " + strings.Repeat("-", width[i]-1) + ": |")
		} else {
			b.WriteString(" " + strings.Repeat("-", width[i]) + " |")
		}
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		line(r)
	}
	return b.String()
}
