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
