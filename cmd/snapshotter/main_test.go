package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/syncbuf"

	"github.com/evsnap/evsnap/internal/envflag"
	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
)

func TestMain(m *testing.M) {
	envflag.UnsetProgramVars() // the caller's EVSNAP_* settings must not change what the tests see
	leakcheck.VerifyTestMain(m)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The binary end to end: migrate creates tables and stream; run serves
// /healthz, /readyz and /metrics and exits 0 on cancellation (SIGTERM);
// stats and prune work on the same store.
func TestMigrateRunStatsPrune(t *testing.T) {
	srv := natstest.RunServer(t)
	db := filepath.Join(t.TempDir(), "evsnap.db")
	stream := natstest.UniqueName(t, "EVSNAP_CLI")
	common := []string{"--sqlite-path", db, "--log-format", "text"}
	nats := []string{"--nats-url", srv.ClientURL(), "--stream", stream, "--subject-prefix", "evsnapcli." + stream}
	var out, errOut bytes.Buffer
	ctx := context.Background()
	if code := Main(ctx, append(append([]string{"migrate"}, common...), nats...), &out, &errOut); code != 0 {
		t.Fatalf("migrate exit %d: %s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "stream ready: "+stream) {
		t.Fatalf("migrate output: %s", out.String())
	}
	addr := freeAddr(t)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var runOut, runErr bytes.Buffer
	go func() {
		done <- Main(rctx, append(append([]string{"run", "--metrics-addr", addr, "--sweep-interval", "0"}, common...), nats...), &runOut, &runErr)
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _ := get("/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("never ready; logs:\n%s", runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var hc bytes.Buffer
	if code := Main(ctx, []string{"healthcheck", "--url", "http://" + addr + "/readyz"}, &hc, &hc); code != 0 {
		t.Fatalf("healthcheck of a ready worker: exit %d: %s", code, hc.String())
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics = %d (%d bytes)", code, len(body))
	}
	stopRun(t, cancel, done, &runErr)
	hc.Reset()
	if code := Main(ctx, []string{"healthcheck", "--url", "http://" + addr + "/readyz", "--timeout", "1s"}, &hc, &hc); code != 1 {
		t.Fatalf("healthcheck of a stopped worker: exit %d: %s", code, hc.String())
	}
	if !strings.Contains(runErr.String(), "stopped cleanly") {
		t.Fatalf("no clean-stop log:\n%s", runErr.String())
	}
	out.Reset()
	if code := Main(ctx, append([]string{"stats", "--type", "Account"}, common...), &out, &errOut); code != 0 {
		t.Fatalf("stats exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "Account: 0 aggregates, 0 snapshots (of schema version 1)") {
		t.Fatalf("stats output: %s", out.String())
	}
	out.Reset()
	t.Setenv("EVSNAP_ACCOUNT_SCHEMA", "2")
	if code := Main(ctx, append([]string{"stats", "--type", "Account"}, common...), &out, &errOut); code != 0 {
		t.Fatalf("stats as Account v2: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "Account: 0 aggregates, 0 snapshots (of schema version 2)") {
		t.Fatalf("stats output with EVSNAP_ACCOUNT_SCHEMA=2: %s", out.String())
	}
	out.Reset()
	if code := Main(ctx, append([]string{"prune", "--type", "Account", "--schema-below", "2"}, common...), &out, &errOut); code != 0 {
		t.Fatalf("prune exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "deleted 0 Account snapshots") {
		t.Fatalf("prune output: %s", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	cases := map[string]struct {
		args []string
		code int
		want string
	}{
		"no command":        {nil, 2, "no command"},
		"unknown command":   {[]string{"explode"}, 2, `unknown command "explode"`},
		"unknown flag":      {[]string{"run", "--frobnicate"}, 2, "frobnicate"},
		"bad policy":        {[]string{"run", "--policy", "Account=threshold:0"}, 2, "threshold"},
		"policy of unknown": {[]string{"run", "--policy", "Invoice=threshold:5"}, 2, `unknown aggregate type "Invoice"`},
		"rebuild no type":   {[]string{"rebuild", "--sqlite-path", ":memory:"}, 2, "--type is required"},
		"rebuild bad id":    {[]string{"rebuild", "--type", "Account", "--id", "nope", "--sqlite-path", ":memory:"}, 2, `--id "nope"`},
		"prune no schema":   {[]string{"prune", "--type", "Account", "--sqlite-path", ":memory:"}, 2, "--schema-below"},
		"prune batch 0":     {[]string{"prune", "--type", "Account", "--schema-below", "2", "--batch", "0", "--sqlite-path", ":memory:"}, 2, "--batch 0"},
		"prune bad resume":  {[]string{"prune", "--type", "Account", "--schema-below", "2", "--resume-after", "nope", "--sqlite-path", ":memory:"}, 2, `--resume-after "nope" is not an aggregate id`},
		"rebuild id and resume": {[]string{"rebuild", "--type", "Account", "--id", "6f1c1a3e-5f36-4d0c-9d0e-2f4b8a1f0a11", "--resume-after", "6f1c1a3e-5f36-4d0c-9d0e-2f4b8a1f0a12", "--sqlite-path", ":memory:"}, 2,
			"--id and --resume-after do not go together"},
		"stats sample 0": {[]string{"stats", "--type", "Account", "--sample", "0", "--sqlite-path", ":memory:"}, 2, "--sample 0"},
		"bad log level":  {[]string{"stats", "--log-level", "loud"}, 2, "--log-level"},
		"unknown type":   {[]string{"stats", "--type", "Invoice"}, 2, `--type "Invoice"`},
		"bad account schema": {[]string{"stats", "--type", "Account", "--account-schema", "3"}, 2,
			"--account-schema: account schema version 3: the example Account has schema versions [1 2]"},
		"extra args": {[]string{"stats", "--type", "Account", "extra"}, 2, "unexpected arguments"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(context.Background(), c.args, &out, &errOut)
			if code != c.code || !strings.Contains(errOut.String(), c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut.String(), c.code, c.want)
			}
		})
	}
}

// TestPruneSchemaBelowOutOfRange: a --schema-below beyond the schema
// versions every store keeps is a usage error naming the value and the
// range, not a prune that silently removes nothing.
func TestPruneSchemaBelowOutOfRange(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"prune", "--type", "Account", "--schema-below", "4294967298", "--sqlite-path", ":memory:"}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "4294967298") || !strings.Contains(errOut.String(), "2147483647") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 naming 4294967298 and the range up to 2147483647", code, out.String(), errOut.String())
	}
}

func TestBadEnvIsAnError(t *testing.T) {
	t.Setenv("EVSNAP_CONCURRENCY", "lots")
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"run"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "EVSNAP_CONCURRENCY") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestUnreachableServersFailClearly(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"stats", "--type", "Account", "--postgres-url", "postgres://evsnap:s3cret@127.0.0.1:1/x?connect_timeout=2"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "127.0.0.1:1") || strings.Contains(errOut.String(), "s3cret") {
		t.Fatalf("exit %d, stderr %q: want a failure naming the server without the password", code, errOut.String())
	}
	errOut.Reset()
	code = Main(context.Background(), []string{"migrate", "--sqlite-path", filepath.Join(t.TempDir(), "x.db"), "--nats-url", "nats://tok3n@127.0.0.1:1"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "127.0.0.1:1") || strings.Contains(errOut.String(), "tok3n") {
		t.Fatalf("exit %d, stderr %q: want a failure naming the NATS server without the token", code, errOut.String())
	}
}

// run starts while PostgreSQL is down (a restart, a crash, a database
// that comes up after the workers, as in compose or Kubernetes) and keeps
// running, as it does when PostgreSQL goes away later: it serves /healthz,
// consumes notices, and exits 0 on SIGTERM. Before, it exited 1 at once,
// and a supervisor restarting it kept meeting the same outage (the chaos
// suite saw a worker refused five times in a row during one PostgreSQL
// crash recovery).
func TestRunStartsWhilePostgresIsDown(t *testing.T) {
	srv := natstest.RunServer(t)
	stream := natstest.UniqueName(t, "EVSNAP_PGDOWN")
	nats := []string{"--nats-url", srv.ClientURL(), "--stream", stream, "--subject-prefix", "evsnappgdown." + stream}
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if code := Main(ctx, append([]string{"migrate", "--sqlite-path", filepath.Join(t.TempDir(), "m.db"), "--log-format", "text"}, nats...), &out, &errOut); code != 0 {
		t.Fatalf("migrate (the stream) exit %d: %s%s", code, out.String(), errOut.String())
	}
	down := "postgres://evsnap:s3cret@" + freeAddr(t) + "/evsnap?sslmode=disable&connect_timeout=2" // nothing listens there
	addr := freeAddr(t)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan int, 1)
	var runOut, runErr syncbuf.Buffer
	go func() {
		done <- Main(rctx, append([]string{"run", "--postgres-url", down, "--metrics-addr", addr, "--sweep-interval", "1s", "--log-format", "text"}, nats...), &runOut, &runErr)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case code := <-done:
			t.Fatalf("run exited %d while PostgreSQL was down; want it to keep running. Logs:\n%s", code, runErr.String())
		default:
		}
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run never became ready (it consumes notices; PostgreSQL is only needed to snapshot). Logs:\n%s", runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // a sweep meets the outage
	stopRun(t, cancel, done, &runErr)
	logs := runErr.String()
	if !strings.Contains(logs, "PostgreSQL unreachable") || !strings.Contains(logs, "stopped cleanly") || strings.Contains(logs, "s3cret") {
		t.Fatalf("want a warning that PostgreSQL is unreachable, a clean stop and no password; logs:\n%s", logs)
	}
}

// stopRun cancels a run command (its SIGTERM) and checks that it exits 0
// within 30s.
func stopRun(t *testing.T, cancel context.CancelFunc, done <-chan int, logs fmt.Stringer) {
	t.Helper()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run exited %d after cancellation; logs:\n%s", code, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not exit within 30s of cancellation")
	}
}

// Commands parsed at once in one process (tests do it, and so may a program
// that embeds Main) share no parsing state: an environment error belongs to
// the command that read the variable, every time.
func TestCommandsParseIndependently(t *testing.T) {
	t.Setenv("EVSNAP_CONCURRENCY", "many") // read by run only
	closed := "http://" + freeAddr(t) + "/readyz"
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var out, errOut bytes.Buffer
			code := Main(ctx, []string{"run"}, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), "EVSNAP_CONCURRENCY") {
				t.Errorf("run with a bad EVSNAP_CONCURRENCY: exit %d, %q", code, errOut.String())
			}
		}()
		go func() {
			defer wg.Done()
			var out, errOut bytes.Buffer
			Main(ctx, []string{"healthcheck", "--url", closed, "--timeout", "50ms"}, &out, &errOut)
			if strings.Contains(errOut.String(), "EVSNAP_CONCURRENCY") {
				t.Errorf("healthcheck reported run's environment error: %q", errOut.String())
			}
		}()
	}
	wg.Wait()
}

