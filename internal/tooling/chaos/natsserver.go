//go:build unix

package chaos

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/natsserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServer is one of the run's own nats-servers with JetStream,
// restartable on the same ports and store directory.
type natsServer struct {
	proc *process
	host string // the address it listens on
	port int
	name string // server name: how stream info names the leader
}

// newNATSServer describes a server named name on host:port, in the
// network namespace ns (nil: the host's); extra are more arguments (the
// cluster's).
func newNATSServer(binary, name, host, storeDir, logPath string, port int, ns *labNode, extra ...string) *natsServer {
	path, args := binary, append([]string{"-a", host, "-p", strconv.Itoa(port), "-js", "-sd", storeDir, "--server_name", name}, extra...)
	if ns != nil {
		path, args = ns.wrap(path, args)
	}
	return &natsServer{
		host: host,
		port: port,
		name: name,
		proc: &process{name: name, path: path, args: args, logPath: logPath},
	}
}

// clusterArgs are the arguments of node i of a cluster whose nodes listen
// for routes on hosts[j]:routePorts[j]. The nodes do not advertise their
// client URLs, so clients keep to the URLs they were given (the workers'
// go through Toxiproxy).
func clusterArgs(cluster string, i int, hosts []string, routePorts []int) []string {
	var routes []string
	for j, p := range routePorts {
		if j != i {
			routes = append(routes, "nats://"+net.JoinHostPort(hosts[j], strconv.Itoa(p)))
		}
	}
	return []string{"--cluster_name", cluster, "--cluster", "nats://" + net.JoinHostPort(hosts[i], strconv.Itoa(routePorts[i])),
		"--routes", strings.Join(routes, ","), "--no_advertise"}
}

func (n *natsServer) url() string { return "nats://" + n.host + ":" + strconv.Itoa(n.port) }

// start starts the server and waits until JetStream answers.
func (n *natsServer) start(ctx context.Context, timeout time.Duration) error {
	if err := n.proc.start(); err != nil {
		return err
	}
	return n.waitReady(ctx, timeout)
}

// stop stops the server with sig (SIGTERM: a clean shutdown; SIGKILL: a
// crash) and waits for it, killing it if a clean shutdown takes too long.
func (n *natsServer) stop(sig syscall.Signal) {
	n.proc.stop(sig, 15*time.Second)
}

// waitReady waits until a client can connect and JetStream answers.
func (n *natsServer) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !n.proc.running() {
			return fmt.Errorf("nats-server exited while starting (see its log)")
		}
		last = n.ping(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("nats-server on port %d not ready after %v: %w", n.port, timeout, last)
}

func (n *natsServer) ping(ctx context.Context) error {
	return natsserver.Ping(ctx, n.url(), "evsnap-chaos")
}

// snapshotterConsumer is the durable consumer the workers share (the
// binaries' default).
const snapshotterConsumer = "snapshotter"

// purgeNotices pauses the durable consumer for pause (a backlog builds),
// purges stream at url, and returns how many of its messages the consumer
// had not yet had acknowledged (pending delivery, or delivered and
// unacknowledged): the notices lost. The pause is set to expire a moment
// after the purge rather than lifted (a server wakes waiting pulls when a
// pause expires). A server without consumer pauses (before 2.11) gets the
// purge alone; paused says which happened.
func purgeNotices(ctx context.Context, url, stream, consumer string, pause, timeout time.Duration) (lost int64, paused string, err error) {
	nc, err := nats.Connect(url, nats.Timeout(timeout), nats.NoReconnect(), nats.Name("evsnap-chaos"))
	if err != nil {
		return 0, "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, "", err
	}
	paused = pause.Round(time.Millisecond).String()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	_, perr := js.PauseConsumer(pctx, stream, consumer, time.Now().Add(pause+300*time.Millisecond))
	cancel()
	if perr != nil {
		paused = fmt.Sprintf("(not paused: %v)", perr)
	} else {
		select {
		case <-ctx.Done():
			return 0, paused, ctx.Err()
		case <-time.After(pause):
		}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := js.Stream(cctx, stream)
	if err != nil {
		return 0, paused, err
	}
	if c, err := st.Consumer(cctx, consumer); err == nil {
		if ci, err := c.Info(cctx); err == nil {
			lost = int64(ci.NumPending) + int64(ci.NumAckPending)
		}
	}
	return lost, paused, st.Purge(cctx)
}

// streamInfo returns a stream's info from the server(s) at url (a
// comma-separated list reaches any node of a cluster), within timeout.
func streamInfo(ctx context.Context, url, stream string, timeout time.Duration) (*jetstream.StreamInfo, error) {
	nc, err := nats.Connect(url, nats.Timeout(timeout), nats.NoReconnect(), nats.Name("evsnap-chaos"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := js.Stream(cctx, stream)
	if err != nil {
		return nil, err
	}
	return s.Info(cctx)
}
