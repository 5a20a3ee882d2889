package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/evsnap/evsnap/lib/storetest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

func newEvents(n int, from int) []eventsource.NewEvent {
	out := make([]eventsource.NewEvent, n)
	for i := range out {
		out[i] = eventsource.NewEvent{
			ID:         uuid.New(),
			Type:       "Deposited",
			Payload:    fmt.Appendf(nil, `{"amount": %d, "note": "deposit number %d"}`, 10+from+i, from+i),
			OccurredAt: time.Now().UTC().Truncate(time.Microsecond),
		}
	}
	return out
}

// TestConcurrentAppendersTwoPools races appenders on one aggregate through
// two stores on two separate pools (as two processes would): exactly one
// winner per version, no gaps, no duplicates, and every loser gets the
// typed conflict with the version it expected and a newer actual one.
func TestConcurrentAppendersTwoPools(t *testing.T) {
	t.Parallel()
	st1 := newStore(t)
	st2, err := pgstore.New(testPool(t), pgstore.WithSchema(st1.Schema()))
	if err != nil {
		t.Fatal(err)
	}
	stores := []*pgstore.Store{st1, st2}
	typ, id := "Race", uuid.New()
	const writers, perWriter = 8, 15
	var (
		mu        sync.Mutex
		won       = map[uuid.UUID]int64{}
		conflicts int
		failures  []error
		wg        sync.WaitGroup
	)
	ctx := context.Background()
	for w := range writers {
		st := stores[w%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < perWriter; {
				v, err := st.StreamVersion(ctx, typ, id)
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				ev := newEvents(1, w*1000+done)
				res, err := st.Append(ctx, typ, id, eventsource.ExpectedVersion(v), ev)
				var ce *eventsource.ConflictError
				mu.Lock()
				switch {
				case err == nil:
					if res.FirstVersion != v+1 || res.LastVersion != v+1 {
						failures = append(failures, fmt.Errorf("append at v%d reported versions %d..%d", v, res.FirstVersion, res.LastVersion))
					}
					won[ev[0].ID] = res.LastVersion
					done++
				case errors.As(err, &ce) && errors.Is(err, eventsource.ErrConcurrencyConflict):
					if ce.Expected != v || ce.Actual <= v || ce.AggregateID != id || ce.AggregateType != typ {
						failures = append(failures, fmt.Errorf("conflict %+v for an append expecting v%d", ce, v))
					}
					conflicts++
				default:
					failures = append(failures, err)
				}
				stop := len(failures) > 0
				mu.Unlock()
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	storetest.CheckAppended(t, st2, typ, id, won, writers*perWriter)
	t.Logf("%d appends won, %d lost with a conflict", len(won), conflicts)
}

// TestNoStreamRace: many creators of one new stream, one wins.
func TestNoStreamRace(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	typ, id := "Create", uuid.New()
	const n = 12
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.Append(context.Background(), typ, id, eventsource.NoStream, newEvents(3, i*10))
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		var ce *eventsource.ConflictError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &ce):
			if ce.Expected != 0 || ce.Actual != 3 {
				t.Errorf("conflict expected=%d actual=%d, want 0 and 3", ce.Expected, ce.Actual)
			}
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d creators won, want 1", wins)
	}
	if got := storetest.ReadAll(t, st, typ, id, 0); len(got) != 3 {
		t.Fatalf("stream has %d events, want 3", len(got))
	}
}

// TestReadPaging reads across page boundaries, including a stream whose
// length is an exact multiple of the page size, and a break mid-page.
func TestReadPaging(t *testing.T) {
	t.Parallel()
	st := newStore(t, pgstore.WithReadPageSize(10))
	ctx := context.Background()
	for _, n := range []int{9, 10, 11, 20, 35} {
		typ, id := "Paged", uuid.New()
		if _, err := st.Append(ctx, typ, id, eventsource.NoStream, newEvents(n, 0)); err != nil {
			t.Fatal(err)
		}
		for _, after := range []int64{0, 5, 10, int64(n) - 1, int64(n)} {
			got := storetest.ReadAll(t, st, typ, id, after)
			if want := max(int64(n)-after, 0); int64(len(got)) != want {
				t.Fatalf("stream of %d after %d: read %d events, want %d", n, after, len(got), want)
			}
			for i, rec := range got {
				if rec.Version != after+int64(i)+1 {
					t.Fatalf("stream of %d after %d: event %d has version %d", n, after, i, rec.Version)
				}
			}
		}
		count := 0
		for _, err := range st.ReadEvents(ctx, typ, id, 0) {
			if err != nil {
				t.Fatal(err)
			}
			if count++; count == 13 {
				break
			}
		}
	}
}

func TestMetadataAndTimesRoundTrip(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ev := newEvents(2, 0)
	ev[0].Metadata = eventsource.Metadata{CorrelationID: "c", Attributes: map[string]string{"k": `"quoted" \ value`}}
	ev[1].OccurredAt = time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.FixedZone("E", -7*3600))
	typ, id := "Meta", uuid.New()
	res, err := st.Append(context.Background(), typ, id, eventsource.NoStream, ev)
	if err != nil {
		t.Fatal(err)
	}
	if res.CommittedAt.Location() != time.UTC || res.CommittedAt.Nanosecond()%1000 != 0 || time.Since(res.CommittedAt) > time.Minute {
		t.Fatalf("CommittedAt = %v, want a recent UTC time in microseconds", res.CommittedAt)
	}
	got := storetest.ReadAll(t, st, typ, id, 0)
	if got[0].Metadata.Attributes["k"] != `"quoted" \ value` || got[0].Metadata.CorrelationID != "c" {
		t.Fatalf("metadata = %+v", got[0].Metadata)
	}
	if !got[1].Metadata.IsZero() {
		t.Fatalf("zero metadata came back as %+v", got[1].Metadata)
	}
	if !got[1].OccurredAt.Equal(ev[1].OccurredAt) || got[1].OccurredAt.Location() != time.UTC {
		t.Fatalf("OccurredAt = %v, want %v in UTC", got[1].OccurredAt, ev[1].OccurredAt)
	}
	if got[0].Event != nil {
		t.Fatal("RecordedEvent.Event is set; pgstore leaves decoding to the caller")
	}
}

