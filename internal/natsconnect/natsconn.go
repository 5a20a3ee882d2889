// Package natsconnect connects the cmd/ programs to NATS: a real server with
// credentials and TLS from flags and env vars, or an embedded nats-server
// with JetStream for the one-command default.
package natsconnect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/natsurl"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configures a connection. Exactly one authentication method may
// be set: CredsFile, NKeySeedFile, User+Password or Token.
type Options struct {
	URL          string
	Name         string
	CredsFile    string
	NKeySeedFile string
	User         string
	Password     string
	Token        string
	// CAFile verifies the server's certificate; CertFile and KeyFile
	// present a client certificate (mutual TLS).
	CAFile   string
	CertFile string
	KeyFile  string

	// PingInterval is how often the client pings the server; a connection
	// that leaves maxPingsOut pings unanswered is given up as stale and
	// the client reconnects (in a cluster, to another node). It is the
	// only way a connection that dies in silence is noticed: a partition,
	// a dropped NAT or conntrack entry, a node that vanished (no reset, no
	// close). Such a connection is given up 2 to 3 intervals after it
	// went quiet. 0 means DefaultPingInterval.
	PingInterval time.Duration

	// WaitForServer makes Connect return at once even when no server
	// answers yet; the client keeps trying in the background (for a worker
	// that starts before NATS, as in compose or Kubernetes). Without it the
	// first connection must succeed.
	WaitForServer bool

	Logger *slog.Logger
}

// Validate reports conflicting or incomplete options.
func (o Options) Validate() error {
	if o.URL == "" {
		return errors.New("nats: no server URL (flag --nats-url or EVSNAP_NATS_URL)")
	}
	if err := checkURLs(o.URL); err != nil {
		return err
	}
	if o.PingInterval < 0 {
		return fmt.Errorf("nats: ping interval %v is negative (flag --nats-ping-interval or EVSNAP_NATS_PING_INTERVAL)", o.PingInterval)
	}
	methods := 0
	for _, set := range []bool{o.CredsFile != "", o.NKeySeedFile != "", o.User != "" || o.Password != "", o.Token != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return errors.New("nats: choose one of credentials file, NKey seed file, user/password or token")
	}
	if (o.User == "") != (o.Password == "") {
		return errors.New("nats: user and password go together")
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return errors.New("nats: client certificate and key go together")
	}
	for what, f := range map[string]string{"credentials file": o.CredsFile, "NKey seed file": o.NKeySeedFile, "CA file": o.CAFile, "client certificate": o.CertFile, "client key": o.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("nats: %s: %w", what, err)
		}
	}
	return nil
}

// checkURLs reports a server URL in list (comma-separated) that nats.go
// would misread rather than refuse: "nats://nats://host:4222" (a scheme
// twice) reads as the host "nats" on the default port, and a client given
// it retries that for ever. A URL without a scheme is a nats:// one, as
// nats.go takes it; only websocket URLs may have a path.
func checkURLs(list string) error {
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		s := raw
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		bad := func(why string) error {
			return fmt.Errorf("nats: server URL %q %s (flag --nats-url or EVSNAP_NATS_URL)", Redact(raw), why)
		}
		u, err := url.Parse(s)
		switch {
		case err != nil:
			return bad("does not parse")
		case u.Hostname() == "":
			return bad("has no host")
		case u.Scheme != "ws" && u.Scheme != "wss" && u.Path != "" && u.Path != "/":
			return bad(fmt.Sprintf("has a path, %q (a scheme given twice?)", u.Path))
		case strings.HasSuffix(u.Host, ":"):
			return bad("has an empty port")
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return bad("has a port outside 1-65535")
			}
		}
	}
	return nil
}

// Redact returns u with any password or token in its userinfo replaced
// (see [natsurl.Redact]).
func Redact(u string) string { return natsurl.Redact(u) }

// Connect dials NATS and keeps reconnecting for ever (with a wait between
// tries) so a NATS restart never needs a process restart. The first
// connection must succeed within ctx.
func Connect(ctx context.Context, o Options) (*nats.Conn, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	where := Redact(o.URL)
	ping := o.PingInterval
	if ping == 0 {
		ping = DefaultPingInterval
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(ping),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", "nats", where, "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "nats", Redact(c.ConnectedUrl()))
		}),
	}
	if o.WaitForServer {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats: NKey seed file %s: %w", o.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" {
		opts = append(opts, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(o.URL, opts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("nats: connect to %s: %w", where, scrub(r.err, o))
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("nats: connect to %s: %w", where, ctx.Err())
	}
}

// scrub keeps secrets out of an error's text.
func scrub(err error, o Options) error {
	msg := err.Error()
	changed := false
	for _, secret := range []string{o.Password, o.Token} {
		if len(secret) > 2 && strings.Contains(msg, secret) {
			msg = strings.ReplaceAll(msg, secret, "xxxxx")
			changed = true
		}
	}
	if changed {
		return errors.New(msg)
	}
	return err
}

// DefaultPingInterval is [Options.PingInterval]'s default: a connection
// that dies in silence is given up within 20 to 30 seconds. nats.go's own
// default, 2 minutes, left a worker or an app on such a connection for 4
// to 6 minutes, consuming and publishing nothing while the rest of a
// cluster was reachable (the chaos suite's partitions, docs/chaos.md).
const DefaultPingInterval = 10 * time.Second

// maxPingsOut is how many pings may go unanswered before the connection
// is given up.
const maxPingsOut = 2

// Embedded is an in-process nats-server with JetStream.
type Embedded struct {
	srv *server.Server
}

// DefaultURL is where both programs look for NATS when none is configured:
// `snapshotter run` connects there, and `example-app load` uses the server
// there or starts its embedded one on that address.
const DefaultURL = "nats://127.0.0.1:4222"

// StartEmbedded starts a nats-server with JetStream, storing under dir,
// listening on addr ("host:port"), or on a random loopback port when addr
// is empty.
func StartEmbedded(dir, addr string) (*Embedded, error) {
	host, port := "127.0.0.1", -1
	if addr != "" {
		h, ps, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats-server: address %q: %w", addr, err)
		}
		p, err := strconv.Atoi(ps)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("embedded nats-server: address %q: port must be 1-65535", addr)
		}
		host, port = h, p
	}
	srv, err := server.NewServer(&server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats-server: not ready after 10s")
	}
	return &Embedded{srv: srv}, nil
}

// URL returns the client URL.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
