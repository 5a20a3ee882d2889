package snapshotter

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/evsnap/evsnap/lib/eventsource"
)

// DefaultStatsSample is how many aggregates [Worker.Stats] samples for
// its estimates when StatsOptions.Sample is 0.
const DefaultStatsSample = 5000

// statsRun is how many neighbouring aggregates (in id order) one probe of
// a Stats sample lists.
const statsRun = 250

// StatsOptions controls [Worker.Stats].
type StatsOptions struct {
	// Stalest is how many of the aggregates furthest behind to list.
	Stalest int
	// Exact reads every aggregate of the type (O(aggregates): seconds
	// per million on PostgreSQL) for exact counts and quantiles and the
	// stalest of all. Without it Stats estimates from a sample.
	Exact bool
	// Sample is how many aggregates the estimates rest on; 0 means
	// DefaultStatsSample. A type with at most twice as many aggregates is
	// read whole, and its figures are exact.
	Sample int
}

// Stats describes the snapshot coverage of one aggregate type.
type Stats struct {
	AggregateType string
	// SchemaVersion is the schema version of the type this worker was
	// built with: Snapshots, EventsBehind and Stalest are about the
	// snapshots of it.
	SchemaVersion int
	// Aggregates counts the aggregates of the type; an estimate when
	// AggregatesEstimated is set.
	Aggregates int
	// AggregatesEstimated: Aggregates is the store's estimate (from the
	// database's statistics), not a count.
	AggregatesEstimated bool
	// Snapshots counts the aggregates with a snapshot of SchemaVersion.
	Snapshots int
	// NewestSchema counts the aggregates by the schema version of their
	// newest snapshot (aggregates without one are not counted): during a
	// rolling deploy, how far the newer version's snapshots have spread.
	NewestSchema map[int]int
	// EventsBehind summarises how many events each aggregate's snapshot is
	// behind its head (no snapshot: the whole stream).
	EventsBehind Distribution
	// Stalest lists the aggregates furthest behind, most behind first
	// (with Sampled set, the furthest behind of the sample).
	Stalest []eventsource.AggregateInfo

	// Sampled, when above 0, is the size of the random sample that
	// Snapshots, NewestSchema, EventsBehind (its counts scaled to
	// Aggregates) and Stalest were taken from: they are estimates. 0:
	// every aggregate was read.
	Sampled int
	// SnapshotsMargin is the 95% margin of error of an estimated
	// Snapshots (± aggregates), from the sample's size.
	SnapshotsMargin int
}

// Distribution is a summary of a set of counts.
type Distribution struct {
	Min, P50, P90, P99, Max int64
	Mean                    float64
	// Buckets counts values in [0], [1,10), [10,100), [100,1000), [1000,∞).
	Buckets [5]int
}

// BucketLabels name Distribution.Buckets.
var BucketLabels = [5]string{"0", "1-9", "10-99", "100-999", "1000+"}

// Stats summarises snapshot coverage of typ at the schema version the
// worker was built with, lists the opts.Stalest aggregates furthest
// behind, and counts the aggregates by the schema version of their
// newest snapshot.
//
// By default it reads a bounded number of aggregates, whatever their
// number: the store's count (an estimate from its statistics where the
// store is an [eventsource.AggregateCounter] that estimates) and two
// random samples (see sampleAggregates: probes at random ids, each
// listing 250 neighbours in id order), one measured against
// SchemaVersion's snapshots, one against each aggregate's newest. The
// figures are the samples' scaled to the count, and say so (Sampled). A
// type of at most 2×opts.Sample aggregates is read whole, and its figures
// are exact. On a store that cannot count, the count is a listing of
// every aggregate. With opts.Exact it lists every
// aggregate twice, and once more for the stalest. On a store that cannot
// list, the error matches [ErrCannotList].
func (w *Worker) Stats(ctx context.Context, typ string, opts StatsOptions) (Stats, error) {
	st := Stats{AggregateType: typ, NewestSchema: map[int]int{}}
	t, err := w.target(typ)
	if err != nil {
		return st, err
	}
	if opts.Stalest < 0 || opts.Sample < 0 {
		return st, fmt.Errorf("%w: stats of %s: stalest %d and sample %d must not be negative", ErrInvalidConfig, typ, opts.Stalest, opts.Sample)
	}
	if opts.Sample == 0 {
		opts.Sample = DefaultStatsSample
	}
	st.SchemaVersion = t.schemaVersion
	if opts.Exact {
		return w.exactStats(ctx, st, opts.Stalest)
	}
	of, err := sampleAggregates(ctx, w.cfg.Store, typ, eventsource.ListOptions{SchemaVersion: t.schemaVersion}, opts.Sample, statsRun, nil)
	if err != nil {
		return st, listErr("stats", typ, err)
	}
	newest, err := sampleAggregates(ctx, w.cfg.Store, typ, eventsource.ListOptions{}, opts.Sample, statsRun, of.count)
	if err != nil {
		return st, listErr("stats", typ, err)
	}
	var acc behindAcc
	for _, in := range of.infos {
		acc.add(in)
	}
	for _, in := range newest.infos {
		if in.SnapshotSchemaVersion > 0 {
			st.NewestSchema[in.SnapshotSchemaVersion]++
		}
	}
	st.Snapshots, st.EventsBehind = acc.snapshots, acc.distribution()
	st.Stalest = stalestOf(of.infos, opts.Stalest)
	if of.all { // the whole type: exact
		st.Aggregates = len(of.infos)
		return st, nil
	}
	count := of.count
	if count == nil { // a store that cannot count: a listing
		c, err := w.countAggregates(ctx, typ)
		if err != nil {
			return st, listErr("stats", typ, err)
		}
		count = &c
	}
	st.Aggregates, st.AggregatesEstimated = int(count.N), count.Estimated
	st.Sampled = len(of.infos)
	if st.Sampled == 0 {
		return st, nil
	}
	n, k := float64(st.Aggregates), float64(st.Sampled)
	scale := func(v int, of int) int { return int(math.Round(float64(v) * n / float64(max(of, 1)))) }
	p := float64(acc.snapshots) / k
	st.Snapshots = scale(acc.snapshots, st.Sampled)
	st.SnapshotsMargin = int(math.Ceil(1.96 * math.Sqrt(p*(1-p)/k) * n))
	for i, c := range st.EventsBehind.Buckets {
		st.EventsBehind.Buckets[i] = scale(c, st.Sampled)
	}
	for sv, c := range st.NewestSchema {
		st.NewestSchema[sv] = scale(c, len(newest.infos))
	}
	return st, nil
}

