package snapshottercli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Migrate creates or upgrades the tables, then creates or updates the
// notice stream c.Stream, waiting for a cluster that cannot place it yet.
func Migrate(ctx context.Context, c Config) error {
	b, err := openBackend(ctx, c)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", b.String(), err)
	}
	fmt.Fprintf(c.Stdout, "tables migrated: %s\n", b.String())
	nc, js, err := connectNATS(ctx, c)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := c.Stream
	if err := ensureStream(ctx, js, cfg, c.Stderr); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "stream ready: %s (subjects %s.>, replicas %d, duplicate window %v)\n", cfg.Name, cfg.SubjectPrefix, cfg.Replicas, cfg.Duplicates)
	lease := c.Worker.LeaseBucket
	if lease == "" {
		lease = snapshotter.DefaultLeaseBucket
	}
	ttl := c.Worker.SweepLeaseTTL
	if ttl == 0 {
		ttl = snapshotter.DefaultConfig().SweepLeaseTTL
	}
	if err := snapshotter.EnsureLeaseBucket(ctx, js, lease, ttl, cfg.Replicas); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "sweep lease bucket ready: %s (TTL %v)\n", lease, ttl)
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
