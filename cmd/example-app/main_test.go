package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/internal/envflag"
	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/natsnotice"
)

func TestMain(m *testing.M) {
	envflag.UnsetProgramVars() // the caller's EVSNAP_* settings must not change what the tests see
	leakcheck.VerifyTestMain(m)
}

// The demo end to end on the embedded default (embedded NATS, SQLite), at
// small sizes: every section runs and it exits 0, leaving nothing running
// (goleak checks the embedded server and workers stopped).
func TestDemoOnTheEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"demo", "--data-dir", dir, "--sizes", "100,1000"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{
		"1. Performance", "speed-up",
		"snapshot right after Save returns: v16",
		"after AwaitPendingSnapshots",
		"CreateSnapshot: v21",
		"loads it: snapshot used = false, events replayed = 16",
		"snapshot v17 with schema 2, beside v1's",
		"rolled back to v1, it loads: snapshot used = true, events replayed = 1",
		"once no v1 runs: pruned",
		"4. External mode", "every snapshot the policy asks for was in place",
		"Tutorial 14 complete",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("progress drawn with carriage returns in output that is not a terminal:\n%q", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "demo.db")); err != nil {
		t.Errorf("no SQLite database under the data dir: %v", err)
	}
}

// setDefaultNATS points load's default NATS address (natsconnect.DefaultURL's
// in production) at addr for one test, so no test touches a server that
// happens to listen on 127.0.0.1:4222.
func setDefaultNATS(t *testing.T, addr string) {
	t.Helper()
	old := natsDefaultAddr
	natsDefaultAddr = addr
	t.Cleanup(func() { natsDefaultAddr = old })
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

// With nothing configured and nothing at the default address, load starts
// its embedded server on that address, where snapshotter run looks when it
// is not configured either.
func TestLoadOnTheEmbeddedDefault(t *testing.T) {
	addr := freeAddr(t)
	setDefaultNATS(t, addr)
	dir := t.TempDir()
	rec := filepath.Join(dir, "saves.txt")
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"load", "--data-dir", dir, "--duration", "1500ms", "--rate", "300", "--aggregates", "20", "--record", rec}, &out, &errOut)
	if code != 0 {
		t.Fatalf("load exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if want := "embedded nats-server with JetStream at nats://" + addr; !strings.Contains(out.String(), want) {
		t.Fatalf("load did not start its server on the default address (%q):\n%s", want, out.String())
	}
	if !strings.Contains(out.String(), "done:") || !strings.Contains(out.String(), " 0 errors") {
		t.Fatalf("load output:\n%s", out.String())
	}
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	// No throughput assertion (the machine may be busy): only that saves
	// happened and were recorded.
	if len(lines) < 5 {
		t.Fatalf("only %d saves recorded", len(lines))
	}
	for _, l := range lines[:5] {
		if f := strings.Fields(l); len(f) != 4 || (f[0] != "Account" && f[0] != "Order") {
			t.Fatalf("bad record line %q", l)
		}
	}
}

// With nothing configured and a server at the default address, load uses
// it: the notices land where an unconfigured snapshotter run reads them.
// (It runs as v2 of the Account, as EVSNAP_ACCOUNT_SCHEMA says.)
func TestLoadUsesTheServerAtTheDefaultAddress(t *testing.T) {
	srv := natstest.RunServer(t)
	addr := srv.Addr().String()
	setDefaultNATS(t, addr)
	t.Setenv("EVSNAP_ACCOUNT_SCHEMA", "2")
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"load", "--data-dir", dir, "--duration", "500ms", "--rate", "100", "--aggregates", "5"}, &out, &errOut)
	if !strings.Contains(out.String(), "Account schema version 2") {
		t.Errorf("load with EVSNAP_ACCOUNT_SCHEMA=2 does not say it runs as schema 2:\n%s", out.String())
	}
	if code != 0 {
		t.Fatalf("load exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if want := "the NATS server at nats://" + addr; !strings.Contains(out.String(), want) {
		t.Fatalf("load did not use the server at the default address (%q):\n%s", want, out.String())
	}
	js := natstest.JetStream(t, natstest.Connect(t, srv.ClientURL()))
	st, err := js.Stream(context.Background(), natsnotice.DefaultStream)
	if err != nil {
		t.Fatalf("the notice stream is not on the server at the default address: %v", err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Fatal("no notice reached the server at the default address")
	}
}

func TestUsage(t *testing.T) {
	for args, want := range map[string]string{
		"explode":                 `unknown command "explode"`,
		"demo --sizes 0":          "--sizes",
		"demo --workers 99":       "--workers",
		"load --rate 0":           "--rate",
		"load --orders 2":         "--orders",
		"load --log-level shouty": "--log-level",
		"load --account-schema 3": "--account-schema: account schema version 3",
		"demo extra":              "unexpected arguments",
	} {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), strings.Fields(args), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", args, code, errOut.String(), want)
		}
	}
}
