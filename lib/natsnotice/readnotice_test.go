package natsnotice_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// request builds a load's request for aggregate id, versions first..last.
func request(typ string, id uuid.UUID, first, last int64) eventsource.SnapshotRequest {
	return eventsource.SnapshotRequest{AggregateType: typ, AggregateID: id, FirstVersion: first, LastVersion: last,
		RequestedAt: time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)}
}

// decodeAll decodes every message of e's stream, with its message id.
func decodeAll(t *testing.T, e *env) ([]natsnotice.Notice, []string) {
	t.Helper()
	var notices []natsnotice.Notice
	var ids []string
	for _, m := range e.messages() {
		n, err := natsnotice.Decode(m.Data)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		notices = append(notices, n)
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return notices, ids
}

// A load's request right after the save that reached the same version is
// stored beside that save's notice, not dropped by JetStream's duplicate
// window as a copy of it; a second request for the same head within the
// window is.
func TestReadNoticeIsNotADuplicateOfTheAppend(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	ctx := ctxTimeout(t, 20*time.Second)
	id := uuid.New()
	if err := p.Notify(ctx, appended("Account", id, 1, 300)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	for range 2 {
		if err := p.RequestSnapshot(ctx, request("Account", id, 1, 300)); err != nil {
			t.Fatalf("RequestSnapshot: %v", err)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
	notices, ids := decodeAll(t, e)
	if len(notices) != 2 {
		t.Fatalf("%d messages in the stream (ids %v), want 2: the append's and one request's", len(notices), ids)
	}
	prefix := "Account/" + id.String() + "/300"
	if ids[0] != prefix || ids[1] != prefix+"/read" {
		t.Fatalf("message ids %v, want %s and %s/read", ids, prefix, prefix)
	}
	read := notices[1]
	if read.Reason != natsnotice.ReasonRead || read.FirstVersion != 1 || read.LastVersion != 300 || len(read.EventTypes) != 0 ||
		!read.CommittedAt.Equal(time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)) {
		t.Fatalf("read notice %+v", read)
	}
	if notices[0].Reason != "" {
		t.Fatalf("append notice has reason %q", notices[0].Reason)
	}
	if st := p.Stats(); st.Published != 3 || st.Duplicates != 1 {
		t.Fatalf("stats %+v, want 3 published, 1 of them (the second request) a duplicate", st)
	}
}

// A load's request is never merged with the append notices queued around
// it, which still merge with each other.
func TestReadNoticeIsNeverMerged(t *testing.T) {
	e := newEnv(t)
	p := e.publisher(natsnotice.WithLinger(natsnotice.MaxLingerLimit))
	ctx := ctxTimeout(t, 20*time.Second)
	id := uuid.New()
	for v := int64(1); v <= 20; v++ {
		if err := p.Notify(ctx, appended("Account", id, v, v)); err != nil {
			t.Fatalf("Notify: %v", err)
		}
		if v == 10 {
			if err := p.RequestSnapshot(ctx, request("Account", id, 1, 10)); err != nil {
				t.Fatalf("RequestSnapshot: %v", err)
			}
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	notices, ids := decodeAll(t, e)
	var reads int
	next := int64(1)
	for i, n := range notices {
		if n.Reason == natsnotice.ReasonRead {
			reads++
			if n.FirstVersion != 1 || n.LastVersion != 10 || ids[i] != "Account/"+id.String()+"/10/read" {
				t.Fatalf("read notice %+v, id %s; want v1-v10 as requested", n, ids[i])
			}
			continue
		}
		if n.FirstVersion != next {
			t.Fatalf("append notices %v do not cover v1-v20 in order", ids)
		}
		next = n.LastVersion + 1
	}
	if reads != 1 || next != 21 {
		t.Fatalf("%d read notices, appends up to v%d; want 1 and v20 (ids %v)", reads, next-1, ids)
	}
	if len(notices) > 4 {
		t.Fatalf("%d messages for 20 saves within one linger and a request: the appends did not merge (ids %v)", len(notices), ids)
	}
}

func TestRequestSnapshotInvalid(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	ctx := ctxTimeout(t, 10*time.Second)
	err := p.RequestSnapshot(ctx, request("Bad.Type", uuid.New(), 1, 5))
	if !errors.Is(err, natsnotice.ErrInvalidAggregateType) || !strings.Contains(err.Error(), "request snapshot of Bad.Type") {
		t.Fatalf("RequestSnapshot(Bad.Type) = %v, want ErrInvalidAggregateType naming the request", err)
	}
	if err := p.RequestSnapshot(ctx, request("Account", uuid.New(), 6, 5)); !errors.Is(err, natsnotice.ErrMalformed) {
		t.Fatalf("RequestSnapshot(last < first) = %v, want ErrMalformed", err)
	}
	if st := p.Stats(); st.Invalid != 2 || st.Enqueued != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.RequestSnapshot(ctx, request("Account", uuid.New(), 1, 5)); !errors.Is(err, natsnotice.ErrClosed) {
		t.Fatalf("RequestSnapshot after Close = %v, want ErrClosed", err)
	}
}

// savedTicket returns a repository in external mode on p with a load
// trigger at trigger events, and the id of a ticket it saved with events
// events in one save.
func savedTicket(t *testing.T, p *natsnotice.Publisher, trigger, events int) (*eventsource.Repository[ticket, *ticket], uuid.UUID) {
	t.Helper()
	repo, err := eventsource.NewRepository[ticket](memstore.New(), ticketRegistry(),
		eventsource.WithAppendNotifier(p), eventsource.WithLoadTrigger(trigger), eventsource.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	t.Cleanup(func() { _ = repo.Close(ctxTimeout(t, 5*time.Second)) })
	tk := repo.New(uuid.New())
	tk.Raise(ticketOpened{})
	for i := range events - 1 {
		tk.Raise(ticketNoted{Text: fmt.Sprint(i)})
	}
	if err := repo.Save(ctxTimeout(t, 10*time.Second), tk); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return repo, tk.ID()
}

// A repository in external mode with a load trigger and the real
// publisher: many concurrent loads of an aggregate far past the trigger
// publish one read notice, beside the save's append notice.
func TestRepositoryLoadTriggerPublishes(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	repo, id := savedTicket(t, p, 50, 120)
	ctx := ctxTimeout(t, 20*time.Second)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if got, err := repo.Load(ctx, id); err != nil || got.State().Notes != 119 {
				t.Errorf("Load = %v, %v", got, err)
			}
		})
	}
	wg.Wait()
	if _, err := repo.AwaitPendingSnapshots(ctx); err != nil {
		t.Fatalf("AwaitPendingSnapshots: %v", err)
	}
	notices, ids := decodeAll(t, e)
	want := []string{"Ticket/" + id.String() + "/120", "Ticket/" + id.String() + "/120/read"}
	if len(ids) != 2 || ids[0] != want[0] || ids[1] != want[1] {
		t.Fatalf("message ids %v, want %v", ids, want)
	}
	if r := notices[1]; r.FirstVersion != 1 || r.LastVersion != 120 || r.Reason != natsnotice.ReasonRead {
		t.Fatalf("read notice %+v", r)
	}
	// One request from 16 loads: the repository's rate limit, not
	// JetStream's duplicate window, held back the other 15.
	if st := p.Stats(); st.Enqueued != 2 || st.Duplicates != 0 {
		t.Fatalf("publisher stats %+v, want 2 accepted (the save's notice, one request), no duplicate", st)
	}
}

// A publisher that refuses the request (here: closed) never fails the
// load that asked.
func TestRepositoryLoadTriggerPublisherRefuses(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	repo, id := savedTicket(t, p, 5, 10)
	ctx := ctxTimeout(t, 20*time.Second)
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got, err := repo.Load(ctx, id)
	if err != nil || got.Version() != 10 {
		t.Fatalf("Load with the publisher closed = %v, %v; want v10", got, err)
	}
	if st := p.Stats(); st.Enqueued != 1 {
		t.Fatalf("stats %+v, want only the save's notice accepted", st)
	}
}
