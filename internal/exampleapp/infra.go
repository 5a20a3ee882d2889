// Package exampleapp is what cmd/example-app does: the snapshotting
// tutorial end to end as a report ([Demo]) and a steady load of saves in
// external mode ([Load]), on the example domain (internal/exampledomain).
//
// cmd/example-app parses the command line and the EVSNAP_* variables into
// a [DemoConfig] or a [LoadConfig] and calls one function here; what a
// command prints is decided here and tested beside it.
//
// Both run on real parts: a store ([backend]: PostgreSQL, or SQLite under
// a data directory) and NATS JetStream, a configured server or one
// started in process ([Config]).
package exampleapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is what both commands run on.
type Config struct {
	// PostgresURL selects PostgreSQL; else SQLite at SQLitePath, or, when
	// that is "" too, the command's own file under DataDir.
	PostgresURL, SQLitePath string
	// DataDir holds the embedded defaults' files: the SQLite database and
	// the embedded NATS server's store.
	DataDir string
	// NATS is the connection; with URL "" a server is started in process
	// (see SharedNATSAddr). Its Name and Logger are set here.
	NATS natsconnect.Options
	// SharedNATSAddr, when NATS.URL is "" and it is not, is where the
	// NATS server is looked for and, if none answers, started (load: the
	// address snapshotter run looks at when it is not configured either);
	// "" starts a private server on a random port (the demo).
	SharedNATSAddr string
	// Logger takes the library's logs.
	Logger *slog.Logger
}

// infra is what the app runs on: a migrated store and a JetStream with the
// notice stream, embedded or real.
type infra struct {
	store     *storeopen.Backend
	embedded  *natsconnect.Embedded
	nc        *nats.Conn
	js        jetstream.JetStream
	natsWhere string
}

// openInfra opens the store (its default SQLite file removed first when
// fresh is set), migrates it when migrate is set, and connects to NATS
// (see Config), creating the notice stream if it does not exist.
func openInfra(ctx context.Context, c Config, defaultDB string, fresh, migrate bool) (*infra, error) {
	in := &infra{}
	var err error
	if in.store, err = openStore(ctx, c, defaultDB, fresh, migrate); err != nil {
		return nil, err
	}
	url, err := in.findNATS(ctx, c)
	if err != nil {
		in.Close()
		return nil, err
	}
	if err := in.connect(ctx, c, url); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

func openStore(ctx context.Context, c Config, defaultDB string, fresh, migrate bool) (*storeopen.Backend, error) {
	sqlitePath := c.SQLitePath
	if c.PostgresURL == "" && sqlitePath == "" {
		sqlitePath = filepath.Join(c.DataDir, defaultDB)
		if fresh {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(sqlitePath + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, fmt.Errorf("reset %s: %w", sqlitePath+suffix, err)
				}
			}
		}
	}
	st, err := storeopen.Open(ctx, storeopen.Options{PostgresURL: c.PostgresURL, SQLitePath: sqlitePath, Logger: c.Logger})
	if err != nil {
		return nil, err
	}
	if migrate {
		if err := st.Migrate(ctx); err != nil {
			_ = st.Close()
			return nil, fmt.Errorf("migrate %s: %w", st, err)
		}
	}
	return st, nil
}

// findNATS returns the URL to connect to: the configured one, the server
// at the shared address, or an embedded server it starts.
func (in *infra) findNATS(ctx context.Context, c Config) (string, error) {
	if c.NATS.URL != "" {
		in.natsWhere = natsconnect.Redact(c.NATS.URL)
		return c.NATS.URL, nil
	}
	addr := c.SharedNATSAddr // "": the demo's own server, on a random port
	if addr != "" && answers(ctx, addr) {
		url := "nats://" + addr
		in.natsWhere = "the NATS server at " + url + " (no --nats-url given; snapshotter run looks there too)"
		return url, nil
	}
	dir := filepath.Join(c.DataDir, "nats")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	e, err := natsconnect.StartEmbedded(dir, addr)
	if err != nil {
		return "", err
	}
	in.embedded = e
	in.natsWhere = "embedded nats-server with JetStream at " + e.URL() + " (" + dir + ")"
	if addr != "" {
		in.natsWhere += "; snapshotter run with no --nats-url finds it there"
	}
	return e.URL(), nil
}

// connect connects to url with c's credentials and TLS and creates the
// notice stream only if it is missing: an existing one (for example with
// 3 replicas, made by `snapshotter migrate`) is left as is.
func (in *infra) connect(ctx context.Context, c Config, url string) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	o := c.NATS
	o.URL, o.Name, o.Logger = url, "evsnap-example-app", c.Logger
	var err error
	if in.nc, err = natsconnect.Connect(cctx, o); err != nil {
		return err
	}
	if in.js, err = jetstream.New(in.nc); err != nil {
		return err
	}
	if _, err := in.js.Stream(cctx, natsnotice.DefaultStream); errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = natsnotice.EnsureStream(cctx, in.js, natsnotice.DefaultStreamConfig())
		return err
	} else if err != nil {
		return fmt.Errorf("look up stream %s: %w", natsnotice.DefaultStream, err)
	}
	return nil
}

// answers reports whether something accepts TCP connections at addr.
func answers(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// Close releases everything; the embedded server, if any, is stopped.
func (in *infra) Close() {
	if in.nc != nil {
		in.nc.Close()
	}
	if in.embedded != nil {
		in.embedded.Shutdown()
	}
	if in.store != nil {
		_ = in.store.Close()
	}
}

// publisher returns a notice publisher on the infra's JetStream and the
// function that closes it, flushing what is queued within 10s even after
// ctx has ended. A failed close is logged: the worker's sweep snapshots
// what the lost notices would have announced.
func (in *infra) publisher(ctx context.Context, logger *slog.Logger) (*natsnotice.Publisher, func(), error) {
	pub, err := natsnotice.NewPublisher(in.js, natsnotice.WithLogger(logger))
	if err != nil {
		return nil, nil, err
	}
	return pub, func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := pub.Close(cctx); err != nil {
			logger.Warn("closing the notice publisher", "error", err)
		}
	}, nil
}
