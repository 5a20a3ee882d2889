package natsserver_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/natsserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestBuildStart builds the pinned nats-server (seconds from the module
// cache; once per version in the user's cache directory), checks that the
// binary is that version, runs it and uses JetStream on it.
func TestBuildStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	want, err := natsserver.PinnedVersion()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := natsserver.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if !strings.Contains(string(out), strings.TrimPrefix(want, "v")) {
		t.Fatalf("%s --version = %q, want %s", bin, out, want)
	}
	s, err := natsserver.Start(ctx, bin, t.TempDir())
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
