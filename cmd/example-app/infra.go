package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/backend"
	"github.com/evsnap/evsnap/internal/natsconn"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// infra is what the app runs on: a migrated store and a JetStream with the
// notice stream, embedded or real.
type infra struct {
	store     *backend.Backend
	embedded  *natsconn.Embedded
	nc        *nats.Conn
	js        jetstream.JetStream
	natsWhere string
}

// natsDefaultAddr is natsconn.DefaultURL's host:port; a variable so tests
// can point it at a server (or a free port) of their own.
var natsDefaultAddr = strings.TrimPrefix(natsconn.DefaultURL, "nats://")

// openInfra opens the store (fresh SQLite file when using the default
// path and fresh is set), migrates it when migrate is set, and connects to
// NATS, creating the notice stream if it does not exist. With no NATS URL
// configured it starts an embedded server: on a random port, or, with
// shareNATS (example-app load), on natsconn.DefaultURL's address, where
// `snapshotter run` looks when it is not configured either, unless a
// server already answers there, which it then uses. NATS credentials and
// TLS come from the EVSNAP_NATS_* variables the snapshotter reads.
func openInfra(ctx context.Context, c *common, defaultDB string, fresh, migrate, shareNATS bool) (*infra, error) {
	in := &infra{}
	sqlitePath := c.sqlitePath
	if c.postgresURL == "" && sqlitePath == "" {
		sqlitePath = filepath.Join(c.dataDir, defaultDB)
		if fresh {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(sqlitePath + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, fmt.Errorf("reset %s: %w", sqlitePath+suffix, err)
				}
			}
		}
	}
	st, err := backend.Open(ctx, backend.Options{PostgresURL: c.postgresURL, SQLitePath: sqlitePath, Logger: c.logger})
	if err != nil {
		return nil, err
	}
	in.store = st
	if migrate {
		if err := st.Migrate(ctx); err != nil {
			in.Close()
			return nil, fmt.Errorf("migrate %s: %w", st, err)
		}
	}
	url := c.natsURL
	if url == "" {
		dir := filepath.Join(c.dataDir, "nats")
		addr := "" // the demo's own server, on a random port
		if shareNATS {
			addr = natsDefaultAddr
		}
		if addr != "" && answers(ctx, addr) {
			url = "nats://" + addr
			in.natsWhere = "the NATS server at " + url + " (no --nats-url given; snapshotter run looks there too)"
		} else {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				in.Close()
				return nil, err
			}
			e, err := natsconn.StartEmbedded(dir, addr)
			if err != nil {
				in.Close()
				return nil, err
			}
			in.embedded = e
			url = e.URL()
			in.natsWhere = "embedded nats-server with JetStream at " + url + " (" + dir + ")"
			if shareNATS {
				in.natsWhere += "; snapshotter run with no --nats-url finds it there"
			}
		}
	} else {
		in.natsWhere = natsconn.Redact(url)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	in.nc, err = natsconn.Connect(cctx, natsconn.Options{
		URL: url, Name: "evsnap-example-app", Logger: c.logger,
		// Credentials and TLS as the snapshotter takes them (env only here).
		CredsFile: os.Getenv("EVSNAP_NATS_CREDS"), NKeySeedFile: os.Getenv("EVSNAP_NATS_NKEY"),
		User: os.Getenv("EVSNAP_NATS_USER"), Password: os.Getenv("EVSNAP_NATS_PASSWORD"), Token: os.Getenv("EVSNAP_NATS_TOKEN"),
		CAFile: os.Getenv("EVSNAP_NATS_CA"), CertFile: os.Getenv("EVSNAP_NATS_CERT"), KeyFile: os.Getenv("EVSNAP_NATS_KEY"),
	})
	if err != nil {
		in.Close()
		return nil, err
	}
	in.js, err = jetstream.New(in.nc)
	if err != nil {
		in.Close()
		return nil, err
	}
	// Create the notice stream only if it is missing: an existing one (for
	// example with 3 replicas, made by `snapshotter migrate`) is left as is.
	if _, err := in.js.Stream(cctx, natsnotice.DefaultStream); errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := natsnotice.EnsureStream(cctx, in.js, natsnotice.DefaultStreamConfig()); err != nil {
			in.Close()
			return nil, err
		}
	} else if err != nil {
		in.Close()
		return nil, fmt.Errorf("look up stream %s: %w", natsnotice.DefaultStream, err)
	}
	return in, nil
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
