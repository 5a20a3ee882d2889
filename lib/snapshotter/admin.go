package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/evsnap/evsnap/internal/logattr"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/time/rate"
)

// ErrCannotList: the worker's store cannot list aggregates (its
// ListAggregates yields an error matching errors.ErrUnsupported, as a
// store made by eventsource.Split does), which the reconciliation sweep,
// Rebuild of a whole type, Stats and Verify need. Errors matching it also
// match errors.ErrUnsupported.
var ErrCannotList = errors.New("snapshotter: the store cannot list aggregates")

// listErr is the error of a listing of typ that op (a sentence's subject,
// such as "stats") needed: a store that cannot list gets an
// ErrCannotList that says what op needs.
func listErr(op, typ string, err error) error {
	if errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("%w: %s of %s needs a store that holds both the events and the snapshots (a backend's store, not one made by eventsource.Split): %w",
			ErrCannotList, op, typ, err)
	}
	return fmt.Errorf("list %s: %w", typ, err)
}

func (w *Worker) target(typ string) (*target, error) {
	t := w.targets[typ]
	if t == nil {
		return nil, fmt.Errorf("%w %q (this worker knows %v)", ErrUnknownAggregateType, typ, w.Types())
	}
	return t, nil
}

// sweepLoop runs the reconciliation sweep every SweepInterval (with
// jitter, so replicas spread out) until ctx ends.
func (w *Worker) sweepLoop(ctx context.Context) {
	lim := rate.NewLimiter(rate.Limit(w.cfg.SweepRate), 1)
	for {
		jitter := time.Duration(rand.Int64N(int64(w.cfg.SweepInterval)/5 + 1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.cfg.SweepInterval + jitter):
		}
		if w.lease != nil && !w.lease.sweeps() {
			for _, t := range w.targets {
				t.behind.Store(-1) // the holder reports the gauge
			}
			continue
		}
		n, err := w.sweep(ctx, lim)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrCannotList):
			w.log.Warn("reconciliation sweep stopped; notices are still handled, but lost ones are never caught up", "error", err)
			return
		case err != nil:
			w.log.Warn("reconciliation sweep failed; retrying next period", "error", err, "snapshotted", n)
		case n > 0:
			w.log.Info("reconciliation sweep caught up aggregates whose notices were lost or not yet handled", "snapshotted", n)
		}
	}
}

// logLease logs a change in this replica's hold on the sweep lease.
func (w *Worker) logLease(held bool, err error) {
	l := w.lease
	switch {
	case err != nil:
		w.log.Warn("sweep lease unreachable; sweeping without it until it is reachable again",
			"bucket", l.bucket, "key", l.key, "error", err)
	case held:
		w.log.Info("took the sweep lease; this replica runs the reconciliation sweep", "bucket", l.bucket, "key", l.key, logattr.Seconds("ttl", l.ttl))
	default:
		w.log.Info("another replica holds the sweep lease; not sweeping", "bucket", l.bucket, "key", l.key)
	}
}

// Sweep runs one reconciliation pass now: for every type with a threshold
// it finds aggregates whose snapshot of the type's schema version (the
// one the worker writes) is at least the threshold behind the head, most
// behind first (at most SweepBatch per type), and snapshots them
// at no more than SweepRate per second. It returns how many it snapshotted.
// On a store that cannot list, the error matches [ErrCannotList].
func (w *Worker) Sweep(ctx context.Context) (int, error) {
	return w.sweep(ctx, rate.NewLimiter(rate.Limit(w.cfg.SweepRate), 1))
}

