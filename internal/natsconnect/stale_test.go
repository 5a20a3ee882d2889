package natsconnect

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The default gives up a connection that died in silence within 30 s;
// nats.go's own default (a ping every 2 minutes, 2 unanswered) took 4 to
// 6 minutes, while a worker on it consumed nothing and an app on it
// published nothing.
func TestDefaultGivesUpADeadConnectionSoon(t *testing.T) {
	url := startServer(t, server.Options{})
	nc, err := Connect(context.Background(), Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if worst := nc.Opts.PingInterval * time.Duration(nc.Opts.MaxPingsOut+1); worst > 30*time.Second {
		t.Errorf("a connection that dies in silence is given up after up to %v (ping every %v, %d unanswered); want at most 30s",
			worst, nc.Opts.PingInterval, nc.Opts.MaxPingsOut)
	}
}

// A connection whose peer goes silent (a partition: bytes dropped, no
// reset, no close) is given up as stale, and the client reconnects once
// the network heals.
func TestSilentConnectionIsGivenUpAndReconnected(t *testing.T) {
	url := startServer(t, server.Options{})
	p := startSilentProxy(t, strings.TrimPrefix(url, "nats://"))
	logs := &recorder{}
	nc, err := Connect(context.Background(), Options{URL: "nats://" + p.addr(), PingInterval: 50 * time.Millisecond, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p.cut.Store(true)
	if !logs.await("disconnected from NATS", nats.ErrStaleConnection.Error(), 20*time.Second) {
		t.Fatalf("the silent connection was not given up as stale; logged: %q (status %v)", logs.lines(), nc.Status())
	}
	p.cut.Store(false)
	if !logs.await("reconnected to NATS", "", 30*time.Second) {
		t.Fatalf("no reconnection after the heal; logged: %q (status %v)", logs.lines(), nc.Status())
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("after the reconnection: %v", err)
	}
}

// silentProxy forwards TCP connections to a server; while cut is set it
// drops every byte both ways and keeps the connections open, as a
// network partition does.
type silentProxy struct {
	ln  net.Listener
	cut atomic.Bool
	wg  sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func startSilentProxy(t *testing.T, upstream string) *silentProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(u, c)
			go p.pipe(c, u)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *silentProxy) addr() string { return p.ln.Addr().String() }

// pipe copies src to dst, dropping what it reads while cut.
func (p *silentProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// recorder is a slog.Handler that keeps each record's message and error.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			line += ": " + a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, line)
	r.mu.Unlock()
	return nil
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// await waits up to timeout for a record whose message starts with msg
// and contains detail.
func (r *recorder) await(msg, detail string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, l := range r.lines() {
			if strings.HasPrefix(l, msg) && strings.Contains(l, detail) {
				return true
			}
		}
	}
	return false
}

var _ slog.Handler = (*recorder)(nil)
