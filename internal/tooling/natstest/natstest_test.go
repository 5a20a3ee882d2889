package natstest_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

func TestRunServerJetStream(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s.ClientURL())
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "t.1", []byte("x")); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// TestRestart checks that a restarted server keeps its port (the client
// reconnects by itself) and its store (the stream and message survive).
func TestRestart(t *testing.T) {
	s := natstest.RunServer(t)
	url := s.ClientURL()
	reconnected := make(chan struct{}, 1)
	nc := natstest.Connect(t, url, nats.ReconnectHandler(func(*nats.Conn) {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}))
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "r.1", []byte("before")); err != nil {
		t.Fatalf("publish: %v", err)
	}

	natstest.Shutdown(s)
	s2 := natstest.Restart(t, s)
	if s2.ClientURL() != url {
		t.Fatalf("restarted server at %s, want %s", s2.ClientURL(), url)
	}
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("client did not reconnect to the restarted server")
	}
	var st jetstream.Stream
	var err error
	for { // JetStream may need a moment to recover the stream
		if st, err = js.Stream(ctx, "R"); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "r.1")
	if err != nil {
		t.Fatalf("message after restart: %v", err)
	}
	if string(m.Data) != "before" {
		t.Fatalf("message after restart = %q, want %q", m.Data, "before")
	}
}

func TestUniqueName(t *testing.T) {
	a, b := natstest.UniqueName(t, "EVSNAP"), natstest.UniqueName(t, "EVSNAP")
	if a == b {
		t.Fatalf("two unique names are equal: %s", a)
	}
	if !regexp.MustCompile(`^EVSNAP_[0-9a-f]{8}$`).MatchString(a) {
		t.Fatalf("unique name %q has an unexpected form", a)
	}
}

func TestExternalURL(t *testing.T) {
	url := natstest.ExternalURL(t) // skips (or fails under EVSNAP_REQUIRE_SERVICES=1) without a server
	nc := natstest.Connect(t, url)
	js := natstest.JetStream(t, nc)
	name := natstest.UniqueName(t, "NATSTEST")
	natstest.DeleteStreamOnCleanup(t, js, name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatalf("create stream on the real server: %v", err)
	}
}

// TestClusterLeaderFailover: an R3 stream on a 3-node cluster keeps
// taking messages when its leader stops, and the stopped node catches up
// when it comes back.
func TestClusterLeaderFailover(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, c.URLs())
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "C", Subjects: []string{"c.>"}, Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	c.WaitStreamCurrent("C", 10*time.Second)
	if _, err := js.Publish(ctx, "c.1", []byte("before")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	old := c.StreamLeader("C")
	stopped := time.Now()
	c.Stop(old)
	if c.Running(old) {
		t.Fatalf("node %s still running after Stop", c.NodeName(old))
	}
	now := c.WaitStreamLeader("C", old, 20*time.Second)
	t.Logf("leader %s stopped; %s leads %v later", c.NodeName(old), c.NodeName(now), time.Since(stopped).Round(time.Millisecond))
	var err error
	for { // the client may still be reconnecting or the election settling
		if _, err = js.Publish(ctx, "c.2", []byte("during")); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("publish with the leader stopped: %v", err)
	}
	c.Start(old)
	c.WaitReady(20 * time.Second)
	c.WaitStreamCurrent("C", 20*time.Second)
	// The restarted node holds both messages: ask it alone.
	direct := natstest.JetStream(t, natstest.Connect(t, c.ClientURL(old)))
	st, err := direct.Stream(ctx, "C")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("after restart: %d messages, replicas %+v; want 2 messages and 2 replicas besides the leader", info.State.Msgs, info.Cluster.Replicas)
	}
}