// migrate started beside a cluster that cannot place a replicated stream
// yet (two of three nodes still down) waits for it and then succeeds, as
// a compose file or a Kubernetes Job started with the cluster needs.
func TestMigrateWaitsForTheClusterToPlaceTheStream(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	c.Stop(1)
	c.Stop(2)
	db := filepath.Join(t.TempDir(), "evsnap.db")
	stream := natstest.UniqueName(t, "EVSNAP_R3")
	var out bytes.Buffer
	errOut := &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- Main(context.Background(), []string{"migrate", "--sqlite-path", db, "--log-format", "text",
			"--nats-url", c.URLs(), "--stream", stream, "--subject-prefix", "evsnapr3." + stream, "--stream-replicas", "3"}, &out, errOut)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(errOut.String(), "not placed yet") {
		select {
		case code := <-done:
			t.Fatalf("migrate ended (exit %d) before the cluster could place the stream:\n%s%s", code, out.String(), errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("migrate did not report waiting for placement:\n%s", errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Start(1)
	c.Start(2)
	if code := <-done; code != 0 {
		t.Fatalf("migrate exit %d once the cluster formed:\n%s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "stream ready: "+stream) || !strings.Contains(out.String(), "replicas 3") {
		t.Fatalf("migrate output:\n%s", out.String())
	}
}
