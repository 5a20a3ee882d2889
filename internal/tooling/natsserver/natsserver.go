// Package natsserver runs a nats-server binary as a separate process with
// JetStream on a free loopback port and a store directory of its own: what
// the benchmark harness starts, so that the server's CPU is its own
// (/proc/<pid>/stat) and its version is the one go.mod pins rather than
// the machine's (Debian's 2.9.10 saturates a core at about 2,800 acked
// work-queue notices/s). internal/tooling/natsbin provides that binary.
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
	"strings"
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
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s, err := launch(binary, dir, port)
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// launch starts the process with extra arguments after the usual ones.
func launch(binary, dir string, port int, extra ...string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{port: port, done: make(chan struct{}), log: filepath.Join(dir, "nats-server.log")}
	args := append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "store"), "-l", s.log}, extra...)
	s.cmd = exec.Command(binary, args...)
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("natsserver: start %s: %w", binary, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// waitReady waits until JetStream answers, at most timeout.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("natsserver: %s exited while starting: %v (log %s)", s.cmd.Path, s.err, s.log)
		default:
		}
		if last = s.ping(ctx); last == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("natsserver: %s on port %d not ready: %w", s.cmd.Path, s.port, errors.Join(last, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Cluster is n nats-server processes routed to each other on loopback,
// with JetStream clustered across them.
type Cluster struct {
	servers []*Server
}

// StartCluster runs n servers of binary as one JetStream cluster, each
// with its store and log under dir/node-<i>, and waits until every node's
// JetStream answers (at most 30 s). Call Stop to end them.
func StartCluster(ctx context.Context, binary, dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("natsserver: a cluster of %d nodes", n)
	}
	clients, routes := make([]int, n), make([]int, n)
	for i := range n {
		var err error
		if clients[i], err = FreePort(); err != nil {
			return nil, err
		}
		if routes[i], err = FreePort(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{}
	for i := range n {
		var peers []string
		for j, p := range routes {
			if j != i {
				peers = append(peers, "nats://127.0.0.1:"+strconv.Itoa(p))
			}
		}
		s, err := launch(binary, filepath.Join(dir, "node-"+strconv.Itoa(i)), clients[i],
			"--server_name", "n"+strconv.Itoa(i), "--cluster_name", "evsnap-bench",
			"--cluster", "nats://127.0.0.1:"+strconv.Itoa(routes[i]), "--routes", strings.Join(peers, ","))
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.servers = append(c.servers, s)
	}
	for _, s := range c.servers {
		if err := s.waitReady(ctx, 30*time.Second); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// URLs is every node's client URL, comma-separated (what nats.Connect
// takes).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.servers))
	for i, s := range c.servers {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// PIDs is every node's process id.
func (c *Cluster) PIDs() []int {
	pids := make([]int, len(c.servers))
	for i, s := range c.servers {
		pids[i] = s.PID()
	}
	return pids
}

// Stop stops every node (see [Server.Stop]).
func (c *Cluster) Stop() {
	for _, s := range c.servers {
		s.Stop()
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
