package memstore

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/uuid"
)

// idSet holds exactly what a map would, over adds and removes of
// version 7 ids made in order, a little out of order and far out of
// order (splitting full leaves), and of version 4 ids; and its leaves
// stay sorted, non-empty and in order.
func TestIDSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	v7 := func(ms uint64) uuid.UUID {
		var id uuid.UUID
		binary.BigEndian.PutUint64(id[:8], ms<<16|0x7000|rng.Uint64()&0xfff)
		binary.BigEndian.PutUint64(id[8:], rng.Uint64())
		id[8] = id[8]&0x3f | 0x80
		return id
	}
	var s idSet
	want := map[uuid.UUID]bool{}
	var added []uuid.UUID
	clock := uint64(1 << 40)
	for n := range 60_000 {
		var id uuid.UUID
		switch k := rng.IntN(100); {
		case k < 60: // in order
			clock += rng.Uint64N(3)
			id = v7(clock)
		case k < 75: // a little earlier than the newest
			id = v7(clock - rng.Uint64N(50))
		case k < 85: // anywhere in the past
			id = v7(rng.Uint64N(clock))
		case k < 93:
			id = uuid.New()
		default: // one already added
			if len(added) == 0 {
				continue
			}
			id = added[rng.IntN(len(added))]
		}
		if got := s.add(id); got != !want[id] {
			t.Fatalf("add %d (%s): %v, want %v", n, id, got, !want[id])
		}
		if !want[id] {
			want[id] = true
			added = append(added, id)
		}
		if rng.IntN(50) == 0 && len(added) > 0 { // undo one
			i := rng.IntN(len(added))
			s.remove(added[i])
			delete(want, added[i])
			added = slices.Delete(added, i, i+1)
		}
	}
	if len(s.leaves) < 10 {
		t.Fatalf("%d leaves: the test did not fill and split leaves", len(s.leaves))
	}
	var prev *uuid.UUID
	count := len(s.other)
	for i, leaf := range s.leaves {
		if len(leaf) == 0 || len(leaf) > leafIDs {
			t.Fatalf("leaf %d holds %d ids", i, len(leaf))
		}
		for j := range leaf {
			if prev != nil && compareIDs(*prev, leaf[j]) >= 0 {
				t.Fatalf("leaf %d, id %d: %s after %s", i, j, leaf[j], prev)
			}
			prev = &leaf[j]
		}
		count += len(leaf)
	}
	if count != len(want) {
		t.Fatalf("the set holds %d ids, want %d", count, len(want))
	}
	for id := range want {
		if s.add(id) {
			t.Fatalf("%s was missing", id)
		}
	}
}
