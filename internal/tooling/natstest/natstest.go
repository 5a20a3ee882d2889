// Package natstest runs NATS for tests: an embedded nats-server with
// JetStream that each test starts on a random port (hermetic, nothing
// installed), restarts to simulate an outage, and shuts down in its
// cleanup; and the address of a real server for the integration tests
// that CI runs against one.
//
// # Embedded server
//
//	s := natstest.RunServer(t)              // JetStream, random port, t.TempDir() store
//	nc := natstest.Connect(t, s.ClientURL()) // closed in t.Cleanup
//	js := natstest.JetStream(t, nc)
//	...
//	natstest.Shutdown(s)      // NATS is down; clients start reconnecting
//	s = natstest.Restart(t, s) // same port and store dir: clients reconnect
//
// # Embedded cluster
//
//	c := natstest.RunCluster(t, 3)           // 3 nodes with routes, JetStream meta leader elected
//	nc := natstest.Connect(t, c.URLs())     // every node's URL: reconnects to a survivor
//	...                                      // create a stream with Replicas: 3
//	old := c.StreamLeader(stream)
//	c.Stop(old)                              // the leader goes away; another takes over
//	c.WaitStreamLeader(stream, old, timeout)
//	c.Start(old)                             // same ports and store: it rejoins and catches up
//	c.WaitStreamCurrent(stream, timeout)
//
// # Real server
//
// [ExternalURL] returns EVSNAP_TEST_NATS_URL, skips the test when it is
// unset, and fails it instead when EVSNAP_REQUIRE_SERVICES=1 (CI). The
// server is probed once per test binary, so a dead one fails fast with a
// message that says how to start it.
//
// Go runs test packages in parallel against the same real server: give
// every stream, consumer and subject prefix a per-test name ([UniqueName])
// and delete streams in t.Cleanup ([DeleteStreamOnCleanup]).
package natstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Environment variables read by [ExternalURL].
const (
	// EnvNATSURL is the address of a real NATS server with JetStream.
	EnvNATSURL = "EVSNAP_TEST_NATS_URL"
	// EnvRequireServices, when "1", turns a missing EnvNATSURL into a
	// test failure instead of a skip.
	EnvRequireServices = "EVSNAP_REQUIRE_SERVICES"
)

// ReadyTimeout bounds how long RunServer and Restart wait for the server
// to accept connections.
const ReadyTimeout = 10 * time.Second

// options remembers each running server's options, so Restart can start
// a replacement on the same port and store dir.
var options sync.Map // *server.Server -> server.Options

// RunServer starts an embedded nats-server with JetStream on a random
// loopback port, storing in a fresh t.TempDir(), and waits until it accepts
// connections. t.Cleanup shuts it down and waits for it.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return RunServerWithOptions(t, &server.Options{})
}

// RunServerWithOptions is [RunServer] with base options (for example
// limits or MaxPayload). Host defaults to 127.0.0.1, Port 0 to a random
// one, StoreDir "" to t.TempDir(); JetStream is always on and logging and
// signal handling are off.
func RunServerWithOptions(t testing.TB, base *server.Options) *server.Server {
	t.Helper()
	opts := *base
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	opts.JetStream = true
	opts.NoLog = true
	opts.NoSigs = true
	return start(t, opts)
}

func start(t testing.TB, opts server.Options) *server.Server {
	t.Helper()
	o := opts // NewServer keeps and mutates its argument
	s, err := server.NewServer(&o)
	if err != nil {
		t.Fatalf("natstest: new nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(ReadyTimeout) {
		Shutdown(s)
		t.Fatalf("natstest: nats-server on %s:%d not ready after %s", opts.Host, opts.Port, ReadyTimeout)
	}
	if !s.JetStreamEnabled() {
		Shutdown(s)
		t.Fatalf("natstest: nats-server started without JetStream (store dir %s)", opts.StoreDir)
	}
	// Remember the port actually bound, so a restart reuses it.
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		Shutdown(s)
		t.Fatalf("natstest: nats-server listens on %v, not TCP", s.Addr())
	}
	opts.Port = addr.Port
	options.Store(s, opts)
	t.Cleanup(func() {
		Shutdown(s)
		options.Delete(s)
	})
	return s
}