// TestInvalidJSON: jsonb refuses a payload (or snapshot state) that is not
// JSON; the error says which and nothing is committed.
func TestInvalidJSON(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	typ, id := "BadJSON", uuid.New()
	ev := newEvents(3, 0)
	ev[1].Payload = []byte(`{"amount": 10,`)
	_, err := st.Append(ctx, typ, id, eventsource.NoStream, ev)
	if !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("Append with a bad payload: error %v, want ErrInvalidArgument", err)
	}
	for _, want := range []string{"event 1", "not valid JSON", ev[1].ID.String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("error: %v", err)
	if v, err := st.StreamVersion(ctx, typ, id); err != nil || v != 0 {
		t.Fatalf("after a refused append StreamVersion = %d, %v; want 0", v, err)
	}
	if got := storetest.ReadAll(t, st, typ, id, 0); len(got) != 0 {
		t.Fatalf("a refused append stored %d events", len(got))
	}
	// The stream is still usable.
	if _, err := st.Append(ctx, typ, id, eventsource.NoStream, newEvents(1, 0)); err != nil {
		t.Fatal(err)
	}

	snap := eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 1, SchemaVersion: 1, EventID: uuid.New(),
		State: []byte(`not json`), CreatedAt: time.Now().UTC()}
	stored, err := st.SaveSnapshot(ctx, snap)
	if !errors.Is(err, eventsource.ErrInvalidArgument) || stored {
		t.Fatalf("SaveSnapshot with bad state = %v, %v; want ErrInvalidArgument", stored, err)
	}
	if got, err := st.GetSnapshot(ctx, typ, id, 1); err != nil || got != nil {
		t.Fatalf("after a refused save GetSnapshot = %+v, %v", got, err)
	}
}

func TestDuplicateEventIDIsInvalidArgument(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	ev := newEvents(2, 0)
	ev[1].ID = ev[0].ID // repeated within one append
	_, err := st.Append(ctx, "Dup", uuid.New(), eventsource.NoStream, ev)
	if !errors.Is(err, eventsource.ErrInvalidArgument) || errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("error %v, want ErrInvalidArgument and not a conflict", err)
	}
	if !strings.Contains(err.Error(), ev[0].ID.String()) {
		t.Errorf("error %q does not name the event id", err)
	}
}

