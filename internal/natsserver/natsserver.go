// Package natsserver runs a nats-server binary as a separate process with
// JetStream on a free loopback port and a store directory of its own: what
// the benchmark harness starts, so that the server's CPU is its own
// (/proc/<pid>/stat) and its version is the one go.mod pins rather than
// the machine's (Debian's 2.9.10 saturates a core at about 2,800 acked
// work-queue notices/s). internal/natsbin provides that binary.
//
//	bin, err := natsbin.Ensure(ctx, repoDir, "")
//	s, err := natsserver.Start(ctx, bin.Path, dir)
//	defer s.Stop()
//	nc, err := nats.Connect(s.URL())
package natsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is one nats-server process with JetStream on 127.0.0.1.
type Server struct {
	cmd  *exec.Cmd
	port int
	done chan struct{}
	err  error
	log  string
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs binary with JetStream on a free loopback port, its store in
// dir (which it creates) and its log in dir/nats-server.log, and waits
// until JetStream answers (at most 30 s). The process gets SIGKILL if
// this one dies; call Stop to end it.
func Start(ctx context.Context, binary, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{port: port, done: make(chan struct{}), log: filepath.Join(dir, "nats-server.log")}
	s.cmd = exec.Command(binary, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "store"), "-l", s.log)
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("natsserver: start %s: %w", binary, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("natsserver: %s exited while starting: %v (log %s)", binary, s.err, s.log)
		default:
		}
		if last = s.ping(ctx); last == nil {
			return s, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("natsserver: %s on port %d not ready: %w", binary, port, errors.Join(last, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) ping(ctx context.Context) error {
	return Ping(ctx, s.URL(), "evsnap-natsserver-probe")
}

// Ping reports whether the server at url answers a JetStream request
// (account info) within 2 s, connecting as name without reconnecting: the
// readiness probe of a nats-server process this package or the chaos
// suite started.
func Ping(ctx context.Context, url, name string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect(), nats.Name(name))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(cctx)
	return err
}

// URL is the server's client URL.
func (s *Server) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// PID is the server's process id (for reading its CPU time in /proc).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// LogPath is the server's log file.
func (s *Server) LogPath() string { return s.log }

// Stop ends the server with SIGTERM, or SIGKILL after 10 s, and waits
// for it. It may be called more than once.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
