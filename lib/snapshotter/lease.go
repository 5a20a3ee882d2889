package snapshotter

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/logattr"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultLeaseBucket is the JetStream key-value bucket that holds the
// sweep lease of every fleet (one key per durable consumer and version of
// the application: see leaseKey).
const DefaultLeaseBucket = "EVSNAP_LEASES"

// sweepLease lets one replica of a fleet (the replicas sharing a durable
// consumer) run the reconciliation sweep at a time. The lease is a key in
// a JetStream key-value bucket whose entries expire SweepLeaseTTL after
// their last write: the holder rewrites it every TTL/3 with a
// compare-and-set on its own last revision, the others try to create it
// every TTL/3, and a holder that stops deletes it. A holder that dies
// stops renewing, so its key expires and another replica takes the lease
// within TTL + TTL/3.
//
// The lease saves work, it does not guard correctness: two replicas that
// both sweep only rebuild some aggregates twice (snapshot writes are
// monotonic and idempotent). So the lease fails open: a replica that
// cannot reach the bucket sweeps as it did before leases.
type sweepLease struct {
	js     jetstream.JetStream
	bucket string
	key    string
	owner  []byte
	ttl    time.Duration // the bucket's, once it is open
	log    *slog.Logger

	kv  jetstream.KeyValue
	rev uint64 // revision of this replica's last write; 0 when not held

	// state is read by the sweep loop and the leader gauge.
	mu          sync.Mutex
	heldUntil   time.Time // the held lease is valid until then
	unreachable bool      // the last attempt failed for another reason than "held elsewhere"

	leader atomic.Bool // what the evsnap.worker.sweep.leader gauge reports
}

// leaseKey is the sweep lease's key for the replicas of one version of
// an application: the consumer and every type with the schema version the
// worker snapshots, such as "snapshotter/Account=1/Order=1". A worker
// sweeps only the snapshots of its own schema versions, so while two
// versions of an application run side by side (a rolling deploy, a
// rollback) each needs a sweeper of its own; replicas of one version
// share one.
func leaseKey(consumer string, targets map[string]*target) string {
	parts := make([]string, 0, len(targets))
	for name, t := range targets {
		parts = append(parts, name+"="+strconv.Itoa(t.schemaVersion))
	}
	slices.Sort(parts)
	key := consumer + "/" + strings.Join(parts, "/")
	if len(key) > 200 { // many types: keep the key short, and stable
		sum := sha256.Sum256([]byte(key))
		key = consumer + "/" + hex.EncodeToString(sum[:12])
	}
	return key
}

func newSweepLease(js jetstream.JetStream, bucket, key string, ttl time.Duration, log *slog.Logger) *sweepLease {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &sweepLease{js: js, bucket: bucket, key: key, ttl: ttl, log: log, owner: fmt.Appendf(nil, "%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))}
}

// sweeps reports whether this replica should run a sweep pass now: it
// holds the lease, or the lease cannot be reached (fail open).
func (l *sweepLease) sweeps() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unreachable || time.Now().Before(l.heldUntil)
}

// run keeps the lease (renews it, or tries to take it) every TTL/3 until
// ctx ends, then releases it if held. onChange is called when the outcome
// changes (taken, lost, unreachable, reachable again), for logging.
func (l *sweepLease) run(ctx context.Context, onChange func(held bool, err error)) {
	defer l.release(context.WithoutCancel(ctx))
	prevHeld, prevErr := false, error(nil)
	for {
		held, err := l.attempt(ctx)
		if ctx.Err() != nil {
			return
		}
		if held != prevHeld || (err == nil) != (prevErr == nil) {
			onChange(held, err)
		}
		prevHeld, prevErr = held, err
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.ttl / 3):
		}
	}
}

// attempt renews a held lease or tries to take a free one, and records
// the outcome for sweeps. It reports whether this replica holds it.
func (l *sweepLease) attempt(ctx context.Context) (bool, error) {
	actx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	start := time.Now()
	held, err := l.try(actx)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unreachable = err != nil
	if held {
		// Valid for a TTL from before the write, less a margin for clock
		// rates: the server's expiry counts from when it stored the write.
		l.heldUntil = start.Add(l.ttl - l.ttl/10)
	} else {
		l.heldUntil = time.Time{}
	}
	l.leader.Store(held)
	return held, err
}

func (l *sweepLease) try(ctx context.Context) (bool, error) {
	if l.kv == nil {
		kv, err := l.js.KeyValue(ctx, l.bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = l.js.CreateKeyValue(ctx, leaseBucketConfig(l.bucket, l.ttl, 1))
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = l.js.KeyValue(ctx, l.bucket)
			}
		}
		if err != nil {
			return false, fmt.Errorf("sweep lease bucket %s: %w", l.bucket, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return false, fmt.Errorf("sweep lease bucket %s: %w", l.bucket, err)
		}
		if ttl := st.TTL(); ttl > 0 && ttl != l.ttl {
			// The bucket's TTL is what expires the lease: renew by it.
			l.log.Warn("the sweep lease bucket's TTL differs from this replica's; using the bucket's",
				"bucket", l.bucket, logattr.Seconds("bucket_ttl", ttl), logattr.Seconds("configured_ttl", l.ttl))
			l.ttl = ttl
		}
		l.kv = kv
	}
	if l.rev != 0 {
		rev, err := l.kv.Update(ctx, l.key, l.owner, l.rev)
		if err == nil {
			l.rev = rev
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, fmt.Errorf("renew sweep lease %s/%s: %w", l.bucket, l.key, err)
		}
		l.rev = 0 // it expired and another replica took it; try to take it back below
	}
	rev, err := l.kv.Create(ctx, l.key, l.owner)
	switch {
	case err == nil:
		l.rev = rev
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	default:
		return false, fmt.Errorf("take sweep lease %s/%s: %w", l.bucket, l.key, err)
	}
}

// release deletes the lease if this replica holds it, so another replica
// takes it at its next attempt instead of after the TTL.
func (l *sweepLease) release(ctx context.Context) {
	l.mu.Lock()
	l.heldUntil, l.unreachable = time.Time{}, false
	l.mu.Unlock()
	l.leader.Store(false)
	if l.kv == nil || l.rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)) // if it fails, the key expires
	l.rev = 0
}

// leaseBucketConfig is the bucket the lease lives in: one revision per
// key, entries expiring ttl after their last write. It is created by
// `snapshotter migrate` ([EnsureLeaseBucket]) or by the first replica
// that needs it.
func leaseBucketConfig(bucket string, ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "evsnap: the reconciliation sweep's lease, one key per consumer and application version",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureLeaseBucket creates the key-value bucket that holds the sweep
// lease, with entries expiring ttl after their last write and the given
// replicas (those of the notice stream), unless it exists; an existing
// bucket is left as it is (replicas renew by its TTL, whatever theirs
// says). `snapshotter migrate` calls it, so that replicas need no
// permission to create streams; a replica that finds no bucket creates
// one with one replica.
func EnsureLeaseBucket(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, replicas int) error {
	switch {
	case ttl < time.Second:
		return invalid("sweep lease TTL %v is below 1s", ttl)
	case !validBucketName(bucket):
		return invalid("lease bucket %q is not a key-value bucket name (letters, digits, '_' and '-')", bucket)
	}
	if _, err := js.KeyValue(ctx, bucket); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("sweep lease bucket %s: %w", bucket, err)
	}
	if _, err := js.CreateKeyValue(ctx, leaseBucketConfig(bucket, ttl, max(replicas, 1))); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return fmt.Errorf("create sweep lease bucket %s: %w", bucket, err)
	}
	return nil
}
