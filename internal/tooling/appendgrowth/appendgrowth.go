// Package appendgrowth measures what appending an event costs as a stream
// grows: one stream written in saves of [Save] events, each save timed,
// the cost per event reported at each of the sizes asked for. A store that
// appends in constant time per event shows the same figure at 1,000 and
// at 100,000 events; one whose cost grows with the stream, or with its
// table, shows it as the ratio.
//
// The stores' BenchmarkAppendGrowth and the benchmark harness's append
// step both use it: each writes the stream through the store's Append and,
// as the floor under it, the same inserts through the raw driver into the
// store's own tables ([SQLiteRaw], [PostgresRaw]), with random (version 4)
// and time-ordered (version 7) event ids.
package appendgrowth

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Save is how many events one save appends; Window how many events before
// each size its cost per event is averaged over.
const (
	Save   = 100
	Window = 1000
)

// IDKind is an event id generator.
type IDKind struct {
	// Name is the UUID version: "v4" or "v7".
	Name string
	New  func() uuid.UUID
}

// IDs are the event id generators compared: random (version 4) and
// time-ordered (version 7).
var IDs = []IDKind{
	{"v4", uuid.New},
	{"v7", func() uuid.UUID { return uuid.Must(uuid.NewV7()) }},
}

// Payload is the JSON of event v of the stream, about the size of the
// tutorial's Account events.
func Payload(v int) []byte {
	return fmt.Appendf(nil, `{"account_id":"6f1c2e0a-4b7d-4e8a-9a51-0c3f1d2e4b5a","amount":%d.25,"currency":"EUR","note":"deposit number %d","balance_after":%d}`,
		v, v, v*10)
}

// Events returns the events of the save that takes a stream from version
// from to from+n, with ids from newID.
func Events(newID func() uuid.UUID, from, n int) []eventsource.NewEvent {
	out := make([]eventsource.NewEvent, n)
	now := time.Now().UTC().Truncate(time.Microsecond)
	for i := range out {
		out[i] = eventsource.NewEvent{ID: newID(), Type: "MoneyDeposited", Payload: Payload(from + i + 1), OccurredAt: now}
	}
	return out
}

// Writer appends the events of one save to the stream, whose version
// before them is from.
type Writer func(ctx context.Context, from int, events []eventsource.NewEvent) error

// StoreWriter appends through an event store, with the expected version,
// as a repository does, to a new stream of type "Account".
func StoreWriter(s eventsource.EventStore) Writer {
	id := uuid.New()
	return func(ctx context.Context, from int, events []eventsource.NewEvent) error {
		_, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(from), events)
		return err
	}
}

// Result is what one stream's writing cost.
type Result struct {
	// PerEvent is, for each size, the mean cost of an event over the
	// Window events up to it.
	PerEvent map[int]time.Duration
	// Typical is, for each size, the cost per event of the median save
	// among the saves of the Window events up to it: what appending at
	// that size costs, without the periodic work (SQLite's WAL
	// checkpoint) that one save of a few pays for all of them.
	Typical map[int]time.Duration
	// Slowest is, for each size, the slowest save of that window.
	Slowest map[int]time.Duration
	// Total is the time of every save of the stream.
	Total time.Duration
}

// Ratio is the cost per event at the largest size over that at the
// smallest.
func (r Result) Ratio(sizes []int) float64 {
	return float64(r.PerEvent[sizes[len(sizes)-1]]) / float64(r.PerEvent[sizes[0]])
}

// TypicalRatio is Typical at the largest size over that at the smallest.
func (r Result) TypicalRatio(sizes []int) float64 {
	return float64(r.Typical[sizes[len(sizes)-1]]) / float64(r.Typical[sizes[0]])
}

// Stream writes one stream up to the largest of sizes (ascending, each a
// multiple of Save and at least Window) in saves of Save, ids from newID,
// timing each save.
func Stream(ctx context.Context, write Writer, newID func() uuid.UUID, sizes []int) (Result, error) {
	last := sizes[len(sizes)-1]
	saves := make([]time.Duration, 0, last/Save)
	for from := 0; from < last; from += Save {
		events := Events(newID, from, Save)
		t := time.Now()
		if err := write(ctx, from, events); err != nil {
			return summarize(sizes, saves), fmt.Errorf("save at version %d: %w", from, err)
		}
		saves = append(saves, time.Since(t))
	}
	return summarize(sizes, saves), nil
}

// summarize makes the Result of a stream whose i-th save (of events
// i×Save+1 to (i+1)×Save) took saves[i].
func summarize(sizes []int, saves []time.Duration) Result {
	res := Result{PerEvent: make(map[int]time.Duration, len(sizes)), Typical: make(map[int]time.Duration, len(sizes)),
		Slowest: make(map[int]time.Duration, len(sizes))}
	window := make(map[int][]time.Duration, len(sizes))
	for i, d := range saves {
		res.Total += d
		to := (i + 1) * Save
		for _, n := range sizes {
			if to > n-Window && to <= n {
				res.PerEvent[n] += d
				window[n] = append(window[n], d)
			}
		}
	}
	for _, n := range sizes {
		w := window[n]
		if len(w) == 0 {
			continue
		}
		res.PerEvent[n] /= Window
		slices.Sort(w)
		res.Typical[n] = w[len(w)/2] / Save
		res.Slowest[n] = w[len(w)-1]
	}
	return res
}

