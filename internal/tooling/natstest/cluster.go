package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of embedded nats-servers on loopback
// ports, started by [RunCluster]. Nodes can be stopped (a crash, as far
// as the others can tell: no lame-duck mode) and restarted on the same
// ports and store directories. Its methods are safe for concurrent use.
type Cluster struct {
	t    testing.TB
	name string
	mu   sync.Mutex
	opts []server.Options
	srv  []*server.Server // nil while a node is stopped
}

// account is the account streams live in when servers have no accounts
// configured.
const account = server.DEFAULT_GLOBAL_ACCOUNT

// RunCluster starts an n-node JetStream cluster (n >= 1; 3 is the usual
// production shape) on free loopback ports, each node with its own
// t.TempDir() store and routes to every other, and waits until every node
// accepts connections, the routes are up and JetStream has a meta leader.
// t.Cleanup shuts every node down.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: a cluster of %d nodes", n)
	}
	c := &Cluster{t: t, name: UniqueName(t, "evsnap-test"), opts: make([]server.Options, n), srv: make([]*server.Server, n)}
	clientPorts, routePorts := freePorts(t, n), freePorts(t, n)
	for i := range n {
		var routes []*url.URL
		for j := range n {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routePorts[j])})
			}
		}
		c.opts[i] = server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			Cluster:    server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: routePorts[i]},
			Routes:     routes,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			// Small limits: the machine is shared, and a default cluster
			// reserves a share of its memory and disk per node.
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  1 << 30,
			NoLog:              true,
			NoSigs:             true,
		}
	}
	t.Cleanup(func() {
		for i := range n {
			c.Stop(i)
		}
	})
	for i := range n {
		c.Start(i)
	}
	c.WaitReady(30 * time.Second)
	return c
}

// freePorts returns n TCP ports on 127.0.0.1 that were free a moment ago
// (held open together, so they differ).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.opts) }

// NodeName is node i's server name ("n1", "n2", ...), as JetStream
// reports it in stream and consumer cluster info.
func (c *Cluster) NodeName(i int) string { return c.opts[i].ServerName }

// ClientURL is node i's client URL (the same across restarts).
func (c *Cluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port)
}

// URLs is every node's client URL, comma-separated: what a client is
// given so that it can reconnect to any node.
func (c *Cluster) URLs() string {
	urls := make([]string, c.Size())
	for i := range urls {
		urls[i] = c.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

// Server is node i's running server, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srv[i]
}

// Running reports whether node i is running.
func (c *Cluster) Running(i int) bool { return c.Server(i) != nil }

// Stop shuts node i down and waits until it has stopped; its clients
// reconnect to the other nodes. It is the server's own shutdown, so the
// raft groups node i leads step down first and a follower takes over at
// once: a clean stop (a rolling restart), not a crash. A crash, where the
// followers notice the silence and elect after their election timeout,
// needs a process to SIGKILL: the chaos suite's cluster mode does that.
// Stopping a stopped node does nothing.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.srv[i]
	c.srv[i] = nil
	c.mu.Unlock()
	if s != nil {
		Shutdown(s)
	}
}

// Start starts node i (again) on its ports and store directory and waits
// until it accepts connections; it rejoins the cluster and catches up by
// itself (see [Cluster.WaitStreamCurrent]). Starting a running node does
// nothing.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv[i] != nil {
		return
	}
	var lastErr error
	// The ports were just released (or picked): retry briefly if the
	// kernel has not let them go yet.
	for deadline := time.Now().Add(ReadyTimeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		o := c.opts[i] // NewServer keeps and mutates its argument
		s, err := server.NewServer(&o)
		if err != nil {
			lastErr = err
			continue
		}
		go s.Start()
		if !s.ReadyForConnections(5 * time.Second) {
			Shutdown(s)
			lastErr = fmt.Errorf("not ready (ports %d, %d in use?)", c.opts[i].Port, c.opts[i].Cluster.Port)
			continue
		}
		c.srv[i] = s
		return
	}
	c.t.Fatalf("natstest: start cluster node %s: %v", c.NodeName(i), lastErr)
}

// WaitReady waits until every running node has a route to every other
// running node and the JetStream meta leader counts every running node as
// an online peer (so a stream can be placed on all of them), failing the
// test after timeout.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	c.waitFor(timeout, "cluster routes and a JetStream meta leader that sees every node", func() bool {
		running := 0
		for i := range c.Size() {
			if c.Running(i) {
				running++
			}
		}
		peers := -1
		for i := range c.Size() {
			s := c.Server(i)
			if s == nil {
				continue
			}
			if s.NumRoutes() < running-1 || !s.JetStreamEnabled() {
				return false
			}
			if s.JetStreamIsLeader() {
				peers = len(s.JetStreamClusterPeers())
			}
		}
		return peers == running
	})
}

// StreamLeader returns the index of the node that leads stream (in the
// default account), or -1 when no running node does (an election is
// under way).
func (c *Cluster) StreamLeader(stream string) int {
	for i := range c.Size() {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(account, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until a running node other than not (-1: any)
// leads stream and returns its index, failing the test after timeout.
func (c *Cluster) WaitStreamLeader(stream string, not int, timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	c.waitFor(timeout, "a leader of stream "+stream, func() bool {
		leader = c.StreamLeader(stream)
		return leader >= 0 && leader != not
	})
	return leader
}

// WaitStreamCurrent waits until stream has a leader and every running
// node holds a replica that is current with it (a restarted node has
// caught up), failing the test after timeout. The stream must have a
// replica on every node (Replicas = Size()).
func (c *Cluster) WaitStreamCurrent(stream string, timeout time.Duration) {
	c.t.Helper()
	c.waitFor(timeout, "every node current on stream "+stream, func() bool {
		if c.StreamLeader(stream) < 0 {
			return false
		}
		for i := range c.Size() {
			if s := c.Server(i); s != nil && !s.JetStreamIsStreamCurrent(account, stream) {
				return false
			}
		}
		return true
	})
}

func (c *Cluster) waitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: cluster %s: no %s after %v", c.name, what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
