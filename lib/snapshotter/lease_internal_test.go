package snapshotter

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLeaseFailsOpen: a replica that cannot reach the lease bucket sweeps
// anyway (the lease saves work, it does not guard correctness), and one
// that reaches it again and finds the lease held elsewhere stops.
func TestLeaseFailsOpen(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.ClientURL())
	js := natstest.JetStream(t, nc)
	ctx := context.Background()
	bucket := natstest.UniqueName(t, "LEASE")
	if err := EnsureLeaseBucket(ctx, js, bucket, time.Minute, 1); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "snapshotter/Account=1", []byte("another replica")); err != nil {
		t.Fatal(err)
	}

	held := newSweepLease(js, bucket, "snapshotter/Account=1", time.Minute, slog.New(slog.DiscardHandler))
	if ok, err := held.attempt(ctx); ok || err != nil || held.sweeps() {
		t.Fatalf("lease held elsewhere: attempt = %v, %v; sweeps = %v; want false, nil, false", ok, err, held.sweeps())
	}

	closed := natstest.Connect(t, srv.ClientURL())
	cjs, err := jetstream.New(closed)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	unreachable := newSweepLease(cjs, bucket, "snapshotter/Account=1", time.Minute, slog.New(slog.DiscardHandler))
	if ok, err := unreachable.attempt(ctx); ok || err == nil || !unreachable.sweeps() {
		t.Fatalf("bucket unreachable: attempt = %v, %v; sweeps = %v; want false, an error, true (fail open)", ok, err, unreachable.sweeps())
	}
	if unreachable.leader.Load() {
		t.Fatal("an unreachable lease reports this replica as the leader")
	}
}
