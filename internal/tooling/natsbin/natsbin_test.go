package natsbin_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/natsbin"
)

// Ensure builds the pinned server once into the cache, reuses it after,
// and rebuilds a file that is not that server.
func TestEnsureBuildsOnceAndReuses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	want, err := natsbin.PinnedVersion(ctx, ".")
	if err != nil {
		t.Fatal(err)
	}
	first, err := natsbin.Ensure(ctx, ".", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Built || first.Version != want {
		t.Fatalf("first Ensure = %+v, want a fresh build of %s", first, want)
	}
	t.Logf("built nats-server %s in %v", first.Version, first.Took.Round(time.Millisecond))
	again, err := natsbin.Ensure(ctx, ".", dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Built || again.Path != first.Path {
		t.Fatalf("second Ensure = %+v, want the cached %s", again, first.Path)
	}
	if err := os.WriteFile(first.Path, []byte("#!/bin/sh\necho nats-server: v0.0.1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fixed, err := natsbin.Ensure(ctx, ".", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fixed.Built {
		t.Fatalf("Ensure kept a binary of the wrong version: %+v", fixed)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("cache dir holds %d entries, want only the binary (no temporary files left)", len(entries))
	}
}