func (w *Worker) sweep(ctx context.Context, lim *rate.Limiter) (int, error) {
	total := 0
	var errs []error
	for _, t := range w.targets {
		if t.spec.Threshold < 1 {
			continue // milestone-only types are not "behind" by a count
		}
		var behind []eventsource.AggregateInfo
		listed := true
		for info, err := range w.store.ListAggregates(ctx, t.name, eventsource.ListOptions{
			SchemaVersion: t.schemaVersion, MinBehind: int64(t.spec.Threshold), MostBehindFirst: true, Limit: w.cfg.SweepBatch,
		}) {
			if err != nil {
				err = listErr("the reconciliation sweep", t.name, err)
				if errors.Is(err, ErrCannotList) {
					return total, err
				}
				errs = append(errs, err)
				listed = false
				break
			}
			behind = append(behind, info)
		}
		if listed {
			t.behind.Store(int64(len(behind))) // the evsnap.worker.aggregate.behind gauge
		}
		for _, info := range behind {
			if err := lim.Wait(ctx); err != nil {
				return total, err
			}
			// Another replica (or a notice) may have caught it up since the
			// listing: process re-reads the snapshot and asks the policy.
			written, err := w.process(ctx, t, info.AggregateID, hints{}, SourceSweep)
			if err != nil {
				if ctx.Err() != nil {
					return total, ctx.Err()
				}
				w.log.Warn("sweep could not snapshot an aggregate", "aggregate_type", t.name, "aggregate_id", info.AggregateID, "error", err)
				continue
			}
			if written {
				total++
				w.m.swept.Add(ctx, 1, metric.WithAttributeSet(t.attrs.typ))
				w.sum.swept.Add(1)
			}
		}
	}
	return total, errors.Join(errs...)
}

// RebuildOptions controls [Worker.Rebuild].
type RebuildOptions struct {
	// ID limits the rebuild to one aggregate.
	ID uuid.UUID
	// Rate caps rebuilds per second (default 100) so a rebuild can never
	// cause a load storm.
	Rate float64
	// Progress, when set, is called after each aggregate with the counts
	// so far and the total to do (-1 when unknown).
	Progress func(done, failed, total int)
}

// RebuildResult counts what a rebuild did.
type RebuildResult struct {
	Rebuilt int
	Failed  int
	Errors  []error // at most 20, the first ones
}

// Rebuild regenerates snapshots of every aggregate of typ (or only
// opts.ID), at their heads, rate-limited. Failures of single aggregates are
// counted and collected; the rebuild goes on. Rebuilding a whole type
// lists its aggregates: on a store that cannot list, the error matches
// [ErrCannotList] (one aggregate, opts.ID, needs no listing).
func (w *Worker) Rebuild(ctx context.Context, typ string, opts RebuildOptions) (RebuildResult, error) {
	var res RebuildResult
	t, err := w.target(typ)
	if err != nil {
		return res, err
	}
	if opts.Rate <= 0 {
		opts.Rate = 100
	}
	lim := rate.NewLimiter(rate.Limit(opts.Rate), 1)
	do := func(id uuid.UUID, total int) error {
		if err := lim.Wait(ctx); err != nil {
			return err
		}
		if _, err := w.rebuild(ctx, t, id, SourceRebuild); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res.Failed++
			if len(res.Errors) < 20 {
				res.Errors = append(res.Errors, fmt.Errorf("%s %s: %w", typ, id, err))
			}
		} else {
			res.Rebuilt++
		}
		if opts.Progress != nil {
			opts.Progress(res.Rebuilt, res.Failed, total)
		}
		return nil
	}
	if opts.ID != uuid.Nil {
		return res, do(opts.ID, 1)
	}
	total := -1
	if st, err := w.Stats(ctx, typ, 0); err == nil {
		total = st.Aggregates
	}
	after := uuid.Nil
	for {
		var page []uuid.UUID
		for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{AfterID: after, Limit: 500}) {
			if err != nil {
				return res, listErr("rebuild", typ, err)
			}
			page = append(page, info.AggregateID)
		}
		if len(page) == 0 {
			return res, nil
		}
		for _, id := range page {
			if err := do(id, total); err != nil {
				return res, err
			}
		}
		after = page[len(page)-1]
	}
}

