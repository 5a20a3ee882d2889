package natsnotice_test

import (
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterLeaderLoss: on a 3-node cluster with the stream at 3
// replicas, the stream's leader stops while notices are in flight, and
// then comes back. Every notice ends in the stream exactly once, none is
// dropped, and no Notify waits beyond the publisher's bound.
func TestClusterLeaderLoss(t *testing.T) {
	const maxEnqueueWait = 100 * time.Millisecond
	c := natstest.RunCluster(t, 3)
	e := connectEnv(t, c.URLs(), false)
	e.cfg.Replicas = 3
	ctx := ctxTimeout(t, 60*time.Second)
	var err error
	if e.stream, err = natsnotice.EnsureStream(ctx, e.js, e.cfg); err != nil {
		t.Fatalf("EnsureStream with 3 replicas: %v", err)
	}
	c.WaitStreamCurrent(e.cfg.Name, 20*time.Second)
	p := e.publisher(natsnotice.WithBufferSize(4096), natsnotice.WithMaxEnqueueWait(maxEnqueueWait),
		natsnotice.WithPublishTimeout(time.Second), natsnotice.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond))
	ids := make([]uuid.UUID, 50)
	for i := range ids {
		ids[i] = uuid.New()
	}
	version := int64(0)
	var slowest time.Duration
	notify := func(n int) {
		t.Helper()
		for range n {
			version++
			start := time.Now()
			err := p.Notify(ctx, appended("Account", ids[int(version)%len(ids)], version, version))
			slowest = max(slowest, time.Since(start))
			if err != nil {
				t.Fatalf("Notify v%d: %v", version, err)
			}
		}
	}

	notify(300)
	leader := c.WaitStreamLeader(e.cfg.Name, -1, 10*time.Second)
	notify(300) // some of these are in flight when the leader goes
	stopped := time.Now()
	c.Stop(leader)
	notify(300)
	next := c.WaitStreamLeader(e.cfg.Name, leader, 30*time.Second)
	t.Logf("leader %s stopped; %s leads %v later", c.NodeName(leader), c.NodeName(next), time.Since(stopped).Round(time.Millisecond))
	notify(300)
	c.Start(leader)
	c.WaitReady(30 * time.Second)
	c.WaitStreamCurrent(e.cfg.Name, 30*time.Second)
	notify(300)

	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (stats %+v)", err, p.Stats())
	}
	if slowest > maxEnqueueWait+time.Second {
		t.Errorf("the slowest Notify took %v, beyond the bound %v (+1s for a busy machine)", slowest, maxEnqueueWait)
	}
	msgs := e.messages()
	seen := map[string]bool{}
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if seen[id] {
			t.Errorf("message %s stored twice", id)
		}
		seen[id] = true
	}
	if len(msgs) != int(version) {
		t.Fatalf("%d messages in the stream, want %d", len(msgs), version)
	}
	st := p.Stats()
	if st.Published != version || st.Dropped != 0 {
		t.Fatalf("stats %+v, want %d published, none dropped", st, version)
	}
	t.Logf("slowest Notify %v; stats %+v", slowest, st)
}
