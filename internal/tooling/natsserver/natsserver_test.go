package natsserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/natsbin"
	"github.com/evsnap/evsnap/internal/tooling/natsserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStart runs the pinned nats-server as a process and uses JetStream
// on it.
func TestStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := natsbin.Ensure(ctx, ".", "")
	if err != nil {
		t.Fatal(err)
	}
	want := bin.Version
	s, err := natsserver.Start(ctx, bin.Path, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if v := nc.ConnectedServerVersion(); "v"+v != want {
		t.Errorf("connected server version %s, want %s", v, want)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop() // idempotent
}

// TestStartCluster runs three nodes as one JetStream cluster: a stream at
// three replicas is placed on all of them.
func TestStartCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := natsbin.Ensure(ctx, ".", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := natsserver.StartCluster(ctx, bin.Path, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if got := len(c.PIDs()); got != 3 {
		t.Fatalf("%d PIDs, want 3", got)
	}
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var st jetstream.Stream
	// The cluster's meta leader may still be being elected.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create an R3 stream: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info %+v: want a leader and 2 other replicas", info.Cluster)
	}
	if _, err := js.Publish(ctx, "t.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := natsserver.StartCluster(ctx, bin.Path, t.TempDir(), 0); err == nil {
		t.Error("a cluster of 0 nodes started")
	}
}
