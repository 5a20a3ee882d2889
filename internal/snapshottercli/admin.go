package snapshottercli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/evsnap/evsnap/internal/progress"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// adminWorker opens the store and a worker that consumes nothing, for
// the admin commands; done closes both.
func adminWorker(ctx context.Context, c Config) (w *snapshotter.Worker, done func(), err error) {
	b, err := openBackend(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	w, err = NewWorker(c, b, nil, nil)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return w, func() { _ = w.Close(context.WithoutCancel(ctx)); b.Close() }, nil
}

// Rebuild regenerates the snapshots of aggregate type typ (only opts.ID's
// when it is set; from after opts.After when that is), at most opts.Rate
// per second, printing progress and then every failure to c.Stdout. A
// rebuild of a whole type that stops early (a signal, an error) prints
// the --resume-after to continue with. Any failure makes it an error.
func Rebuild(ctx context.Context, c Config, typ string, opts snapshotter.RebuildOptions) error {
	w, done, err := adminWorker(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	line := progress.New(c.Stdout)
	opts.Progress = func(p snapshotter.RebuildProgress) {
		n := p.Rebuilt + p.Failed
		rate := float64(n) / time.Since(start).Seconds()
		switch {
		case p.Total > 0:
			line.Update("rebuilt %d of %s %s (%d failed, %.0f/s), at %s", p.Rebuilt, about(p.Total, p.TotalEstimated), typ, p.Failed, rate, p.Last)
		default:
			line.Update("rebuilt %d %s (%d failed, %.0f/s), at %s", p.Rebuilt, typ, p.Failed, rate, p.Last)
		}
	}
	res, err := w.Rebuild(ctx, typ, opts)
	line.Done("rebuilt %d %s snapshots in %v, %d failed", res.Rebuilt, typ, time.Since(start).Round(time.Millisecond), res.Failed)
	for _, e := range res.Errors {
		fmt.Fprintln(c.Stdout, "  failed:", e)
	}
	if err != nil {
		if opts.ID == uuid.Nil && res.Last != uuid.Nil {
			fmt.Fprintf(c.Stdout, "stopped after %s %s; every aggregate up to it was handled. Resume with: snapshotter rebuild --type %s --resume-after %s\n", typ, res.Last, typ, res.Last)
		}
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d rebuilds failed", res.Failed, res.Failed+res.Rebuilt)
	}
	return nil
}

// about formats n, with a ~ when it is an estimate.
func about(n int, estimated bool) string {
	if estimated {
		return fmt.Sprintf("~%d", n)
	}
	return strconv.Itoa(n)
}

// Prune deletes the snapshots of typ with a schema version below
// schemaBelow, in batches (opts), printing progress and how many it
// deleted. One that stops early prints the --resume-after to continue
// with.
func Prune(ctx context.Context, c Config, typ string, schemaBelow int, opts snapshotter.PruneOptions) error {
	w, done, err := adminWorker(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	line := progress.New(c.Stdout)
	opts.Progress = func(r snapshotter.PruneResult) {
		line.Update("deleted %d %s snapshots in %d batches, at %s", r.Deleted, typ, r.Batches, r.Last)
	}
	res, err := w.Prune(ctx, typ, schemaBelow, opts)
	if err != nil {
		line.Done("deleted %d %s snapshots with schema version below %d in %v before stopping", res.Deleted, typ, schemaBelow, time.Since(start).Round(time.Millisecond))
		if res.Batched && res.Last != uuid.Nil {
			fmt.Fprintf(c.Stdout, "stopped after %s %s; every aggregate up to it is pruned. Resume with: snapshotter prune --type %s --schema-below %d --resume-after %s\n",
				typ, res.Last, typ, schemaBelow, res.Last)
		}
		return err
	}
	how := "in one statement"
	switch {
	case res.Batched && res.Batches == 1:
		how = "in 1 batch"
	case res.Batched:
		how = fmt.Sprintf("in %d batches", res.Batches)
	}
	line.Done("deleted %d %s snapshots with schema version below %d %s, %v", res.Deleted, typ, schemaBelow, how, time.Since(start).Round(time.Millisecond))
	return nil
}

// Stats prints the snapshot coverage of typ: counts, how far snapshots
// are behind their heads, and the top stalest aggregates; estimated from
// samples unless opts.Exact, and labelled so.
func Stats(ctx context.Context, c Config, typ string, opts snapshotter.StatsOptions) error {
	w, done, err := adminWorker(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	st, err := w.Stats(ctx, typ, opts)
	if errors.Is(err, snapshotter.ErrCannotList) {
		return fmt.Errorf("stats: %w", err)
	}
	if err != nil {
		return err
	}
	printStats(c.Stdout, st)
	return nil
}

func printStats(out io.Writer, st snapshotter.Stats) {
	est := st.Sampled > 0
	n := about(st.Aggregates, st.AggregatesEstimated)
	snaps := strconv.Itoa(st.Snapshots)
	if est {
		snaps = fmt.Sprintf("~%d (±%d)", st.Snapshots, st.SnapshotsMargin)
	}
	fmt.Fprintf(out, "%s: %s aggregates, %s snapshots (of schema version %d)\n", st.AggregateType, n, snaps, st.SchemaVersion)
	if st.AggregatesEstimated {
		fmt.Fprintln(out, "the number of aggregates is the store's estimate from its statistics")
	}
	if est {
		fmt.Fprintf(out, "estimated from a random sample of %d aggregates (its counts scaled to the whole type); --exact reads every aggregate\n", st.Sampled)
	}
	schemas := slices.Sorted(maps.Keys(st.NewestSchema))
	parts := make([]string, len(schemas))
	for i, sv := range schemas {
		parts[i] = fmt.Sprintf("schema %d: %s", sv, about(st.NewestSchema[sv], est))
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Fprintf(out, "aggregates by their newest snapshot's schema version: %s\n\n", strings.Join(parts, ", "))
	d := st.EventsBehind
	of := ""
	if est {
		of = " (of the sample)"
	}
	fmt.Fprintf(out, "events behind the head%s: min %d  p50 %d  p90 %d  p99 %d  max %d  mean %.1f\n\n", of, d.Min, d.P50, d.P90, d.P99, d.Max, d.Mean)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	if est {
		fmt.Fprintln(tw, "events behind\taggregates (estimated)\t")
	} else {
		fmt.Fprintln(tw, "events behind\taggregates\t")
	}
	for i, label := range snapshotter.BucketLabels {
		fmt.Fprintf(tw, "%s\t%s\t\n", label, about(d.Buckets[i], est))
	}
	_ = tw.Flush()
	if len(st.Stalest) == 0 {
		return
	}
	if est {
		fmt.Fprintf(out, "\nstalest %d of the sample (--exact lists the stalest of all):\n", len(st.Stalest))
	} else {
		fmt.Fprintf(out, "\nstalest %d:\n", len(st.Stalest))
	}
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "aggregate id\thead\tsnapshot\tbehind")
	for _, a := range st.Stalest {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", a.AggregateID, a.HeadVersion, a.SnapshotVersion, a.Behind())
	}
	_ = tw.Flush()
}

// Verify compares sample snapshots of typ (0: all) with a full replay and
// prints the count of each outcome and every problem. A stale,
// mismatched or undecodable snapshot makes it an error.
func Verify(ctx context.Context, c Config, typ string, sample int) error {
	w, done, err := adminWorker(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	rep, err := w.Verify(ctx, typ, sample)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "%s: checked %d aggregates\n", rep.AggregateType, rep.Checked)
	for _, st := range []snapshotter.VerifyStatus{snapshotter.VerifyOK, snapshotter.VerifyNoSnapshot, snapshotter.VerifyStale, snapshotter.VerifyMismatch, snapshotter.VerifyUndecodable} {
		fmt.Fprintf(c.Stdout, "  %-13s %d\n", st, rep.ByStatus[st])
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(c.Stdout, "  %s %s at v%d: %s\n", p.Status, p.AggregateID, p.SnapshotVersion, p.Detail)
	}
	if bad := rep.ByStatus[snapshotter.VerifyStale] + rep.ByStatus[snapshotter.VerifyMismatch] + rep.ByStatus[snapshotter.VerifyUndecodable]; bad > 0 {
		return fmt.Errorf("%d snapshots do not match a full replay or their stream's history; repair with: snapshotter rebuild --type %s", bad, typ)
	}
	return nil
}

// Healthcheck asks a running worker's health endpoint url, for container
// images that have no HTTP client of their own (distroless), and prints
// its answer; anything but 200 within timeout is an error.
func Healthcheck(ctx context.Context, out io.Writer, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(out, "%s: %s\n", url, strings.TrimSpace(string(body)))
	return nil
}
