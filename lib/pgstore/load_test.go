package pgstore_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// statementCounter is a pgx tracer that counts the statements sent to
// the server, each query of a batch on its own.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (c *statementCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.n.Add(1)
}

func (c *statementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TestLoadIsOneStatement: LoadSnapshotAndEvents reads the snapshot and
// the first page of events with one statement, which sees the database at
// one moment (a pgx.Batch of two statements saw it at two, and cost the
// client twice the protocol messages), with and without a snapshot.
func TestLoadIsOneStatement(t *testing.T) {
	counter := &statementCounter{}
	pool := testPoolConfig(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter })
	st := newStoreOn(t, pool)
	ctx := context.Background()
	typ, id := "OneStatement", uuid.New()
	events := newEvents(5, 0)
	if _, err := st.Append(ctx, typ, id, eventsource.NoStream, events); err != nil {
		t.Fatal(err)
	}
	load := func(wantSnap int64, wantFrom int) {
		t.Helper()
		before := counter.n.Load()
		snap, evs, err := st.LoadSnapshotAndEvents(ctx, typ, id, 1)
		if err != nil {
			t.Fatal(err)
		}
		if n := counter.n.Load() - before; n != 1 {
			t.Errorf("the load sent %d statements, want 1", n)
		}
		switch {
		case wantSnap == 0 && snap != nil:
			t.Fatalf("loaded snapshot %+v, want none", snap)
		case wantSnap > 0 && (snap == nil || snap.Version != wantSnap || snap.EventID != events[wantSnap-1].ID || string(snap.State) != `{"n": 3}`):
			t.Fatalf("loaded snapshot %+v, want v%d tied to event %s with its state", snap, wantSnap, events[wantSnap-1].ID)
		}
		v := wantFrom
		for rec, err := range evs {
			if err != nil {
				t.Fatal(err)
			}
			// (Payloads come back in jsonb's normal form: not compared.)
			if rec.Version != int64(v) || rec.ID != events[v-1].ID || rec.Type != events[v-1].Type || !json.Valid(rec.Payload) {
				t.Fatalf("event %d: %+v, want %+v", v, rec, events[v-1])
			}
			v++
		}
		if v != len(events)+1 {
			t.Fatalf("events from v%d stopped before v%d", wantFrom, v)
		}
	}
	load(0, 1)
	if _, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 3, SchemaVersion: 1,
		EventID: events[2].ID, State: []byte(`{"n": 3}`), CreatedAt: events[2].OccurredAt}); err != nil {
		t.Fatal(err)
	}
	load(3, 3)
}

var _ pgx.BatchTracer = (*statementCounter)(nil)
