package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/google/uuid"
)

// buildExampleApp builds cmd/example-app (the other main package, which a
// test cannot import) and returns the binary's path.
func buildExampleApp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "example-app")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/evsnap/evsnap/cmd/example-app")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build example-app: %v\n%s", err, out)
	}
	return bin
}

// A newcomer runs `example-app load` and `snapshotter run` in one
// directory without configuration: no EVSNAP_* variable (TestMain unsets
// them), no store flag. Both must use the one default SQLite file, so the
// worker finds the aggregates the notices name and snapshots them. Only
// the NATS server is given, as a flag, since the test runs its own.
func TestLoadAndRunShareTheDefaultStore(t *testing.T) {
	bin := buildExampleApp(t)
	srv := natstest.RunServer(t)
	dir := t.TempDir()
	t.Chdir(dir)

	rec := filepath.Join(t.TempDir(), "saves.txt")
	load := exec.Command(bin, "load", "--nats-url", srv.ClientURL(), "--duration", "1500ms",
		"--aggregates", "3", "--orders", "0", "--rate", "100", "--concurrency", "2", "--record", rec)
	load.Dir = dir
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("example-app load: %v\n%s", err, out)
	}
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uuid.UUID]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.Fields(l); len(f) == 4 {
			ids[uuid.MustParse(f[1])] = true
		}
	}
	if len(ids) == 0 {
		t.Fatalf("example-app load recorded no saves:\n%s", data)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var runOut, runErr bytes.Buffer
	go func() {
		done <- Main(ctx, []string{"run", "--nats-url", srv.ClientURL(), "--metrics-addr", "", "--sweep-interval", "0",
			"--policy", "Account=threshold:5", "--log-format", "text"}, &runOut, &runErr)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("snapshotter run exit %d:\n%s", code, runErr.String())
		}
	}()
	// The store the worker should be writing to: the default, read
	// directly (Main is not meant to run twice at once in one process).
	b, err := storeopen.Open(ctx, storeopen.Options{SQLitePath: storeopen.DefaultSQLitePath})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for id := range ids {
			if s, err := b.GetSnapshot(ctx, exampledomain.AccountType, id, 1); err == nil && s != nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Account snapshot in %s after 30s; worker log:\n%s", storeopen.DefaultSQLitePath, runErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
