package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/linearcheck"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// testLinearizable runs clients that load and save a few hot aggregates at
// once through their own repositories (sync snapshots every 3 events, so
// loads read snapshots written concurrently), records every load, append
// and StreamVersion with its call and return times, and checks with the
// porcupine checker that every stream behaved as a single register of
// versions: a load sees the version the completed appends left, an append
// at an expected version wins exactly when the stream is there, and a
// refused one reports the stream's version. Every load's state must also
// match its version (each event adds 1 to the total).
func testLinearizable(t *testing.T, s eventsource.Store) {
	const (
		aggregates = 3
		clients    = 4 // per aggregate
		rounds     = 25
	)
	ctx := context.Background()
	h := linearcheck.New()
	ids := make([]uuid.UUID, aggregates)
	for i := range ids {
		ids[i] = uuid.New()
	}
	var wg sync.WaitGroup
	errs := make(chan error, aggregates*clients)
	for c := range aggregates * clients {
		id := ids[c%aggregates]
		repo := tallyRepoWith(t, s, eventsource.WithSnapshotMode(eventsource.ModeSync), eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 3}))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := linearClient(ctx, h, c, s, repo, id, rounds); err != nil {
				errs <- fmt.Errorf("client %d on %s: %w", c, id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if err := h.Check(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, id := range ids {
		v, err := s.StreamVersion(ctx, "storetest.Tally", id)
		if err != nil {
			t.Fatal(err)
		}
		total += v
	}
	if total == 0 {
		t.Fatal("no append won: the history checks nothing")
	}
	t.Logf("%d operations linearizable; %d appends won", h.Len(), total)
}

// linearClient loads id, appends one deposit at the loaded version, and
// reads the stream's version directly, rounds times, recording each.
func linearClient(ctx context.Context, h *linearcheck.History, client int, s eventsource.Store, repo *eventsource.Repository[tally, *tally], id uuid.UUID, rounds int) error {
	stream := id.String()
	for range rounds {
		end := h.Begin(client, linearcheck.Input{Stream: stream, Kind: linearcheck.Read})
		a, err := repo.Load(ctx, id)
		switch {
		case errors.Is(err, eventsource.ErrAggregateNotFound):
			end(linearcheck.Output{Version: 0})
			a = repo.New(id)
		case err != nil:
			return fmt.Errorf("load: %w", err)
		default:
			end(linearcheck.Output{Version: a.Version()})
			if got := int64(a.State().Total); got != a.Version() {
				return fmt.Errorf("load at v%d has total %d: the state does not match the version", a.Version(), got)
			}
		}

		end = h.Begin(client, linearcheck.Input{Stream: stream, Kind: linearcheck.Append, Expected: a.Version(), N: 1})
		a.Raise(tallyDeposited{Amount: 1})
		out, err := linearcheck.AppendOutput(repo.Save(ctx, a))
		if err != nil {
			return fmt.Errorf("save: %w", err)
		}
		end(out)

		end = h.Begin(client, linearcheck.Input{Stream: stream, Kind: linearcheck.Read})
		v, err := s.StreamVersion(ctx, "storetest.Tally", id)
		if err != nil {
			return fmt.Errorf("stream version: %w", err)
		}
		end(linearcheck.Output{Version: v})
	}
	return nil
}
