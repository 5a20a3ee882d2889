package snapshotter

import (
	"context"
	"crypto/rand"
	"math/big"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// probeSkip is how many aggregates already picked a probe can pass over.
const probeSkip = 8

// sample is a random sample of the aggregates of a type, listed with the
// snapshot of one schema version (see sampleAggregates).
type sample struct {
	infos []eventsource.AggregateInfo
	// all: the type has at most twice as many aggregates as were wanted,
	// and infos is every one of them, in id order.
	all bool
	// count is the store's count of the type's aggregates, when the store
	// is an eventsource.AggregateCounter.
	count *eventsource.AggregateCount
}

// sampleAggregates picks up to want distinct aggregates of typ at random
// without reading every aggregate, each listed with opts.SchemaVersion's
// snapshot.
//
// A type of at most 2×want aggregates is read whole (all set): it asks a
// store that is an [eventsource.AggregateCounter] for its count (count;
// known, when the caller has it already, is used instead), and lists the
// first 2×want+1 aggregates in id order (a bounded walk of an index) when
// the count is no more than 2×want, or when the store cannot count.
// Otherwise it probes: it picks a point uniformly at random in the id
// space between the type's lowest id and the highest point known to lie
// at or above its highest id (at first the top of the id space), and
// lists the run aggregates after it (ListAggregates with AfterID and
// Limit, one index probe). A probe that finds nothing lowers that upper
// bound to its point, so ids that fill only part of the id space
// (time-ordered UUIDv7, whose leading bits are a timestamp) cost a few
// wasted probes, not a sample of the type's first aggregate. It stops at
// want distinct aggregates or after a bounded number of probes.
//
// A probe lists probeSkip more aggregates than it needs and takes the
// first ones not picked yet; one that finds only aggregates already
// picked steps on after them instead of drawing a new point.
//
// How uniform: a probe lands on the first aggregate above its point, so an
// aggregate's chance is proportional to the gap between its id and the
// previous aggregate's (the lowest id, with no gap below it inside the
// range, is only reached by runs and steps). With random (v4) ids the
// gaps are independent of everything else about an aggregate, so the
// sample is unbiased for how far behind snapshots are and which ones
// exist, though any one aggregate's chance varies several-fold. With
// time-ordered ids the gaps follow time: the first aggregate created in
// each millisecond takes most probes, and the steps after a repeated one
// spread them over its millisecond's next ones, so the sample leans to
// aggregates created when few others were, and to the first of a burst.
// With run > 1 the sample is runs of neighbours in id order (cluster
// sampling): as good as independent picks for random ids, and far cheaper
// per aggregate; with time-ordered ids, neighbours were created together.
func sampleAggregates(ctx context.Context, store eventsource.Store, typ string, opts eventsource.ListOptions, want, run int, known *eventsource.AggregateCount) (sample, error) {
	s := sample{count: known}
	opts.MostBehindFirst, opts.MinBehind, opts.AfterID = false, 0, uuid.Nil
	list := func(o eventsource.ListOptions) ([]eventsource.AggregateInfo, error) {
		var out []eventsource.AggregateInfo
		for in, err := range store.ListAggregates(ctx, typ, o) {
			if err != nil {
				return nil, err
			}
			out = append(out, in)
		}
		return out, nil
	}
	if c, ok := store.(eventsource.AggregateCounter); ok && s.count == nil {
		n, err := c.CountAggregates(ctx, typ, false)
		if err != nil {
			return s, err
		}
		s.count = &n
	}
	first := opts
	first.Limit = 1
	if s.count == nil || s.count.N <= int64(2*want) {
		first.Limit = 2*want + 1
	}
	infos, err := list(first)
	if err != nil {
		return s, err
	}
	if len(infos) < first.Limit {
		s.infos, s.all = infos, true
		return s, nil
	}
	lo := new(big.Int).SetBytes(infos[0].AggregateID[:])
	hi := new(big.Int).Lsh(big.NewInt(1), 128) // exclusive
	seen := make(map[uuid.UUID]bool, want)
	maxProbes := 4*((want+run-1)/run) + 128
	var walk uuid.UUID // after a probe that found only aggregates already picked: where to step on
	for tries := 0; len(s.infos) < want && tries < maxProbes; tries++ {
		at := walk
		if walk == uuid.Nil {
			span := new(big.Int).Sub(hi, lo)
			if span.Sign() <= 0 {
				break
			}
			off, err := rand.Int(rand.Reader, span)
			if err != nil {
				return s, err
			}
			new(big.Int).Add(lo, off).FillBytes(at[:])
		}
		need := min(run, want-len(s.infos))
		o := opts
		o.AfterID, o.Limit = at, need+probeSkip
		got, err := list(o)
		if err != nil {
			return s, err
		}
		if len(got) == 0 {
			if walk == uuid.Nil {
				hi.SetBytes(at[:]) // nothing above at: search below it
			}
			walk = uuid.Nil
			continue
		}
		taken := 0
		for _, in := range got {
			if taken == need {
				break
			}
			if !seen[in.AggregateID] {
				seen[in.AggregateID] = true
				s.infos = append(s.infos, in)
				taken++
			}
		}
		walk = uuid.Nil
		if taken == 0 {
			walk = got[len(got)-1].AggregateID
		}
	}
	return s, nil
}