// Stats describes the snapshot coverage of one aggregate type.
type Stats struct {
	AggregateType string
	// SchemaVersion is the schema version of the type this worker was
	// built with: Snapshots, EventsBehind and Stalest are about the
	// snapshots of it.
	SchemaVersion int
	Aggregates    int
	// Snapshots counts the aggregates with a snapshot of SchemaVersion.
	Snapshots int
	// NewestSchema counts the aggregates by the schema version of their
	// newest snapshot (aggregates without one are not counted): during a
	// rolling deploy, how far the newer version's snapshots have spread.
	NewestSchema map[int]int
	// EventsBehind summarises how many events each aggregate's snapshot is
	// behind its head (no snapshot: the whole stream).
	EventsBehind Distribution
	// Stalest lists the aggregates furthest behind, most behind first.
	Stalest []eventsource.AggregateInfo
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
// worker was built with, listing the `stalest` most behind aggregates,
// and counts the aggregates by the schema version of their newest
// snapshot. It lists the type's aggregates twice (once per question). On
// a store that cannot list, the error matches [ErrCannotList].
func (w *Worker) Stats(ctx context.Context, typ string, stalest int) (Stats, error) {
	st := Stats{AggregateType: typ, NewestSchema: map[int]int{}}
	t, err := w.target(typ)
	if err != nil {
		return st, err
	}
	st.SchemaVersion = t.schemaVersion
	var behind []int64
	var sum float64
	for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{SchemaVersion: t.schemaVersion}) {
		if err != nil {
			return st, listErr("stats", typ, err)
		}
		st.Aggregates++
		b := info.Behind()
		if info.SnapshotVersion > 0 {
			st.Snapshots++
		}
		behind = append(behind, b)
		sum += float64(b)
		switch {
		case b == 0:
			st.EventsBehind.Buckets[0]++
		case b < 10:
			st.EventsBehind.Buckets[1]++
		case b < 100:
			st.EventsBehind.Buckets[2]++
		case b < 1000:
			st.EventsBehind.Buckets[3]++
		default:
			st.EventsBehind.Buckets[4]++
		}
	}
	if len(behind) > 0 {
		slices.Sort(behind)
		q := func(p float64) int64 { return behind[int(p*float64(len(behind)-1))] }
		st.EventsBehind.Min, st.EventsBehind.Max = behind[0], behind[len(behind)-1]
		st.EventsBehind.P50, st.EventsBehind.P90, st.EventsBehind.P99 = q(0.5), q(0.9), q(0.99)
		st.EventsBehind.Mean = sum / float64(len(behind))
	}
	for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
		if err != nil {
			return st, listErr("stats", typ, err)
		}
		if info.SnapshotSchemaVersion > 0 {
			st.NewestSchema[info.SnapshotSchemaVersion]++
		}
	}
	if stalest > 0 {
		for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{SchemaVersion: t.schemaVersion, MostBehindFirst: true, Limit: stalest, MinBehind: 1}) {
			if err != nil {
				return st, listErr("stats", typ, err)
			}
			st.Stalest = append(st.Stalest, info)
		}
	}
	return st, nil
}

// Prune deletes the snapshots of typ with a schema version below
// schemaBelow (all of them for 0) and returns how many it deleted (rows:
// an aggregate has one per kept schema version).
func (w *Worker) Prune(ctx context.Context, typ string, schemaBelow int) (int64, error) {
	if typ == "" {
		return 0, fmt.Errorf("%w: prune needs an aggregate type", ErrInvalidConfig)
	}
	return w.cfg.Store.DeleteSnapshotsByType(ctx, typ, schemaBelow)
}

// Verify checks the snapshots of up to sample aggregates of typ, chosen at
// random (every aggregate when sample is 0), against a full replay of their
// events up to the snapshot's version: a snapshot not tied to its stream's
// history (the stream's event at its version is missing or is another
// than its EventID) is [VerifyStale], one whose state differs from the
// replay's is [VerifyMismatch], one whose state does not decode is
// [VerifyUndecodable]. It changes nothing. It lists the
// aggregates of typ: on a store that cannot list, the error matches
// [ErrCannotList].
func (w *Worker) Verify(ctx context.Context, typ string, sample int) (VerifyReport, error) {
	rep := VerifyReport{AggregateType: typ, ByStatus: map[VerifyStatus]int{}}
	t, err := w.target(typ)
	if err != nil {
		return rep, err
	}
	if sample < 0 {
		return rep, fmt.Errorf("%w: sample %d is negative", ErrInvalidConfig, sample)
	}
	// Reservoir-sample the ids while streaming the listing.
	var ids []uuid.UUID
	seen := 0
	for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
		if err != nil {
			return rep, listErr("verify", typ, err)
		}
		seen++
		switch {
		case sample == 0 || len(ids) < sample:
			ids = append(ids, info.AggregateID)
		default:
			if j := rand.IntN(seen); j < sample {
				ids[j] = info.AggregateID
			}
		}
	}
	for _, id := range ids {
		res, err := t.rb.verify(ctx, id)
		if err != nil {
			return rep, err
		}
		rep.Checked++
		rep.ByStatus[res.Status]++
		if problem(res.Status) && len(rep.Problems) < 50 {
			rep.Problems = append(rep.Problems, res)
		}
	}
	return rep, nil
}
