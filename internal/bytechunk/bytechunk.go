// Package bytechunk copies many small byte slices into shared chunks, so
// that a store reading a page of events allocates once per few kilobytes
// of payloads rather than once per event.
package bytechunk

// Size is the size of the chunks a Copier allocates. A slice longer than
// a quarter of it gets an allocation of its own, so a chunk wastes little
// and a kept copy keeps little else alive.
const Size = 4 << 10

// Copier hands out copies of byte slices carved from shared chunks. Each
// copy is the caller's own: a window of a chunk capped at its length,
// which nothing else writes to, so the caller may keep it, change it or
// append to it (appending reallocates). The zero value is ready to use; a
// Copier is not safe for concurrent use.
type Copier struct {
	chunk []byte
}

// Copy returns a copy of b; nil for nil (as for a NULL column), and an
// empty non-nil slice for an empty one.
func (c *Copier) Copy(b []byte) []byte {
	if len(b) == 0 {
		return b[:0:0] // nil stays nil; nothing to share
	}
	if len(b) > Size/4 {
		return append(make([]byte, 0, len(b)), b...)
	}
	if cap(c.chunk)-len(c.chunk) < len(b) {
		c.chunk = make([]byte, 0, Size)
	}
	start := len(c.chunk)
	c.chunk = append(c.chunk, b...)
	return c.chunk[start:len(c.chunk):len(c.chunk)]
}