// Shutdown stops s and waits until it has stopped. Clients see the
// connection drop and start reconnecting. It is safe to call more than
// once.
func Shutdown(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart shuts s down (if it is still running) and starts a new server
// with the same options: the same port, so clients reconnect by
// themselves, and the same store dir, so streams and their messages
// survive. s must come from RunServer or Restart in this test. t.Cleanup
// shuts the new server down.
func Restart(t testing.TB, s *server.Server) *server.Server {
	t.Helper()
	v, ok := options.Load(s)
	if !ok {
		t.Fatalf("natstest: Restart of a server that natstest did not start")
	}
	Shutdown(s)
	options.Delete(s)
	opts := v.(server.Options)
	// The port was just released; retry briefly in case the kernel is
	// slow to let it go.
	var lastErr error
	for deadline := time.Now().Add(ReadyTimeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		o := opts
		ns, err := server.NewServer(&o)
		if err != nil {
			lastErr = err
			continue
		}
		go ns.Start()
		if !ns.ReadyForConnections(2 * time.Second) {
			Shutdown(ns)
			lastErr = fmt.Errorf("not ready (is port %d still in use?)", opts.Port)
			continue
		}
		options.Store(ns, opts)
		t.Cleanup(func() {
			Shutdown(ns)
			options.Delete(ns)
		})
		return ns
	}
	t.Fatalf("natstest: restart nats-server on port %d with store %s: %v", opts.Port, opts.StoreDir, lastErr)
	return nil
}

// Connect connects to url with settings suited to tests (ReconnectWait
// 50ms, unlimited reconnects, asynchronous errors logged to t) and any
// further opts, and closes the connection in t.Cleanup.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	// Asynchronous errors (a write to a server the test just shut down)
	// go to the test log rather than stderr, and stop when it ends.
	var mu sync.Mutex
	closed := false
	onErr := func(_ *nats.Conn, sub *nats.Subscription, err error) {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			if sub != nil {
				t.Logf("natstest: nats async error on subscription %s: %v", sub.Subject, err)
			} else {
				t.Logf("natstest: nats async error: %v", err)
			}
		}
	}
	all := append([]nats.Option{
		nats.Name("evsnap-test " + t.Name()),
		nats.Timeout(5 * time.Second),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(onErr),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", url, err)
	}
	t.Cleanup(func() {
		nc.Close()
		mu.Lock()
		closed = true
		mu.Unlock()
	})
	return nc
}

// JetStream returns a JetStream context on nc.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}

// UniqueName returns prefix + "_" + 8 random hex digits: a name no other
// test (or package running in parallel) uses, valid as a stream name,
// consumer name and subject token.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("natstest: random name: %v", err)
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}

// DeleteStreamOnCleanup deletes stream name in t.Cleanup, with its own
// timeout; a stream already gone is fine.
func DeleteStreamOnCleanup(t testing.TB, js jetstream.JetStream, name string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, name); err != nil && !isStreamNotFound(err) {
			t.Errorf("natstest: delete stream %s: %v", name, err)
		}
	})
}

func isStreamNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound)
}

var probe struct {
	once sync.Once
	err  error
}

// ExternalURL returns the real NATS server's URL from EVSNAP_TEST_NATS_URL.
// When the variable is unset it skips the test, unless
// EVSNAP_REQUIRE_SERVICES=1, when it fails it. The server is probed once
// per test binary (connect, JetStream account info); a failing probe fails
// the test with what to do.
func ExternalURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvNATSURL)
	if u == "" {
		if os.Getenv(EnvRequireServices) == "1" {
			t.Fatalf("natstest: %s is not set and %s=1: set it to a NATS server with JetStream, e.g. nats://127.0.0.1:4222", EnvNATSURL, EnvRequireServices)
		}
		t.Skipf("natstest: %s not set; skipping the test against a real NATS server", EnvNATSURL)
	}
	probe.once.Do(func() { probe.err = probeServer(u) })
	if probe.err != nil {
		t.Fatalf("natstest: %s=%s: %v\n\tstart one with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
			EnvNATSURL, redact(u), probe.err)
	}
	return u
}

func probeServer(u string) error {
	nc, err := nats.Connect(u, nats.Timeout(3*time.Second), nats.NoReconnect(), nats.Name("evsnap-test probe"))
	if err != nil {
		return fmt.Errorf("cannot connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("connected, but JetStream does not answer (is the server started with -js?): %w", err)
	}
	return nil
}

// redact hides a password in a URL for messages.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Redacted()
}