// TestTwoStoresOneSchema: stores with different table names share a schema
// and a migrations table; every index of each exists under its own name.
func TestTwoStoresOneSchema(t *testing.T) {
	t.Parallel()
	a := newStore(t)
	b, err := pgstore.New(a.Pool(), pgstore.WithSchema(a.Schema()),
		pgstore.WithEventsTable("b_events"), pgstore.WithStreamsTable("b_streams"), pgstore.WithSnapshotsTable("b_snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := a.Pool().Query(ctx, `SELECT tablename, indexname FROM pg_indexes WHERE schemaname = $1 ORDER BY 1, 2`, a.Schema())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var tbl, idx string
		if err := rows.Scan(&tbl, &idx); err != nil {
			t.Fatal(err)
		}
		got = append(got, tbl+":"+idx)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"b_events:b_events_event_id_key", "b_events:b_events_pkey", "b_events:b_events_stream_version_key",
		"b_snapshots:b_snapshots_pkey",
		"b_streams:b_streams_change_idx", "b_streams:b_streams_pkey",
		"b_streams_sweep_marks:b_streams_sweep_marks_pkey",
		"events:events_event_id_key", "events:events_pkey", "events:events_stream_version_key",
		"evsnap_migrations:evsnap_migrations_pkey",
		"snapshots:snapshots_pkey",
		"streams:streams_change_idx", "streams:streams_pkey",
		"streams_sweep_marks:streams_sweep_marks_pkey",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("indexes:\n got %v\nwant %v", got, want)
	}
	id := uuid.New()
	if _, err := a.Append(ctx, "T", id, eventsource.NoStream, newEvents(2, 0)); err != nil {
		t.Fatal(err)
	}
	if v, err := b.StreamVersion(ctx, "T", id); err != nil || v != 0 {
		t.Fatalf("store b sees store a's stream: %d, %v", v, err)
	}
}

// TestListAggregatesAcrossPages lists more aggregates than one query of the
// lister reads (1,000), in id order with and without limits and filters,
// and compares with storekit.FilterAndSort, the reference semantics.
func TestListAggregatesAcrossPages(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	const n = 2500
	// Heads 1..50 and a snapshot on every third aggregate, written straight
	// into the tables: the lister reads nothing else.
	if _, err := st.Pool().Exec(ctx, `INSERT INTO `+qualified(st, "streams")+` (aggregate_type, aggregate_id, version)
SELECT 'Many', gen_random_uuid(), 1 + i % 50 FROM generate_series(1, $1::int) i`, n); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO `+qualified(st, "snapshots")+`
	(aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
SELECT aggregate_id, aggregate_type, greatest(version - 7, 1), 2, '{}', now(), gen_random_uuid()
FROM `+qualified(st, "streams")+` WHERE aggregate_type = 'Many' AND version % 3 = 0`); err != nil {
		t.Fatal(err)
	}
	all := listAll(t, st, "Many", eventsource.ListOptions{})
	if len(all) != n {
		t.Fatalf("listed %d aggregates, want %d", len(all), n)
	}
	for _, opts := range []eventsource.ListOptions{
		{Limit: 1500},
		{Limit: 1000},
		{AfterID: all[999].AggregateID},
		{AfterID: all[10].AggregateID, Limit: 2000},
		{MinBehind: 20},
		{MinBehind: 20, AfterID: all[1200].AggregateID, Limit: 300},
		{MostBehindFirst: true, Limit: 25},
		{MostBehindFirst: true, MinBehind: 45},
		{Limit: -1, MinBehind: -3},
	} {
		got := listAll(t, st, "Many", opts)
		want := storekit.FilterAndSort(slices.Clone(all), opts)
		if !slices.Equal(got, want) {
			t.Errorf("ListAggregates(%+v): %d aggregates, want %d (first difference at %d)", opts, len(got), len(want),
				firstDiff(got, want))
		}
	}
}

func listAll(t *testing.T, st *pgstore.Store, typ string, opts eventsource.ListOptions) []eventsource.AggregateInfo {
	t.Helper()
	var out []eventsource.AggregateInfo
	for in, err := range st.ListAggregates(context.Background(), typ, opts) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, in)
	}
	return out
}

func firstDiff(a, b []eventsource.AggregateInfo) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Metadata of the wrong shape (a hand-edited row) is a decode error naming
// the event, from both read paths.
func TestBadMetadataIsADecodeError(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	typ, id := "BadMeta", uuid.New()
	ev := newEvents(2, 0)
	if _, err := st.Append(ctx, typ, id, eventsource.NoStream, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, "UPDATE "+pgx.Identifier{st.Schema(), "events"}.Sanitize()+
		` SET metadata = '{"attributes": 5}' WHERE event_id = $1`, ev[1].ID); err != nil {
		t.Fatal(err)
	}
	var readErr error
	for _, err := range st.ReadEvents(ctx, typ, id, 0) {
		if err != nil {
			readErr = err
		}
	}
	if !errors.Is(readErr, eventsource.ErrDecode) || !strings.Contains(readErr.Error(), "metadata of event v2") {
		t.Fatalf("ReadEvents: %v", readErr)
	}
	if _, _, err := st.LoadSnapshotAndEvents(ctx, typ, id, 1); !errors.Is(err, eventsource.ErrDecode) {
		t.Fatalf("LoadSnapshotAndEvents: %v", err)
	}
	// The failed load gave its page back; later loads are whole and right.
	good := uuid.New()
	want := newEvents(30, 0)
	if _, err := st.Append(ctx, typ, good, eventsource.NoStream, want); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, events, err := st.LoadSnapshotAndEvents(ctx, typ, good, 1)
		if err != nil {
			t.Fatalf("LoadSnapshotAndEvents after a decode error: %v", err)
		}
		n := 0
		for rec, err := range events {
			if err != nil {
				t.Fatalf("events after a decode error: %v", err)
			}
			if rec.AggregateID != good || rec.ID != want[n].ID || rec.Version != int64(n+1) {
				t.Fatalf("event %d after a decode error: %s v%d %s, want %s v%d %s", n, rec.AggregateID, rec.Version, rec.ID, good, n+1, want[n].ID)
			}
			n++
		}
		if n != len(want) {
			t.Fatalf("%d events after a decode error, want %d", n, len(want))
		}
	}
}
