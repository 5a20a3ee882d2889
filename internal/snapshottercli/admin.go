package snapshottercli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
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

// Rebuild regenerates the snapshots of aggregate type typ (only id's
// when it is not uuid.Nil), at most rate per second, printing progress
// and then every failure to c.Stdout. Any failure makes it an error.
func Rebuild(ctx context.Context, c Config, typ string, id uuid.UUID, rate float64) error {
	w, done, err := adminWorker(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	line := progress.New(c.Stdout)
	res, err := w.Rebuild(ctx, typ, snapshotter.RebuildOptions{ID: id, Rate: rate, Progress: func(n, failed, total int) {
		if total > 0 {
			line.Update("rebuilt %d/%d %s (%d failed, %.0f/s)", n, total, typ, failed, float64(n+failed)/time.Since(start).Seconds())
		} else {
			line.Update("rebuilt %d %s (%d failed)", n, typ, failed)
		}
	}})
	line.Done("rebuilt %d %s snapshots in %v, %d failed", res.Rebuilt, typ, time.Since(start).Round(time.Millisecond), res.Failed)
	for _, e := range res.Errors {
		fmt.Fprintln(c.Stdout, "  failed:", e)
	}
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d rebuilds failed", res.Failed, res.Failed+res.Rebuilt)
	}
	return nil
}

// Prune deletes the snapshots of typ with a schema version below
// schemaBelow and prints how many.
func Prune(ctx context.Context, c Config, typ string, schemaBelow int) error {
	w, done, err := adminWorker(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	n, err := w.Prune(ctx, typ, schemaBelow)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "deleted %d %s snapshots with schema version below %d\n", n, typ, schemaBelow)
	return nil
}

// Stats prints the snapshot coverage of typ: counts, how far snapshots
// are behind their heads, and the top stalest aggregates.
func Stats(ctx context.Context, c Config, typ string, top int) error {
	w, done, err := adminWorker(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	st, err := w.Stats(ctx, typ, top)
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
	fmt.Fprintf(out, "%s: %d aggregates, %d snapshots (of schema version %d)\n", st.AggregateType, st.Aggregates, st.Snapshots, st.SchemaVersion)
	schemas := slices.Sorted(maps.Keys(st.NewestSchema))
	parts := make([]string, len(schemas))
	for i, sv := range schemas {
		parts[i] = fmt.Sprintf("schema %d: %d", sv, st.NewestSchema[sv])
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Fprintf(out, "aggregates by their newest snapshot's schema version: %s\n\n", strings.Join(parts, ", "))
	d := st.EventsBehind
	fmt.Fprintf(out, "events behind the head: min %d  p50 %d  p90 %d  p99 %d  max %d  mean %.1f\n\n", d.Min, d.P50, d.P90, d.P99, d.Max, d.Mean)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "events behind\taggregates\t")
	for i, label := range snapshotter.BucketLabels {
		fmt.Fprintf(tw, "%s\t%d\t\n", label, d.Buckets[i])
	}
	_ = tw.Flush()
	if len(st.Stalest) == 0 {
		return
	}
	fmt.Fprintf(out, "\nstalest %d:\n", len(st.Stalest))
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
