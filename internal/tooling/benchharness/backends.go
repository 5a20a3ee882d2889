package benchharness

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/pgurl"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// site is one backend's data for one step: a memstore, a SQLite file in
// the temp dir, or a fresh PostgreSQL schema. replica opens another handle
// on the same data (what another process would have); close drops it all.
type site struct {
	kind    string
	store   eventsource.Store
	pg      *pgstore.Store // PostgreSQL only
	schema  string         // PostgreSQL only
	path    string         // SQLite only
	closers []func() error
	h       *Harness
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// openSite creates a fresh, migrated store of the given kind.
func (h *Harness) openSite(ctx context.Context, kind, purpose string) (*site, error) {
	s := &site{kind: kind, h: h}
	switch kind {
	case Memstore:
		s.store = memstore.New()
	case SQLite:
		s.path = filepath.Join(h.tmp, purpose+"-"+randomHex(4)+".db")
		st, err := sqlitestore.Open(ctx, s.path, sqlitestore.WithLogger(h.log))
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, st.Close)
		if err := st.Migrate(ctx); err != nil {
			_ = s.close(ctx)
			return nil, err
		}
		s.store = st
	case Postgres:
		s.schema = "evsnap_bench_" + purpose + "_" + randomHex(4)
		st, err := pgstore.Open(ctx, h.cfg.PostgresURL, pgstore.WithSchema(s.schema), pgstore.WithLogger(h.log))
		if err != nil {
			return nil, err
		}
		s.pg, s.store = st, st
		// Closers run in reverse: the schema is dropped, then the pool closed.
		s.closers = append(s.closers, func() error { st.Close(); return nil }, s.dropSchema)
		if err := st.Migrate(ctx); err != nil {
			_ = s.close(ctx)
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown backend %q", kind)
	}
	return s, nil
}

func (s *site) dropSchema() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := s.pg.Pool().Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s.schema}.Sanitize()+" CASCADE")
	if err != nil {
		return fmt.Errorf("drop schema %s: %w", s.schema, err)
	}
	return nil
}

// replica returns another handle on the site's data with its own
// connections, as another process would have, and the function that closes
// it (memstore has no other handle: it returns the store itself). A
// PostgreSQL replica's connections are named workerApp.
func (s *site) replica(ctx context.Context) (eventsource.Store, func(), error) {
	switch s.kind {
	case SQLite:
		st, err := sqlitestore.Open(ctx, s.path, sqlitestore.WithLogger(s.h.log))
		if err != nil {
			return nil, nil, err
		}
		return st, func() { _ = st.Close() }, nil
	case Postgres:
		st, err := pgstore.Open(ctx, pgurl.WithAppName(s.h.cfg.PostgresURL, workerApp), pgstore.WithSchema(s.schema), pgstore.WithLogger(s.h.log))
		if err != nil {
			return nil, nil, err
		}
		return st, st.Close, nil
	}
	return s.store, func() {}, nil
}

// serverPIDs returns what lists the PostgreSQL processes whose CPU is
// counted for the connections named app on the site's database (see
// pgServerPIDs); nil when the site is not PostgreSQL's.
func (s *site) serverPIDs(ctx context.Context, app string) (func() []int, error) {
	if s.pg == nil {
		return nil, nil
	}
	var db string
	if err := s.pg.Pool().QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return nil, err
	}
	return func() []int { return pgServerPIDs(ctx, s.pg.Pool(), db, app) }, nil
}

// poolSize returns how many PostgreSQL connections one worker replica's
// store may open (pgstore's pool default): the concurrency the worker's
// floor runs pgbench at.
func (s *site) poolSize(ctx context.Context) (int, error) {
	st, closeStore, err := s.replica(ctx)
	if err != nil {
		return 0, err
	}
	defer closeStore()
	pg, ok := st.(*pgstore.Store)
	if !ok {
		return 0, fmt.Errorf("%T is not a *pgstore.Store", st)
	}
	return int(pg.Pool().Config().MaxConns), nil
}

