package snapshotter

import (
	"context"
	"errors"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/time/rate"
)

// sweepPage is how many aggregates one page of a marked sweep examines:
// on PostgreSQL one statement of an index range scan and as many
// primary-key lookups (tens of milliseconds at 10 million aggregates).
const sweepPage = 5000

// sweepState is where this replica's marked sweep of one type stands.
// The store keeps a mark (eventsource.SweepMark) that a replica taking
// the sweep over, or this one after a restart, starts from; the replica
// keeps in memory how far it has examined past the mark, which it cannot
// move past an aggregate whose rebuild failed until a retry succeeds.
type sweepState struct {
	// gen is the generation of the stored mark this replica last read or
	// wrote (-1: it must read the mark before going on).
	gen int64
	// stored is what the stored mark holds (its Generation aside).
	stored eventsource.SweepMark
	// at is how far this replica has examined.
	at eventsource.SweepMark
	// pending holds the aggregates whose rebuild failed, in the order
	// examined, each with the mark that examines it again.
	pending []pendingRebuild
}

type pendingRebuild struct {
	id     uuid.UUID
	rewind eventsource.SweepMark
}

// durable is the mark to store: where the examination stands, or just
// before the first aggregate whose rebuild is still pending.
func (st *sweepState) durable() eventsource.SweepMark {
	if len(st.pending) > 0 {
		return st.pending[0].rewind
	}
	return st.at
}

// errMarkMoved stops a type's pass whose mark another sweeper (or a
// prune) changed under it.
var errMarkMoved = errors.New("the sweep mark moved")

// sweepMarked runs one reconciliation pass of t on a store that keeps
// its streams in change order (decision 37). It reads the stored mark;
// retries the rebuilds that failed in earlier passes; then examines
// pages: in id order while a full pass is under way (no mark yet, the
// mark removed by a prune, a lower threshold than the mark's, or a store
// whose change order went back), then in change order, the aggregates
// whose streams changed since the last page. It rebuilds the aggregates
// at least the threshold behind, at most SweepBatch in all (retries
// included), and stores the mark after every page. holding, when not nil,
// says whether this replica may go on sweeping (the lease).
func (w *Worker) sweepMarked(ctx context.Context, ss eventsource.SweepStore, t *target, lim *rate.Limiter, holding func() bool) (swept int, err error) {
	key := eventsource.SweepMarkKey{Name: w.cfg.Consumer, AggregateType: t.name, SchemaVersion: t.schemaVersion}
	st := &t.sweep
	threshold := int64(t.spec.Threshold)
	stored, err := ss.GetSweepMark(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read sweep mark: %w", err)
	}
	if st.gen < 0 || stored.Generation != st.gen {
		// The first pass, or another replica swept, a prune removed the
		// mark, or it was written on another cluster: start from it.
		st.gen, st.at, st.pending = stored.Generation, stored, nil
		st.at.Generation, st.stored = 0, st.at
		if !st.at.Changes && st.at.FullAfter == uuid.Nil {
			w.log.Info("the reconciliation sweep starts a full pass over every aggregate (it has no mark yet, or the mark was removed)",
				"aggregate_type", t.name, "schema_version", t.schemaVersion)
		}
	}
	if st.at.Threshold > threshold {
		w.log.Info("the reconciliation sweep starts a full pass over every aggregate: its threshold is below the one its mark was swept at",
			"aggregate_type", t.name, "threshold", threshold, "mark_threshold", st.at.Threshold)
		st.at, st.pending = eventsource.SweepMark{}, nil
	}
	st.at.Threshold = threshold
	defer func() {
		if errors.Is(err, errMarkMoved) {
			w.log.Info("the reconciliation sweep's mark moved under this pass (another replica swept, or a prune removed it); the next pass starts from it",
				"aggregate_type", t.name, "schema_version", t.schemaVersion)
			st.gen, err = -1, nil
		}
	}()

	budget, found := w.cfg.SweepBatch, 0
	// Retry the rebuilds that failed, oldest first.
	var still []pendingRebuild
	for _, p := range st.pending {
		if budget == 0 {
			still = append(still, p)
			continue
		}
		budget--
		found++
		written, err := w.sweepOne(ctx, t, p.id, lim)
		if ctx.Err() != nil {
			return swept, ctx.Err()
		}
		if err != nil {
			still = append(still, p)
		} else if written {
			swept++
		}
	}
	st.pending = still
	if err := w.saveMark(ctx, ss, key, st); err != nil {
		return swept, err
	}

	for budget > 0 && (holding == nil || holding()) {
		full := !st.at.Changes
		opts := eventsource.ScanOptions{SchemaVersion: t.schemaVersion, MinBehind: threshold, Examine: sweepPage}
		if full {
			opts.ByID, opts.AfterID = true, st.at.FullAfter
		} else {
			opts.After = st.at.After
		}
		page, err := ss.ScanAggregates(ctx, t.name, opts)
		if err != nil {
			return swept, fmt.Errorf("scan: %w", err)
		}
		switch {
		case full && st.at.FullAfter == uuid.Nil:
			// Every change this full pass may miss comes after its first
			// page's horizon: the passes in change order resume there.
			st.at.After = page.Horizon
		case !full && page.Horizon.Compare(st.at.After) < 0:
			w.log.Warn("the store's change order is behind the reconciliation sweep's mark (the data was restored from a backup?); the sweep starts a full pass over every aggregate",
				"aggregate_type", t.name, "schema_version", t.schemaVersion)
			st.at, st.pending = eventsource.SweepMark{Threshold: threshold}, nil
			continue
		}
		found += len(page.Behind)
		cut := false
		for _, a := range page.Behind {
			if budget == 0 {
				cut = true
				break
			}
			budget--
			rewind := st.at
			if full {
				rewind.FullAfter = idBefore(a.AggregateID)
			} else {
				rewind.After = positionBefore(a.Changed)
			}
			written, err := w.sweepOne(ctx, t, a.AggregateID, lim)
			if ctx.Err() != nil {
				return swept, ctx.Err()
			}
			if err != nil {
				st.pending = append(st.pending, pendingRebuild{id: a.AggregateID, rewind: rewind})
			} else if written {
				swept++
			}
			if full {
				st.at.FullAfter = a.AggregateID
			} else {
				st.at.After = a.Changed
			}
		}
		if !cut {
			if full {
				st.at.FullAfter = page.NextID
			} else {
				st.at.After = page.Next
			}
			if full && page.End {
				st.at = eventsource.SweepMark{Threshold: threshold, Changes: true, After: st.at.After}
				w.log.Info("the reconciliation sweep's full pass has ended; its passes now examine the aggregates that change",
					"aggregate_type", t.name, "schema_version", t.schemaVersion)
			}
		}
		if err := w.saveMark(ctx, ss, key, st); err != nil {
			return swept, err
		}
		if !full && page.End {
			break
		}
	}
	t.behind.Store(int64(found))
	return swept, nil
}

