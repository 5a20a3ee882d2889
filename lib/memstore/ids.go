package memstore

import (
	"encoding/binary"
	"slices"
	"sort"

	"github.com/google/uuid"
)

// idSet is the set of the event ids an EventStore holds, for its
// store-wide uniqueness check. Version 7 ids, which sort by the time they
// were made (the repository's event ids; decision 35), are kept sorted in
// leaves of up to leafIDs: an id made after every id stored is appended
// to the last leaf, so checking and adding it touches one cache-warm leaf
// however many ids the store holds, where a hash set of millions of ids
// costs a cache miss per append. An id made a little earlier than the
// newest (another goroutine's) lands in one of the last leaves. Ids of
// other versions sort nowhere in particular and are kept in a map; ids of
// different versions are never equal, so each id is looked for only
// among its own kind. The zero value is empty and ready to use.
type idSet struct {
	// leaves hold the version 7 ids in ascending order: none is empty,
	// and every id of leaves[i] is below every id of leaves[i+1].
	leaves [][]uuid.UUID
	other  map[uuid.UUID]struct{}
}

// leafIDs is the most ids a leaf holds (8 KB).
const leafIDs = 512

// compareIDs orders ids as their bytes do.
func compareIDs(a, b uuid.UUID) int {
	if x, y := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8]); x != y {
		if x < y {
			return -1
		}
		return 1
	}
	x, y := binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:])
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// add adds id and reports whether it was not in the set already.
func (s *idSet) add(id uuid.UUID) bool {
	if id.Version() != 7 {
		if s.other == nil {
			s.other = make(map[uuid.UUID]struct{})
		}
		n := len(s.other)
		s.other[id] = struct{}{}
		return len(s.other) > n
	}
	n := len(s.leaves)
	if n == 0 || compareIDs(id, s.leaves[n-1][len(s.leaves[n-1])-1]) > 0 {
		if n == 0 || len(s.leaves[n-1]) == leafIDs {
			s.leaves = append(s.leaves, make([]uuid.UUID, 0, leafIDs))
			n++
		}
		s.leaves[n-1] = append(s.leaves[n-1], id)
		return true
	}
	i, j, found := s.find(id)
	if found {
		return false
	}
	leaf := s.leaves[i]
	if len(leaf) == leafIDs { // split it, and insert into the half id belongs in
		right := make([]uuid.UUID, leafIDs/2, leafIDs)
		copy(right, leaf[leafIDs/2:])
		leaf = leaf[:leafIDs/2]
		s.leaves[i] = leaf
		s.leaves = slices.Insert(s.leaves, i+1, right)
		if j > leafIDs/2 {
			i, j, leaf = i+1, j-leafIDs/2, right
		}
	}
	s.leaves[i] = slices.Insert(leaf, j, id)
	return true
}

// find returns the leaf a version 7 id is in or belongs in, its index
// there, and whether it is there. The set has a leaf.
func (s *idSet) find(id uuid.UUID) (leaf, at int, found bool) {
	n := len(s.leaves)
	leaf = n - 1
	if compareIDs(id, s.leaves[leaf][0]) < 0 { // not the last leaf's (the usual case)
		leaf = sort.Search(n-1, func(k int) bool { l := s.leaves[k]; return compareIDs(l[len(l)-1], id) >= 0 })
	}
	at, found = slices.BinarySearchFunc(s.leaves[leaf], id, compareIDs)
	return leaf, at, found
}

// remove removes id, which is in the set: the undoing of an add.
func (s *idSet) remove(id uuid.UUID) {
	if id.Version() != 7 {
		delete(s.other, id)
		return
	}
	i, j, found := s.find(id)
	if !found {
		return
	}
	if s.leaves[i] = slices.Delete(s.leaves[i], j, j+1); len(s.leaves[i]) == 0 {
		s.leaves = slices.Delete(s.leaves, i, i+1)
	}
}