// countAggregates counts the aggregates of typ: the store's count (an
// estimate where it has one) or, for a store that cannot count, a listing.
func (w *Worker) countAggregates(ctx context.Context, typ string) (eventsource.AggregateCount, error) {
	if c, ok := w.cfg.Store.(eventsource.AggregateCounter); ok {
		return c.CountAggregates(ctx, typ, false)
	}
	var n int64
	for _, err := range w.cfg.Store.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
		if err != nil {
			return eventsource.AggregateCount{}, err
		}
		n++
	}
	return eventsource.AggregateCount{N: n}, nil
}

// exactStats fills st from listings of every aggregate of its type.
func (w *Worker) exactStats(ctx context.Context, st Stats, stalest int) (Stats, error) {
	typ := st.AggregateType
	var acc behindAcc
	for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{SchemaVersion: st.SchemaVersion}) {
		if err != nil {
			return st, listErr("stats", typ, err)
		}
		acc.add(info)
	}
	st.Aggregates, st.Snapshots, st.EventsBehind = len(acc.behind), acc.snapshots, acc.distribution()
	for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
		if err != nil {
			return st, listErr("stats", typ, err)
		}
		if info.SnapshotSchemaVersion > 0 {
			st.NewestSchema[info.SnapshotSchemaVersion]++
		}
	}
	if stalest > 0 {
		for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{SchemaVersion: st.SchemaVersion, MostBehindFirst: true, Limit: stalest, MinBehind: 1}) {
			if err != nil {
				return st, listErr("stats", typ, err)
			}
			st.Stalest = append(st.Stalest, info)
		}
	}
	return st, nil
}

// stalestOf returns the n of infos furthest behind (at least 1), most
// behind first, ties in id order: what a MostBehindFirst listing with
// MinBehind 1 and Limit n gives of them.
func stalestOf(infos []eventsource.AggregateInfo, n int) []eventsource.AggregateInfo {
	if n <= 0 {
		return nil
	}
	var out []eventsource.AggregateInfo
	for _, in := range infos {
		if in.Behind() >= 1 {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b eventsource.AggregateInfo) int {
		if c := cmp.Compare(b.Behind(), a.Behind()); c != 0 {
			return c
		}
		return slices.Compare(a.AggregateID[:], b.AggregateID[:])
	})
	return out[:min(n, len(out))]
}

// behindAcc accumulates how far aggregates' snapshots are behind.
type behindAcc struct {
	behind    []int64
	sum       float64
	buckets   [5]int
	snapshots int
}

func (a *behindAcc) add(info eventsource.AggregateInfo) {
	b := info.Behind()
	if info.SnapshotVersion > 0 {
		a.snapshots++
	}
	a.behind = append(a.behind, b)
	a.sum += float64(b)
	switch {
	case b == 0:
		a.buckets[0]++
	case b < 10:
		a.buckets[1]++
	case b < 100:
		a.buckets[2]++
	case b < 1000:
		a.buckets[3]++
	default:
		a.buckets[4]++
	}
}

func (a *behindAcc) distribution() Distribution {
	d := Distribution{Buckets: a.buckets}
	if len(a.behind) == 0 {
		return d
	}
	slices.Sort(a.behind)
	q := func(p float64) int64 { return a.behind[int(p*float64(len(a.behind)-1))] }
	d.Min, d.Max = a.behind[0], a.behind[len(a.behind)-1]
	d.P50, d.P90, d.P99 = q(0.5), q(0.9), q(0.99)
	d.Mean = a.sum / float64(len(a.behind))
	return d
}
