package storekit

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// FilterAndSort applies opts to an in-memory listing: the reference
// semantics of [eventsource.ListOptions] for stores that list in memory.
func FilterAndSort(infos []eventsource.AggregateInfo, opts eventsource.ListOptions) []eventsource.AggregateInfo {
	out := infos[:0]
	for _, in := range infos {
		if in.Behind() < opts.MinBehind {
			continue
		}
		if !opts.MostBehindFirst && opts.AfterID != uuid.Nil && compareIDs(in.AggregateID, opts.AfterID) <= 0 {
			continue
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b eventsource.AggregateInfo) int {
		if opts.MostBehindFirst {
			if c := cmp.Compare(b.Behind(), a.Behind()); c != 0 {
				return c
			}
		}
		return compareIDs(a.AggregateID, b.AggregateID)
	})
	if opts.Limit > 0 && len(out) > opts.Limit {
		out = out[:opts.Limit]
	}
	return out
}

// compareIDs orders ids as their bytes (and their canonical strings, and
// PostgreSQL's uuid type) order.
func compareIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }
