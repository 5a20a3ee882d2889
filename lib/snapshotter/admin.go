package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/evsnap/evsnap/internal/logattr"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
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
		n, err := w.sweep(ctx, lim, func() bool { return w.lease == nil || w.lease.sweeps() })
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
// one the worker writes) is at least the threshold behind the head and
// snapshots them at no more than SweepRate per second, at most SweepBatch
// per type. It returns how many it snapshotted. On a store that cannot
// list, the error matches [ErrCannotList].
//
// On a store that keeps its streams in change order
// ([eventsource.SweepStore]: the backends), a pass examines only the
// aggregates whose streams changed since the last pass (in the order
// they changed), from the mark the store keeps for the worker's consumer,
// type and schema version; the first pass, and the first after a prune
// removed the mark or the threshold was lowered, is a full pass over
// every aggregate in id order, paged, which may take several passes.
// An aggregate whose rebuild fails is retried at the next passes; the
// mark never moves past it until a retry succeeds (see
// docs/decisions/0037-sweep-costs-what-changed.md). On another store it
// lists the aggregates most behind first.
func (w *Worker) Sweep(ctx context.Context) (int, error) {
	return w.sweep(ctx, rate.NewLimiter(rate.Limit(w.cfg.SweepRate), 1), nil)
}

// sweep runs one pass; holding, when not nil, says whether this replica
// may go on sweeping (it holds the lease) between pages.
func (w *Worker) sweep(ctx context.Context, lim *rate.Limiter, holding func() bool) (int, error) {
	w.sweepMu.Lock()
	defer w.sweepMu.Unlock()
	ss, marked := w.cfg.Store.(eventsource.SweepStore)
	total := 0
	var errs []error
	for _, t := range w.targets {
		if t.spec.Threshold < 1 {
			continue // milestone-only types are not "behind" by a count
		}
		if marked {
			n, err := w.sweepMarked(ctx, ss, t, lim, holding)
			total += n
			if ctx.Err() != nil {
				return total, ctx.Err()
			}
			if !errors.Is(err, errors.ErrUnsupported) { // else the store cannot: list
				if err != nil {
					errs = append(errs, fmt.Errorf("sweep %s: %w", t.name, err))
				}
				continue
			}
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
			// Another replica (or a notice) may have caught it up since the
			// listing: process re-reads the snapshot and asks the policy.
			written, _ := w.sweepOne(ctx, t, info.AggregateID, lim)
			if ctx.Err() != nil {
				return total, ctx.Err()
			}
			if written {
				total++
			}
		}
	}
	return total, errors.Join(errs...)
}

// RebuildOptions controls [Worker.Rebuild].
type RebuildOptions struct {
	// ID limits the rebuild to one aggregate.
	ID uuid.UUID
	// After resumes a rebuild of a whole type: only the aggregates with
	// ids above it are rebuilt (a rebuild goes in id order, so a stopped
	// one resumes after its RebuildResult.Last). It cannot go with ID.
	After uuid.UUID
	// Rate caps rebuilds per second (default 100) so a rebuild can never
	// cause a load storm.
	Rate float64
	// Progress, when set, is called after each aggregate.
	Progress func(RebuildProgress)
}

// RebuildProgress is a rebuild's progress so far.
type RebuildProgress struct {
	// Rebuilt and Failed count this run's aggregates.
	Rebuilt, Failed int
	// Total is the number of aggregates of the whole type, a resumed
	// run's too (-1 when unknown); an estimate from the store's
	// statistics when TotalEstimated is set.
	Total          int
	TotalEstimated bool
	// Last is the id of the last aggregate handled, rebuilt or failed:
	// RebuildOptions.After to resume from.
	Last uuid.UUID
}

// RebuildResult counts what a rebuild did.
type RebuildResult struct {
	Rebuilt int
	Failed  int
	Errors  []error // at most 20, the first ones
	// Last is the highest id of an aggregate handled (rebuilt or failed);
	// every aggregate of the type up to it was handled, so a rebuild of
	// the type resumes with RebuildOptions.After set to it. uuid.Nil when
	// none was.
	Last uuid.UUID
}

// rebuildPage is how many aggregates one listing of a rebuild reads.
const rebuildPage = 500

// Rebuild regenerates snapshots of every aggregate of typ (or only
// opts.ID), at their heads, rate-limited. Failures of single aggregates are
// counted and collected; the rebuild goes on. A rebuild of a whole type
// walks the type in id order, listing 500 aggregates at a time (one
// bounded query each, keyset-paginated on the id) and writing each
// aggregate's snapshot with a statement of its own, so no statement or
// lock outlasts one page or one aggregate. When ctx ends it returns the
// result so far, whose Last resumes it (opts.After); running it again
// from the start is also safe, as rebuilding an aggregate twice writes the
// same snapshot. The total it reports comes from the store's count (an
// estimate where the store has one). Rebuilding a whole type lists its
// aggregates: on a store that cannot list, the error matches
// [ErrCannotList] (one aggregate, opts.ID, needs no listing).
func (w *Worker) Rebuild(ctx context.Context, typ string, opts RebuildOptions) (RebuildResult, error) {
	var res RebuildResult
	t, err := w.target(typ)
	if err != nil {
		return res, err
	}
	if opts.ID != uuid.Nil && opts.After != uuid.Nil {
		return res, fmt.Errorf("%w: rebuild of %s: an aggregate id (%s) and a point to resume after (%s) do not go together", ErrInvalidConfig, typ, opts.ID, opts.After)
	}
	if opts.Rate <= 0 {
		opts.Rate = 100
	}
	lim := rate.NewLimiter(rate.Limit(opts.Rate), 1)
	prog := RebuildProgress{Total: -1}
	do := func(id uuid.UUID) error {
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
		res.Last = id
		if opts.Progress != nil {
			prog.Rebuilt, prog.Failed, prog.Last = res.Rebuilt, res.Failed, id
			opts.Progress(prog)
		}
		return nil
	}
	if opts.ID != uuid.Nil {
		prog.Total = 1
		return res, do(opts.ID)
	}
	if c, err := w.countAggregates(ctx, typ); err == nil {
		prog.Total, prog.TotalEstimated = int(c.N), c.Estimated
	} else if errors.Is(err, errors.ErrUnsupported) {
		return res, listErr("rebuild", typ, err)
	}
	after := opts.After
	for {
		var page []uuid.UUID
		for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{AfterID: after, Limit: rebuildPage}) {
			if err != nil {
				return res, listErr("rebuild", typ, err)
			}
			page = append(page, info.AggregateID)
		}
		for _, id := range page {
			if err := do(id); err != nil {
				return res, err
			}
		}
		if len(page) < rebuildPage {
			return res, nil
		}
		after = page[len(page)-1]
	}
}

// DefaultPruneBatch is how many aggregates one statement of a prune
// covers when PruneOptions.Batch is 0.
const DefaultPruneBatch = 1000

// PruneOptions controls [Worker.Prune].
type PruneOptions struct {
	// Batch is the most aggregates one batch covers (default
	// DefaultPruneBatch): one statement that locks the rows of at most
	// that many.
	Batch int
	// After resumes a prune: only the aggregates with ids above it are
	// covered (a prune goes in id order, so a stopped one resumes after
	// its PruneResult.Last).
	After uuid.UUID
	// Progress, when set, is called after each batch with the result so
	// far.
	Progress func(PruneResult)
}

// PruneResult is what a prune did.
type PruneResult struct {
	// Deleted counts the snapshot rows removed (an aggregate has one per
	// kept schema version).
	Deleted int64
	// Batches counts the store calls, one statement each.
	Batches int
	// Last is the highest aggregate id covered so far: PruneOptions.After
	// to resume from. uuid.Nil when none was.
	Last uuid.UUID
	// Done reports that the prune covered every aggregate.
	Done bool
	// Batched reports that the store pruned in batches (it is an
	// [eventsource.SnapshotPruner]); otherwise one
	// DeleteSnapshotsByType did the whole prune.
	Batched bool
}

// Prune deletes the snapshots of typ with a schema version below
// schemaBelow (all of them for 0). On a store that is an
// [eventsource.SnapshotPruner] it goes in batches of opts.Batch
// aggregates in id order, each one short statement, and stops when ctx
// ends with the result so far: its Last resumes it (opts.After), and
// running it again from the start only re-reads what is already clean.
// On any other store it is one DeleteSnapshotsByType (opts.After must
// then be unset).
func (w *Worker) Prune(ctx context.Context, typ string, schemaBelow int, opts PruneOptions) (PruneResult, error) {
	var res PruneResult
	if typ == "" {
		return res, fmt.Errorf("%w: prune needs an aggregate type", ErrInvalidConfig)
	}
	if opts.Batch < 0 {
		return res, fmt.Errorf("%w: prune of %s in batches of %d aggregates; a batch takes at least 1 (0: %d)", ErrInvalidConfig, typ, opts.Batch, DefaultPruneBatch)
	}
	if opts.Batch == 0 {
		opts.Batch = DefaultPruneBatch
	}
	p, ok := w.cfg.Store.(eventsource.SnapshotPruner)
	if !ok {
		if opts.After != uuid.Nil {
			return res, fmt.Errorf("%w: prune of %s: this store deletes in one statement and cannot resume after %s", ErrInvalidConfig, typ, opts.After)
		}
		n, err := w.cfg.Store.DeleteSnapshotsByType(ctx, typ, schemaBelow)
		if err != nil {
			return res, err
		}
		res.Deleted, res.Batches, res.Done = n, 1, true
		return res, nil
	}
	res.Batched, res.Last = true, opts.After
	for !res.Done {
		b, err := p.PruneSnapshots(ctx, typ, schemaBelow, res.Last, opts.Batch)
		if err != nil {
			return res, err
		}
		res.Batches++
		res.Deleted += b.Deleted
		res.Done = b.Done
		if b.Last != uuid.Nil {
			res.Last = b.Last
		}
		if opts.Progress != nil {
			opts.Progress(res)
		}
	}
	return res, nil
}

// Verify checks the snapshots of up to sample aggregates of typ, chosen at
// random without reading every aggregate (see sampleAggregates: the
// store's count, then one index probe at a random id per pick; a type of
// at most 2×sample aggregates is listed whole and sampled exactly
// uniformly), or of every aggregate when sample is 0,
// against a full replay of their
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
	var ids []uuid.UUID
	if sample == 0 {
		for info, err := range w.store.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
			if err != nil {
				return rep, listErr("verify", typ, err)
			}
			ids = append(ids, info.AggregateID)
		}
	} else {
		s, err := sampleAggregates(ctx, w.cfg.Store, typ, eventsource.ListOptions{}, sample, 1, nil)
		if err != nil {
			return rep, listErr("verify", typ, err)
		}
		if s.all && len(s.infos) > sample { // a census of up to twice the sample: pick from it
			rand.Shuffle(len(s.infos), func(i, j int) { s.infos[i], s.infos[j] = s.infos[j], s.infos[i] })
			s.infos = s.infos[:sample]
		}
		for _, in := range s.infos {
			ids = append(ids, in.AggregateID)
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
