package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/evsnap/evsnap/internal/progress"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func (o *options) run(ctx context.Context) error {
	tel, err := newTelemetry()
	if err != nil {
		return err
	}
	defer func() { _ = tel.shutdown(context.WithoutCancel(ctx)) }()
	b, err := o.openBackend(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	// The worker may start before NATS (compose, Kubernetes): it keeps
	// trying to connect and is not ready until it consumes.
	o.nats.WaitForServer = true
	nc, js, err := o.connectNATS(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := o.worker(b, js, tel)
	if err != nil {
		return err
	}
	var wait func()
	if o.metricsAddr != "" {
		hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		addr, waitHTTP, err := serveHTTP(hctx, o.metricsAddr, w.HealthHandler(), tel.registry, o.logger)
		if err != nil {
			stop()
			return err
		}
		o.logger.Info("serving /healthz, /readyz and /metrics", "addr", addr)
		wait = func() { stop(); waitHTTP() }
	}
	o.logger.Info("snapshotter starting", "backend", b.String(), "stream", o.stream, "consumer", o.consumer,
		"concurrency", o.concurrency, "batch_size", o.batchSize)
	err = w.Run(ctx)
	if wait != nil {
		wait()
	}
	if err != nil {
		return err
	}
	o.logger.Info("snapshotter stopped cleanly")
	return nil
}

func (o *options) migrate(ctx context.Context) error {
	b, err := o.openBackend(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", b.String(), err)
	}
	fmt.Fprintf(o.stdout, "tables migrated: %s\n", b.String())
	nc, js, err := o.connectNATS(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := natsnotice.DefaultStreamConfig()
	cfg.Name = o.stream
	cfg.SubjectPrefix = o.prefix
	cfg.Replicas = o.replicas
	cfg.Duplicates = o.dupWindow
	cfg.MaxBytes = o.maxBytes
	cfg.MaxAge = o.maxAge
	if err := ensureStream(ctx, js, cfg, o.stderr); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "stream ready: %s (subjects %s.>, replicas %d, duplicate window %v)\n", cfg.Name, cfg.SubjectPrefix, cfg.Replicas, cfg.Duplicates)
	return nil
}

// streamPlacementWait bounds how long migrate waits for a JetStream
// cluster that cannot place the stream yet.
const streamPlacementWait = time.Minute

// ensureStream runs natsnotice.EnsureStream, retrying with backoff for up
// to streamPlacementWait while the server says the stream cannot be placed
// yet: a cluster whose nodes are still meeting ("no suitable peers for
// placement"), or whose meta leader is being elected. migrate started with
// a cluster (a compose file, a Kubernetes Job beside a StatefulSet) then
// succeeds once the cluster has formed instead of failing at once. Any
// other error is returned at once.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg natsnotice.StreamConfig, log io.Writer) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 250*time.Millisecond, 5*time.Second, streamPlacementWait
	return backoff.RetryNotify(func() error {
		_, err := natsnotice.EnsureStream(ctx, js, cfg)
		if err != nil && !streamNotPlaceableYet(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		fmt.Fprintf(log, "stream %s not placed yet (%v); retrying in %s\n", cfg.Name, err, wait.Round(time.Millisecond))
	})
}

// JetStream API error codes that a forming cluster answers with.
const (
	jsClusterNoPeers   = 10005 // no suitable peers for placement
	jsClusterNotAvail  = 10008 // JetStream system temporarily unavailable
	jsClusterNoLeader  = 10009 // cluster can not handle request (JSClusterNotLeaderErr)
	jsNotEnabled       = 10076 // JetStream not enabled (yet)
	jsNotEnabledForAcc = 10039 // JetStream not enabled for account (yet)
)

func streamNotPlaceableYet(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jsClusterNoPeers, jsClusterNotAvail, jsClusterNoLeader, jsNotEnabledForAcc, jsNotEnabled:
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrNoResponders)
}

func (o *options) adminWorker(ctx context.Context) (*snapshotter.Worker, func(), error) {
	if err := o.requireType(); err != nil {
		return nil, nil, err
	}
	b, err := o.openBackend(ctx)
	if err != nil {
		return nil, nil, err
	}
	w, err := o.worker(b, nil, nil)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return w, func() { _ = w.Close(context.WithoutCancel(ctx)); b.Close() }, nil
}