// sweepOne snapshots one aggregate the sweep found behind, at the sweep's
// rate. It reports whether it stored a snapshot (not when another replica,
// or a notice, caught the aggregate up first); a failure is logged.
func (w *Worker) sweepOne(ctx context.Context, t *target, id uuid.UUID, lim *rate.Limiter) (bool, error) {
	if err := lim.Wait(ctx); err != nil {
		return false, err
	}
	// process re-reads the snapshot and asks the policy.
	written, err := w.process(ctx, t, id, hints{}, SourceSweep)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("sweep could not snapshot an aggregate; it retries at its next pass", "aggregate_type", t.name, "aggregate_id", id, "error", err)
		}
		return false, err
	}
	if written {
		w.m.swept.Add(ctx, 1, metric.WithAttributeSet(t.attrs.typ))
		w.sum.swept.Add(1)
	}
	return written, nil
}

// saveMark stores st's durable mark when it differs from the stored one,
// compare-and-set on the generation st read or wrote last. It returns
// errMarkMoved when the stored mark is no longer that generation.
func (w *Worker) saveMark(ctx context.Context, ss eventsource.SweepStore, key eventsource.SweepMarkKey, st *sweepState) error {
	m := st.durable()
	if m == st.stored {
		return nil
	}
	m.Generation = st.gen
	gen, err := ss.PutSweepMark(ctx, key, m)
	if errors.Is(err, eventsource.ErrSweepMarkMoved) {
		return errMarkMoved
	}
	if err != nil {
		return fmt.Errorf("store sweep mark: %w", err)
	}
	m.Generation = 0
	st.gen, st.stored = gen, m
	return nil
}

// idBefore returns the id just before id in uuid order (uuid.Nil for
// uuid.Nil): a full pass resumed after it examines id again.
func idBefore(id uuid.UUID) uuid.UUID {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] > 0 {
			id[i]--
			return id
		}
		id[i] = 0xff
	}
	return uuid.Nil
}

// maxID is the greatest uuid.
var maxID = uuid.UUID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// positionBefore returns the change position just before p: a pass in
// change order resumed after it examines p again.
func positionBefore(p eventsource.ChangePosition) eventsource.ChangePosition {
	switch {
	case p.ID != uuid.Nil:
		return eventsource.ChangePosition{Seq: p.Seq, ID: idBefore(p.ID)}
	case p.Seq > 0:
		return eventsource.ChangePosition{Seq: p.Seq - 1, ID: maxID}
	}
	return eventsource.ChangePosition{}
}