// SQLiteRaw returns a writer that inserts each save's events straight
// through database/sql into the events table of the database file at path
// (which a sqlitestore.Store has migrated), on a connection opened as the
// store opens its write connection (WAL, synchronous FULL, BEGIN
// IMMEDIATE): one transaction per save, a prepared INSERT per event, the
// columns encoded as the store encodes them. done closes it.
func SQLiteRaw(ctx context.Context, path string) (w Writer, done func() error, err error) {
	db, err := sql.Open(sqlitestore.DriverName, path+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(1)
	ins, err := db.PrepareContext(ctx, `INSERT INTO "events"
(event_id, aggregate_type, aggregate_id, version, event_type, payload, metadata, occurred_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)`)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("prepare the raw insert into %s: %w", path, err)
	}
	id := uuid.New().String()
	w = func(ctx context.Context, from int, events []eventsource.NewEvent) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback() //nolint:errcheck // a no-op after Commit
		st := tx.StmtContext(ctx, ins)
		for i := range events {
			e := &events[i]
			if _, err := st.ExecContext(ctx, e.ID.String(), "Account", id, from+i+1, e.Type, string(e.Payload), "{}", e.OccurredAt.UnixMicro()); err != nil {
				return err
			}
		}
		return tx.Commit()
	}
	return w, func() error { ins.Close(); return db.Close() }, nil
}

// PostgresRaw returns a writer that inserts each save's events through
// pool into events, the quoted name of a pgstore.Store's events table: one
// INSERT ... SELECT FROM unnest of the save's columns (one round trip, one
// implicit transaction, as the store's Append), without the stream row.
func PostgresRaw(pool *pgxpool.Pool, events string) Writer {
	insert := `INSERT INTO ` + events + `
(event_id, aggregate_type, aggregate_id, version, event_type, payload, metadata, occurred_at)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.payload, e.metadata, e.occurred_at
FROM unnest($4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[], $8::timestamptz[])
	WITH ORDINALITY AS e(event_id, event_type, payload, metadata, occurred_at, ord)`
	id := [16]byte(uuid.New())
	empty := []byte("{}")
	return func(ctx context.Context, from int, evs []eventsource.NewEvent) error {
		n := len(evs)
		ids, types, payloads, metas, times := make([][16]byte, n), make([]string, n), make([][]byte, n), make([][]byte, n), make([]time.Time, n)
		for i := range evs {
			e := &evs[i]
			ids[i], types[i], payloads[i], metas[i], times[i] = e.ID, e.Type, e.Payload, empty, e.OccurredAt
		}
		_, err := pool.Exec(ctx, insert, "Account", id, int64(from), ids, types, payloads, metas, times)
		return err
	}
}

// PostgresEventsTable is the quoted name of the events table of a store
// in schema.
func PostgresEventsTable(schema string) string { return pgx.Identifier{schema, "events"}.Sanitize() }

// Bench is the body of one sub-benchmark of a store's
// BenchmarkAppendGrowth: for every iteration, setup (timer stopped) gives
// a writer on an empty store, and a stream of the largest size is written
// through it with ids from newID. It reports ns/event at each size, the
// ratio of the largest size's to the smallest's, and the seconds a whole
// stream took, each the mean over the iterations.
func Bench(b *testing.B, newID func() uuid.UUID, sizes []int, setup func(b *testing.B) Writer) {
	b.Helper()
	ctx := context.Background()
	sum := Result{PerEvent: map[int]time.Duration{}, Typical: map[int]time.Duration{}}
	runs := 0
	for b.Loop() {
		b.StopTimer()
		write := setup(b)
		b.StartTimer()
		res, err := Stream(ctx, write, newID, sizes)
		if err != nil {
			b.Fatal(err)
		}
		for n, d := range res.PerEvent {
			sum.PerEvent[n] += d
			sum.Typical[n] += res.Typical[n]
		}
		sum.Total += res.Total
		runs++
	}
	for _, n := range sizes {
		b.ReportMetric(float64(sum.PerEvent[n].Nanoseconds())/float64(runs), fmt.Sprintf("ns/event@%dk", n/1000))
	}
	b.ReportMetric(sum.Ratio(sizes), fmt.Sprintf("ratio@%dk/%dk", sizes[len(sizes)-1]/1000, sizes[0]/1000))
	b.ReportMetric(sum.TypicalRatio(sizes), fmt.Sprintf("median-save-ratio@%dk/%dk", sizes[len(sizes)-1]/1000, sizes[0]/1000))
	b.ReportMetric(sum.Total.Seconds()/float64(runs), "s/stream")
}
