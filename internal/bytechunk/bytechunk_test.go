package bytechunk

import (
	"bytes"
	"fmt"
	"testing"
)

// TestCopiesAreTheCallers: copies across several chunks, of every size up
// to past the own-allocation bound, equal their sources, do not alias them,
// and stay unchanged when each other copy grows or is overwritten.
func TestCopiesAreTheCallers(t *testing.T) {
	var c Copier
	var src, got [][]byte
	for i := range 400 {
		if i%7 == 0 {
			c.Expect((i * 53) % (2 * Size)) // right or wrong, copies stay the caller's
		}
		b := bytes.Repeat([]byte{byte('a' + i%26)}, (i*37)%(Size/4+200))
		src = append(src, b)
		got = append(got, c.Copy(b))
	}
	for i := range got {
		if !bytes.Equal(got[i], src[i]) {
			t.Fatalf("copy %d = %q, want %q", i, got[i], src[i])
		}
		if len(got[i]) > 0 && &got[i][0] == &src[i][0] {
			t.Fatalf("copy %d aliases its source", i)
		}
		if cap(got[i]) != len(got[i]) && len(got[i]) <= Size/4 {
			t.Fatalf("copy %d has capacity %d beyond its length %d", i, cap(got[i]), len(got[i]))
		}
	}
	for i := range got {
		got[i] = append(got[i], "tail"...)
		for j := range got[i] {
			got[i][j] = '!'
		}
	}
	for i := range got {
		if want := bytes.Repeat([]byte("!"), len(src[i])+4); !bytes.Equal(got[i], want) {
			t.Fatalf("copy %d changed with another's: %q", i, got[i])
		}
		if bytes.ContainsRune(src[i], '!') {
			t.Fatalf("source %d changed: %q", i, src[i])
		}
	}
}

// TestExpect: a copier told the total of the next copies allocates one
// chunk that fits them, not a whole Size; copies past the total get Size
// chunks again; and copies made under an expectation, however wrong, are
// the caller's as always.
func TestExpect(t *testing.T) {
	var c Copier
	small := bytes.Repeat([]byte("s"), 15)
	if n := testing.AllocsPerRun(100, func() {
		c = Copier{}
		c.Expect(len(small))
		_ = c.Copy(small)
	}); n != 1 {
		t.Fatalf("one expected copy: %v allocations, want 1", n)
	}
	if cap(c.chunk) != len(small) {
		t.Fatalf("one expected copy of %d bytes: chunk of %d bytes", len(small), cap(c.chunk))
	}
	c = Copier{}
	c.Expect(30)
	a, b := c.Copy(small[:10]), c.Copy(bytes.Repeat([]byte("t"), 20))
	if cap(c.chunk) != 30 || &a[0] != &c.chunk[0] || &b[0] != &c.chunk[10] {
		t.Fatalf("two copies totalling the 30 expected: chunk of %d bytes, not shared by both", cap(c.chunk))
	}
	_ = c.Copy(small)
	if want := min(Size, max(firstSize, 4*30)); cap(c.chunk) != want {
		t.Fatalf("a copy past the expected total: chunk of %d bytes, want the growing default's %d", cap(c.chunk), want)
	}
	c = Copier{}
	c.Expect(4)
	if got := c.Copy(small); !bytes.Equal(got, small) || cap(c.chunk) != len(small) {
		t.Fatalf("a copy above the expected total: %q in a chunk of %d", got, cap(c.chunk))
	}
}

func TestNilAndEmpty(t *testing.T) {
	var c Copier
	if c.Copy(nil) != nil {
		t.Fatal("Copy(nil) is not nil")
	}
	if e := c.Copy([]byte{}); e == nil || len(e) != 0 {
		t.Fatalf("Copy(empty) = %#v, want empty and non-nil", e)
	}
}

// BenchmarkCopy: copying event-sized payloads, allocations per copy.
func BenchmarkCopy(b *testing.B) {
	for _, n := range []int{16, 200, 2000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			src := bytes.Repeat([]byte("x"), n)
			var c Copier
			b.ReportAllocs()
			for b.Loop() {
				_ = c.Copy(src)
			}
		})
	}
}

// TestChunksGrowFromSmall: a Copier that copies one short slice allocates
// a small chunk, not a whole Size (a load of one event copies one
// payload); chunks grow fourfold as copies go on, up to Size.
func TestChunksGrowFromSmall(t *testing.T) {
	var c Copier
	c.Copy(make([]byte, 100))
	if got := cap(c.chunk); got > firstSize {
		t.Fatalf("after one copy of 100 bytes the chunk holds %d bytes, want at most %d", got, firstSize)
	}
	var sizes []int
	for range 200 {
		c.Copy(make([]byte, 100))
		if n := len(sizes); n == 0 || sizes[n-1] != cap(c.chunk) {
			sizes = append(sizes, cap(c.chunk))
		}
	}
	for i := 1; i < len(sizes); i++ {
		if sizes[i] != min(Size, 4*sizes[i-1]) {
			t.Fatalf("chunk sizes %v: want each four times the one before, up to %d", sizes, Size)
		}
	}
	if last := sizes[len(sizes)-1]; last != Size {
		t.Fatalf("chunk sizes %v: want them to reach %d", sizes, Size)
	}
}
