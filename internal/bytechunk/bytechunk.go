// Package bytechunk copies many small byte slices into shared chunks, so
// that a store reading a page of events allocates once per few kilobytes
// of payloads rather than once per event.
package bytechunk

// Size is the largest chunk a Copier allocates. A slice longer than a
// quarter of it gets an allocation of its own, so a chunk wastes little
// and a kept copy keeps little else alive.
const Size = 4 << 10

// firstSize is the size of a Copier's first chunk; each further chunk is
// four times the one before, up to Size (256 B, 1 KB, 4 KB: a longer read
// costs two allocations more than chunks of Size from the start). A load from a snapshot at the head
// copies one payload of some 100 bytes: a first chunk of Size was 4 KB of
// zeroed memory for it, half of everything such a load allocated.
const firstSize = 256

// Copier hands out copies of byte slices carved from shared chunks. Each
// copy is the caller's own: a window of a chunk capped at its length,
// which nothing else writes to, so the caller may keep it, change it or
// append to it (appending reallocates). The zero value is ready to use; a
// Copier is not safe for concurrent use.
type Copier struct {
	chunk []byte
	// expected is how many more bytes the caller said it would copy
	// (Expect); 0 when it did not say.
	expected int
}

// Expect tells c that the next copies total n bytes, so that the next
// chunk it allocates is sized to fit them (up to Size) instead of being
// the growing default: a reader that knows its payloads' total, such as one copying a
// single small payload, then allocates what it needs and no more. Copies
// beyond n get the growing chunks again.
func (c *Copier) Expect(n int) { c.expected = max(n, 0) }

// Copy returns a copy of b; nil for nil (as for a NULL column), and an
// empty non-nil slice for an empty one.
func (c *Copier) Copy(b []byte) []byte {
	if len(b) == 0 {
		return b[:0:0] // nil stays nil; nothing to share
	}
	want := c.expected // this copy's bytes included
	c.expected = max(want-len(b), 0)
	if len(b) > Size/4 {
		return append(make([]byte, 0, len(b)), b...)
	}
	if cap(c.chunk)-len(c.chunk) < len(b) {
		size := min(Size, max(firstSize, 4*cap(c.chunk)))
		if want > 0 {
			size = min(max(want, len(b)), Size)
		}
		c.chunk = make([]byte, 0, max(size, len(b)))
	}
	start := len(c.chunk)
	c.chunk = append(c.chunk, b...)
	return c.chunk[start:len(c.chunk):len(c.chunk)]
}
