package natsserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/natsbin"
	"github.com/evsnap/evsnap/internal/natsserver"
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
