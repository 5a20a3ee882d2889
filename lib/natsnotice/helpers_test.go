package natsnotice_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// env is one test's NATS: a server (embedded, or the real one), a
// connection, and a stream and subject prefix no other test uses.
type env struct {
	t      testing.TB
	srv    *server.Server // nil against the real server
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    natsnotice.StreamConfig
	stream jetstream.Stream
}

// newEnv starts an embedded server and provisions a uniquely named stream.
func newEnv(t testing.TB, connOpts ...nats.Option) *env {
	t.Helper()
	s := natstest.RunServer(t)
	e := connectEnv(t, s.ClientURL(), false, connOpts...)
	e.srv = s
	return e
}

// connectEnv connects to url and provisions a uniquely named stream, which
// t.Cleanup deletes when shared (the real server; an embedded one vanishes
// with its store).
func connectEnv(t testing.TB, url string, shared bool, connOpts ...nats.Option) *env {
	t.Helper()
	e := &env{t: t}
	e.nc = natstest.Connect(t, url, connOpts...)
	e.js = natstest.JetStream(t, e.nc)
	suffix := natstest.UniqueName(t, "t")
	e.cfg = natsnotice.DefaultStreamConfig()
	e.cfg.Name = natsnotice.DefaultStream + "_" + suffix
	e.cfg.SubjectPrefix = "evsnaptest." + suffix + ".appended"
	e.cfg.MaxBytes = 64 << 20 // tests share the real server's storage
	if shared {
		natstest.DeleteStreamOnCleanup(t, e.js, e.cfg.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if e.stream, err = natsnotice.EnsureStream(ctx, e.js, e.cfg); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	return e
}

// publisher returns a Publisher on e's prefix; t.Cleanup closes it (a
// no-op when the test already did).
func (e *env) publisher(opts ...natsnotice.PublisherOption) *natsnotice.Publisher {
	e.t.Helper()
	p, err := natsnotice.NewPublisher(e.js, append([]natsnotice.PublisherOption{
		natsnotice.WithSubjectPrefix(e.cfg.SubjectPrefix), natsnotice.WithLogger(testLogger(e.t)),
	}, opts...)...)
	if err != nil {
		e.t.Fatalf("NewPublisher: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil && !errors.Is(err, natsnotice.ErrDropped) {
			e.t.Errorf("Close: %v", err)
		}
	})
	return p
}

// messages returns every message in e's stream, in order.
func (e *env) messages() []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil {
		e.t.Fatalf("stream info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := e.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	if uint64(len(out)) != info.State.Msgs {
		e.t.Fatalf("read %d messages, stream says %d", len(out), info.State.Msgs)
	}
	return out
}

// appended builds an Appended for aggregate id at versions first..last.
func appended(typ string, id uuid.UUID, first, last int64, types ...string) eventsource.Appended {
	if len(types) == 0 {
		types = []string{"Happened"}
	}
	return eventsource.Appended{
		AggregateType: typ, AggregateID: id,
		FirstVersion: first, LastVersion: last,
		EventTypes:  types,
		CommittedAt: time.Date(2026, 11, 25, 17, 0, 0, 123456789, time.UTC),
	}
}

// within fails the test if d exceeds limit.
func within(t testing.TB, what string, d, limit time.Duration) {
	t.Helper()
	if d > limit {
		t.Errorf("%s took %s, want at most %s", what, d, limit)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testLogger logs through t.Log, so a passing test stays quiet.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