// close closes every handle (newest first) and drops the PostgreSQL schema.
func (s *site) close(context.Context) error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// benchID is the id of the n-th aggregate of the worker's backlog:
// md5("evsnap-bench-<n>") as a UUID, which SQL can compute as
// md5('evsnap-bench-' || n)::uuid (the pgbench floor relies on it).
func benchID(n int) uuid.UUID {
	return uuid.UUID(md5.Sum([]byte(fmt.Sprintf("evsnap-bench-%d", n))))
}

// accountRepo is a repository of the example domain's Account.
type accountRepo = eventsource.Repository[exampledomain.Account, *exampledomain.Account]

// newRepo returns an Account repository on store with the given options
// and the harness's logger.
func (h *Harness) newRepo(store eventsource.Store, opts ...eventsource.Option) (*accountRepo, error) {
	opts = append([]eventsource.Option{eventsource.WithLogger(h.log)}, opts...)
	return eventsource.NewRepository[exampledomain.Account](store, h.reg, opts...)
}

// plainRepo returns an Account repository on store that takes no
// snapshots and reads none: every load replays.
func (h *Harness) plainRepo(store eventsource.Store) (*accountRepo, error) {
	return h.newRepo(store, eventsource.WithSnapshotMode(eventsource.ModeOff))
}

// raise applies the tutorial's workload to a: event v (1-based) is the
// account's opening, then deposits (even v) and withdrawals (odd v)
// alternate.
func raise(a *exampledomain.Account, v int64) {
	switch {
	case v == 1:
		_ = a.Open("Bench", 1000)
	case v%2 == 0:
		_ = a.Deposit(10)
	default:
		_ = a.Withdraw(5)
	}
}

// savesOf is how many events one save of the tutorial's workload appends.
const savesOf = 100

// writeAccount raises and saves the tutorial's workload on a until it is at
// version n, in saves of savesOf events. If stop > 0 there is also a save
// boundary at version stop, after which after is called (to take a
// snapshot there).
func writeAccount(ctx context.Context, r *accountRepo, a *exampledomain.Account, n, stop int64, after func() error) error {
	for v := a.Version() + 1; v <= n; v++ {
		raise(a, v)
		if v%savesOf == 0 || v == n || v == stop {
			if err := r.Save(ctx, a); err != nil {
				return err
			}
		}
		if v == stop && after != nil {
			if err := after(); err != nil {
				return err
			}
		}
	}
	return nil
}

// stream is a notice stream with a unique name and subject prefix, deleted
// by drop.
type stream struct {
	name, prefix string
	h            *Harness
	js           jetstream.JetStream
}

// newStream creates a fresh notice stream (natsnotice's default
// configuration apart from the name and prefix).
func (h *Harness) newStream(ctx context.Context) (*stream, error) {
	return h.newStreamOn(ctx, h.js, 1)
}

// newStreamOn is newStream on another server's JetStream, the stream
// kept by replicas servers.
func (h *Harness) newStreamOn(ctx context.Context, js jetstream.JetStream, replicas int) (*stream, error) {
	suffix := randomHex(4)
	s := &stream{name: "EVSNAP_BENCH_" + suffix, prefix: "evsnapbench." + suffix, h: h, js: js}
	cfg := natsnotice.DefaultStreamConfig()
	cfg.Name, cfg.SubjectPrefix, cfg.Replicas = s.name, s.prefix, replicas
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := natsnotice.EnsureStream(cctx, js, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// publisher returns a notice publisher for the stream; opts come after
// its subject prefix and logger.
func (s *stream) publisher(opts ...natsnotice.PublisherOption) (*natsnotice.Publisher, error) {
	return natsnotice.NewPublisher(s.js, append([]natsnotice.PublisherOption{natsnotice.WithSubjectPrefix(s.prefix), natsnotice.WithLogger(s.h.log)}, opts...)...)
}

// drop deletes the stream.
func (s *stream) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.js.DeleteStream(ctx, s.name); err != nil {
		return fmt.Errorf("delete stream %s: %w", s.name, err)
	}
	return nil
}

// idle reports whether the consumer has nothing pending or unacknowledged.
func (s *stream) idle(ctx context.Context, consumer string) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := s.js.Consumer(cctx, s.name, consumer)
	if err != nil {
		return false, err
	}
	info, err := c.Info(cctx)
	if err != nil {
		return false, err
	}
	return info.NumPending == 0 && info.NumAckPending == 0, nil
}