func (o *options) rebuild(ctx context.Context) error {
	id, err := o.parseID()
	if err != nil {
		return err
	}
	w, done, err := o.adminWorker(ctx)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	line := progress.New(o.stdout)
	res, err := w.Rebuild(ctx, o.typ, snapshotter.RebuildOptions{ID: id, Rate: o.rate, Progress: func(n, failed, total int) {
		if total > 0 {
			line.Update("rebuilt %d/%d %s (%d failed, %.0f/s)", n, total, o.typ, failed, float64(n+failed)/time.Since(start).Seconds())
		} else {
			line.Update("rebuilt %d %s (%d failed)", n, o.typ, failed)
		}
	}})
	line.Done("rebuilt %d %s snapshots in %v, %d failed", res.Rebuilt, o.typ, time.Since(start).Round(time.Millisecond), res.Failed)
	for _, e := range res.Errors {
		fmt.Fprintln(o.stdout, "  failed:", e)
	}
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d rebuilds failed", res.Failed, res.Failed+res.Rebuilt)
	}
	return nil
}

func (o *options) prune(ctx context.Context) error {
	if o.schemaBelow < 1 {
		return fmt.Errorf("%w: --schema-below N is required and must be at least 1", errUsage)
	}
	if o.schemaBelow > eventsource.MaxSchemaVersion {
		return fmt.Errorf("%w: --schema-below %d is out of range: schema versions run from 1 to %d", errUsage, o.schemaBelow, eventsource.MaxSchemaVersion)
	}
	w, done, err := o.adminWorker(ctx)
	if err != nil {
		return err
	}
	defer done()
	n, err := w.Prune(ctx, o.typ, o.schemaBelow)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "deleted %d %s snapshots with schema version below %d\n", n, o.typ, o.schemaBelow)
	return nil
}

func (o *options) stats(ctx context.Context) error {
	if o.top < 0 {
		return fmt.Errorf("%w: --top must not be negative", errUsage)
	}
	w, done, err := o.adminWorker(ctx)
	if err != nil {
		return err
	}
	defer done()
	st, err := w.Stats(ctx, o.typ, o.top)
	if errors.Is(err, snapshotter.ErrCannotList) {
		return fmt.Errorf("stats: %w", err)
	}
	if err != nil {
		return err
	}
	out := o.stdout
	fmt.Fprintf(out, "%s: %d aggregates, %d snapshots (%d of another schema version)\n\n", st.AggregateType, st.Aggregates, st.Snapshots, st.SnapshotsOtherSchema)
	d := st.EventsBehind
	fmt.Fprintf(out, "events behind the head: min %d  p50 %d  p90 %d  p99 %d  max %d  mean %.1f\n\n", d.Min, d.P50, d.P90, d.P99, d.Max, d.Mean)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "events behind\taggregates\t")
	for i, label := range snapshotter.BucketLabels {
		fmt.Fprintf(tw, "%s\t%d\t\n", label, d.Buckets[i])
	}
	_ = tw.Flush()
	if len(st.Stalest) > 0 {
		fmt.Fprintf(out, "\nstalest %d:\n", len(st.Stalest))
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "aggregate id\thead\tsnapshot\tbehind")
		for _, a := range st.Stalest {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", a.AggregateID, a.HeadVersion, a.SnapshotVersion, a.Behind())
		}
		_ = tw.Flush()
	}
	return nil
}

func (o *options) verify(ctx context.Context) error {
	if o.sample < 0 {
		return fmt.Errorf("%w: --sample must not be negative", errUsage)
	}
	w, done, err := o.adminWorker(ctx)
	if err != nil {
		return err
	}
	defer done()
	rep, err := w.Verify(ctx, o.typ, o.sample)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "%s: checked %d aggregates\n", rep.AggregateType, rep.Checked)
	for _, st := range []snapshotter.VerifyStatus{snapshotter.VerifyOK, snapshotter.VerifyNoSnapshot, snapshotter.VerifyOtherSchema, snapshotter.VerifyStale, snapshotter.VerifyMismatch, snapshotter.VerifyUndecodable} {
		fmt.Fprintf(o.stdout, "  %-13s %d\n", st, rep.ByStatus[st])
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(o.stdout, "  %s %s at v%d: %s\n", p.Status, p.AggregateID, p.SnapshotVersion, p.Detail)
	}
	if bad := rep.ByStatus[snapshotter.VerifyStale] + rep.ByStatus[snapshotter.VerifyMismatch] + rep.ByStatus[snapshotter.VerifyUndecodable]; bad > 0 {
		return fmt.Errorf("%d snapshots do not match a full replay or their stream's history; repair with: snapshotter rebuild --type %s", bad, o.typ)
	}
	return nil
}

// healthcheck asks a running worker's health endpoint, for container
// images that have no HTTP client of their own (distroless).
func (o *options) healthcheck(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url, nil)
	if err != nil {
		return fmt.Errorf("%w: --url %q: %v", errUsage, o.url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", o.url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: %s: %s", o.url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(o.stdout, "%s: %s\n", o.url, strings.TrimSpace(string(body)))
	return nil
}
