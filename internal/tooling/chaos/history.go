package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evsnap/evsnap/internal/linearcheck"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
)

// historyType is the aggregate type of the history clients' registers.
// The load's record does not cover them, so the exactly-once and
// convergence checks leave them out; the snapshot audit includes them.
const historyType = "ChaosRegister"

// The history's shape: historyStreams hot registers, historyClients
// clients on each, one load-and-save round per client every historyGap.
const (
	historyStreams = 3
	historyClients = 3
	historyGap     = 40 * time.Millisecond
)

type registerBumped struct{}

func (registerBumped) EventType() string { return "chaos.RegisterBumped" }

type registerState struct {
	N int64 `json:"n"`
}

func (s registerState) Apply(eventsource.Event) registerState { s.N++; return s }

// register is an aggregate whose state counts its events, so a load's
// state must equal its version.
type register struct {
	eventsource.Root[registerState]
}

func (*register) AggregateType() string { return historyType }
func (*register) SchemaVersion() int    { return 1 }

// history runs clients that load and save a few hot registers through
// their own repositories (sync snapshots every 5 events) while the faults
// go on, and records every load and append with its call and return
// times, for the linearizability check.
type history struct {
	h        *linearcheck.History
	store    *pgstore.Store
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	unknown  atomic.Int64 // appends whose outcome the client could not learn
	failed   atomic.Int64 // loads that failed (not recorded: a read changes nothing)
	problems chan string  // a load whose state does not match its version
}

// startHistory starts the clients; stop them with stop.
func (s *suite) startHistory(ctx context.Context) (*history, error) {
	store, err := pgstore.Open(ctx, s.db.dbURL(appHistory), pgstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, fmt.Errorf("history store: %w", err)
	}
	reg := eventsource.NewRegistry()
	if err := eventsource.Register[registerBumped](reg); err != nil {
		store.Close()
		return nil, err
	}
	hs := &history{h: linearcheck.New(), store: store, problems: make(chan string, 16)}
	ctx, hs.cancel = context.WithCancel(ctx)
	ids := make([]uuid.UUID, historyStreams)
	for i := range ids {
		ids[i] = uuid.New()
	}
	for c := range historyStreams * historyClients {
		repo, err := eventsource.NewRepository[register](store, reg,
			eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 5}),
			eventsource.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			hs.stop()
			return nil, err
		}
		hs.wg.Add(1)
		go func() {
			defer hs.wg.Done()
			defer func() { _ = repo.Close(context.WithoutCancel(ctx)) }()
			hs.client(ctx, c, repo, ids[c%historyStreams])
		}()
	}
	return hs, nil
}

func (hs *history) client(ctx context.Context, c int, repo *eventsource.Repository[register, *register], id uuid.UUID) {
	stream := id.String()
	t := time.NewTicker(historyGap)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		end := hs.h.Begin(c, linearcheck.Input{Stream: stream, Kind: linearcheck.Read})
		a, err := repo.Load(octx, id)
		switch {
		case errors.Is(err, eventsource.ErrAggregateNotFound):
			end(linearcheck.Output{Version: 0})
			a = repo.New(id)
		case err != nil:
			hs.failed.Add(1) // unrecorded: a read that returned nothing changed nothing
			cancel()
			continue
		default:
			end(linearcheck.Output{Version: a.Version()})
			if a.State().N != a.Version() {
				select {
				case hs.problems <- fmt.Sprintf("%s: load at v%d has %d events in its state", stream, a.Version(), a.State().N):
				default:
				}
			}
		}
		end = hs.h.Begin(c, linearcheck.Input{Stream: stream, Kind: linearcheck.Append, Expected: a.Version(), N: 1})
		a.Raise(registerBumped{})
		out, err := linearcheck.AppendOutput(repo.Save(octx, a))
		cancel()
		if err != nil {
			hs.unknown.Add(1) // the connection may have gone after the commit
		}
		end(out)
	}
}

// stop stops the clients and closes their store.
func (hs *history) stop() {
	hs.cancel()
	hs.wg.Wait()
	hs.store.Close()
}

// check adds the linearizability check of the recorded history.
func (hs *history) check(add func(string, bool, string, ...any), evidence func(string, ...any)) {
	close(hs.problems)
	var problems []string
	for p := range hs.problems {
		problems = append(problems, p)
	}
	t0 := time.Now()
	err := hs.h.Check(2 * time.Minute)
	add("hot streams stayed linearizable through the faults", err == nil && len(problems) == 0,
		"%d loads and appends on %d registers by %d clients through repositories (%d appends of unknown outcome, %d failed loads unrecorded); checked in %v%s",
		hs.h.Len(), historyStreams, historyStreams*historyClients, hs.unknown.Load(), hs.failed.Load(), time.Since(t0).Round(time.Millisecond), errText(err))
	for _, p := range problems {
		evidence("history: %s", p)
	}
	if err != nil {
		evidence("history: %v", err)
	}
}
