package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/natstest"
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

var statsLine = regexp.MustCompile(`Account: (\d+) aggregates, (\d+) snapshots`)

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

	load := exec.Command(bin, "load", "--nats-url", srv.ClientURL(), "--duration", "1500ms",
		"--aggregates", "3", "--orders", "0", "--rate", "100", "--concurrency", "2")
	load.Dir = dir
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("example-app load: %v\n%s", err, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var runOut, runErr bytes.Buffer
	go func() {
		done <- Main(ctx, []string{"run", "--nats-url", srv.ClientURL(), "--metrics-addr", "", "--sweep-interval", "0",
			"--policy", "Account=threshold:5", "--log-format", "text"}, &runOut, &runErr)
	}()
	stop := func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("snapshotter run exit %d:\n%s", code, runErr.String())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		var out, errOut bytes.Buffer
		Main(context.Background(), []string{"stats", "--type", "Account"}, &out, &errOut)
		last = out.String() + errOut.String()
		if m := statsLine.FindStringSubmatch(last); m != nil {
			if n, _ := strconv.Atoi(m[2]); n > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("no Account snapshot after 30s; last stats:\n%s\nworker log:\n%s", last, runErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
}
