package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/evsnap/evsnap/lib/storetest"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func event(n int) eventsource.NewEvent {
	return eventsource.NewEvent{
		ID:         uuid.New(),
		Type:       "Thing",
		Payload:    []byte(fmt.Sprintf(`{"n":%d}`, n)),
		OccurredAt: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func events(from, count int) []eventsource.NewEvent {
	out := make([]eventsource.NewEvent, count)
	for i := range out {
		out[i] = event(from + i)
	}
	return out
}

func snapshot(typ string, id uuid.UUID, v int64) eventsource.Snapshot {
	return eventsource.Snapshot{
		AggregateID: id, AggregateType: typ, Version: v, SchemaVersion: 1, EventID: uuid.New(),
		State: []byte(fmt.Sprintf(`{"v":%d}`, v)), CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func mustAppend(tb testing.TB, s *sqlitestore.Store, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, evs []eventsource.NewEvent) {
	tb.Helper()
	if _, err := s.Append(context.Background(), typ, id, expected, evs); err != nil {
		tb.Fatalf("Append(%s %s, expected %d): %v", typ, id, expected, err)
	}
}

func versionOf(tb testing.TB, s *sqlitestore.Store, typ string, id uuid.UUID) int64 {
	tb.Helper()
	v, err := s.StreamVersion(context.Background(), typ, id)
	if err != nil {
		tb.Fatalf("StreamVersion(%s %s): %v", typ, id, err)
	}
	return v
}

func readVersions(tb testing.TB, s *sqlitestore.Store, typ string, id uuid.UUID) []eventsource.RecordedEvent {
	tb.Helper()
	var out []eventsource.RecordedEvent
	for rec, err := range s.ReadEvents(context.Background(), typ, id, 0) {
		if err != nil {
			tb.Fatalf("ReadEvents(%s %s): %v", typ, id, err)
		}
		out = append(out, rec)
	}
	return out
}

// rawDB opens the file with database/sql directly, as another program would.
func rawDB(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	db, err := sql.Open(sqlitestore.DriverName, path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// isLocked reports an error that says SQLite refused for a lock.
func isLocked(err error) bool {
	msg := strings.ToLower(fmt.Sprint(err))
	return strings.Contains(msg, "locked") || strings.Contains(msg, "sqlite_busy") || strings.Contains(msg, "busy")
}

// TestMemoryIsOneDatabase checks that ":memory:" is one database that every
// goroutine sees, and that a caller can use the store inside its own
// iterations over the single connection without deadlocking.
func TestMemoryIsOneDatabase(t *testing.T) {
	s := openStore(t, sqlitestore.MemoryPath)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const typ, writers, per = "Mem", 8, 20
	ids := make([]uuid.UUID, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers*per*2)
	for w := range writers {
		ids[w] = uuid.New()
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := s.Append(ctx, typ, ids[w], eventsource.ExpectedVersion(i), events(i, 1)); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // a concurrent reader on the same single connection
			defer wg.Done()
			for range per {
				for _, err := range s.ReadEvents(ctx, typ, ids[w], 0) {
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got := len(readVersions(t, s, typ, id)); got != per {
			t.Fatalf("%s has %d events, want %d: goroutines did not share one database", id, got, per)
		}
	}

	// Store calls inside iterations: the connection is free between
	// windows (ReadEvents) and after collecting (ListAggregates).
	n := 0
	for rec, err := range s.ReadEvents(ctx, typ, ids[0], 0) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if _, err := s.StreamVersion(ctx, typ, ids[0]); err != nil {
			t.Fatalf("StreamVersion inside ReadEvents: %v", err)
		}
		if rec.Version == 1 {
			if _, err := s.Append(ctx, typ, ids[0], eventsource.AnyVersion, events(99, 1)); err != nil {
				t.Fatalf("Append inside ReadEvents: %v", err)
			}
		}
	}
	if n < per {
		t.Fatalf("read %d events, want at least %d", n, per)
	}
	listed := 0
	for in, err := range s.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		listed++
		if _, err := s.SaveSnapshot(ctx, snapshot(typ, in.AggregateID, in.HeadVersion)); err != nil {
			t.Fatalf("SaveSnapshot inside ListAggregates: %v", err)
		}
	}
	if listed != writers {
		t.Fatalf("listed %d aggregates, want %d", listed, writers)
	}

	// Two in-memory stores are two databases.
	other := openStore(t, sqlitestore.MemoryPath)
	if v := versionOf(t, other, typ, ids[0]); v != 0 {
		t.Fatalf("a second in-memory store sees version %d of the first one's stream", v)
	}
}

// TestConcurrentWritersNeverLocked runs 16 writers on one file store, half
// on their own aggregates and half racing on one, with readers and snapshot
// writers alongside: no error other than the typed conflict, ever.
func TestConcurrentWritersNeverLocked(t *testing.T) {
	hammer(t, openStore(t, tempDB(t)))
}

// TestNewDeferredPoolNeverLocked does the same through New on a pool of 8
// connections whose DSN sets a busy timeout but not _txlock=immediate: an
// append's first statement is a write, so even a deferred transaction
// takes the write lock before it reads.
func TestNewDeferredPoolNeverLocked(t *testing.T) {
	db, s := newOnDB(t, tempDB(t)+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	db.SetMaxOpenConns(8)
	hammer(t, s)
}

func hammer(t *testing.T, s *sqlitestore.Store) {
	ctx := context.Background()
	const typ, own, racers, perOwn, perRacer = "Busy", 8, 8, 25, 10
	shared := uuid.New()
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		failures  []error
		conflicts int
		won       = map[uuid.UUID]int64{}
	)
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}
	ownIDs := make([]uuid.UUID, own)
	for w := range own {
		ownIDs[w] = uuid.New()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perOwn {
				if _, err := s.Append(ctx, typ, ownIDs[w], eventsource.ExpectedVersion(i*2), events(i, 2)); err != nil {
					fail(fmt.Errorf("own writer %d append %d: %w", w, i, err))
					return
				}
				if i%5 == 4 {
					if _, err := s.SaveSnapshot(ctx, snapshot(typ, ownIDs[w], int64(i*2+2))); err != nil {
						fail(fmt.Errorf("own writer %d snapshot: %w", w, err))
						return
					}
				}
				for _, err := range s.ReadEvents(ctx, typ, shared, 0) {
					if err != nil {
						fail(fmt.Errorf("own writer %d read: %w", w, err))
						return
					}
				}
			}
		}()
	}
	for w := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perRacer; {
				v, err := s.StreamVersion(ctx, typ, shared)
				if err != nil {
					fail(err)
					return
				}
				ev := event(w*1000 + i)
				res, err := s.Append(ctx, typ, shared, eventsource.ExpectedVersion(v), []eventsource.NewEvent{ev})
				var ce *eventsource.ConflictError
				switch {
				case err == nil:
					mu.Lock()
					won[ev.ID] = res.LastVersion
					mu.Unlock()
					i++
				case errors.As(err, &ce):
					if ce.Expected != v || ce.Actual <= v {
						fail(fmt.Errorf("conflict %+v for expected %d", ce, v))
						return
					}
					mu.Lock()
					conflicts++
					mu.Unlock()
				default:
					fail(fmt.Errorf("racer %d: %w", w, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range failures {
		if isLocked(err) {
			t.Errorf("a writer saw the database locked: %v", err)
		} else {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	for _, id := range ownIDs {
		if v := versionOf(t, s, typ, id); v != 2*perOwn {
			t.Fatalf("own aggregate %s at version %d, want %d", id, v, 2*perOwn)
		}
	}
	got := readVersions(t, s, typ, shared)
	if len(got) != racers*perRacer {
		t.Fatalf("shared stream has %d events, want %d", len(got), racers*perRacer)
	}
	for i, rec := range got {
		if rec.Version != int64(i+1) || won[rec.ID] != rec.Version {
			t.Fatalf("event %d: version %d, its append reported %d", i, rec.Version, won[rec.ID])
		}
	}
	t.Logf("%d conflicts among %d racers, no lock errors", conflicts, racers)
}

// TestTwoHandlesOneFile opens the file twice, as two processes would: they
// migrate at the same time, then race on one aggregate. Every version has
// exactly one winner and the losers get the typed conflict.
func TestTwoHandlesOneFile(t *testing.T) {
	path := tempDB(t)
	ctx := context.Background()
	var handles [2]*sqlitestore.Store
	for i := range handles {
		s, err := sqlitestore.Open(ctx, path, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		handles[i] = s
	}
	var wg sync.WaitGroup
	migrateErrs := make([]error, len(handles))
	for i, s := range handles {
		wg.Add(1)
		go func() { defer wg.Done(); migrateErrs[i] = s.Migrate(ctx) }()
	}
	wg.Wait()
	for i, err := range migrateErrs {
		if err != nil {
			t.Fatalf("concurrent Migrate on handle %d: %v", i, err)
		}
	}

	const typ, perHandle, perWriter = "TwoProc", 4, 6
	id := uuid.New()
	var (
		mu       sync.Mutex
		won      = map[int64][]uuid.UUID{}
		failures []error
	)
	for h, s := range handles {
		for w := range perHandle {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perWriter; {
					v, err := s.StreamVersion(ctx, typ, id)
					if err == nil {
						ev := event(h*100 + w*10 + i)
						var res eventsource.AppendResult
						res, err = s.Append(ctx, typ, id, eventsource.ExpectedVersion(v), []eventsource.NewEvent{ev})
						if err == nil {
							mu.Lock()
							won[res.LastVersion] = append(won[res.LastVersion], ev.ID)
							mu.Unlock()
							i++
							continue
						}
						var ce *eventsource.ConflictError
						if errors.As(err, &ce) && ce.Expected == v && ce.Actual > v {
							continue
						}
					}
					mu.Lock()
					failures = append(failures, fmt.Errorf("handle %d writer %d: %w", h, w, err))
					mu.Unlock()
					return
				}
			}()
		}
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	const total = 2 * perHandle * perWriter
	for v := int64(1); v <= total; v++ {
		if len(won[v]) != 1 {
			t.Fatalf("version %d had %d winners", v, len(won[v]))
		}
	}
	for h, s := range handles {
		got := readVersions(t, s, typ, id)
		if len(got) != total {
			t.Fatalf("handle %d reads %d events, want %d", h, len(got), total)
		}
		for i, rec := range got {
			if rec.Version != int64(i+1) || rec.ID != won[rec.Version][0] {
				t.Fatalf("handle %d: event %d is v%d %s; the winner of v%d was %v", h, i, rec.Version, rec.ID, i+1, won[int64(i+1)])
			}
		}
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	path := tempDB(t)
	s := openStore(t, path) // migrated once
	db := rawDB(t, path)
	schema := func() string {
		rows, err := db.Query(`SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_schema ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			b.WriteString(line + "\n")
		}
		return b.String()
	}
	before := schema()
	for range 2 {
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
	}
	if after := schema(); after != before {
		t.Fatalf("Migrate again changed the schema:\n%s\nwas:\n%s", after, before)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM evsnap_migrations WHERE version_id > 0 AND is_applied`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != sqlitestore.SchemaVersion() {
		t.Fatalf("%d migrations recorded, want %d", n, sqlitestore.SchemaVersion())
	}
	for _, want := range []string{"events_event_id_key", "events_stream_version_key", "snapshots_type_schema_idx"} {
		if !strings.Contains(before, "index "+want+":") {
			t.Errorf("index %s missing from the schema:\n%s", want, before)
		}
	}
}

// TestMigrationTwoTiesSnapshotsToHistory: a database at migration 1
// holding snapshots moves to migration 2. A snapshot whose event is in its
// stream takes that event's id; the others (ahead of their stream after a
// restore, of a stream that does not exist, of a stream of another type)
// cannot be tied to any history and are gone. The database is put back at
// migration 1 by rebuilding the snapshots table as migration 1 made it and
// forgetting that migrations 2 and 3 ran (3 then moves each to its schema
// version's row).
func TestMigrationTwoTiesSnapshotsToHistory(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	st := openStore(t, path)
	const typ = "Tied"
	tied, ahead, noStream, otherType := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	evs3 := events(1, 3)
	for _, a := range []struct {
		typ    string
		id     uuid.UUID
		events []eventsource.NewEvent
	}{{typ, tied, evs3}, {typ, ahead, events(1, 1)}, {"Other", otherType, events(1, 2)}} {
		if _, err := st.Append(ctx, a.typ, a.id, eventsource.NoStream, a.events); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	snapshotsAtMigrationOne(t, db)
	if _, err := db.Exec(`DELETE FROM evsnap_migrations WHERE version_id IN (2, 3)`); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		id      uuid.UUID
		version int64
	}{{tied, 3}, {ahead, 50}, {noStream, 5}, {otherType, 2}} {
		if _, err := db.Exec(`INSERT INTO snapshots VALUES (?, ?, ?, 1, '{"n": 1}', 0)`, s.id.String(), typ, s.version); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, path) // migrates
	got, err := st.GetSnapshot(ctx, typ, tied, 1)
	if err != nil || got == nil || got.Version != 3 || got.EventID != evs3[2].ID {
		t.Fatalf("snapshot matching its stream after the upgrade: %+v, %v; want v3 tied to event %s", got, err, evs3[2].ID)
	}
	for name, id := range map[string]uuid.UUID{"ahead of its stream": ahead, "without a stream": noStream, "of another type's stream": otherType} {
		if got, err := st.GetSnapshot(ctx, typ, id, 1); err != nil || got != nil {
			t.Errorf("snapshot %s after the upgrade: %+v, %v; want it gone", name, got, err)
		}
	}
	db = rawDB(t, path)
	var schema string
	if err := db.QueryRow(`SELECT group_concat(sql, ';') FROM sqlite_schema WHERE tbl_name = 'snapshots'`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(schema, "event_id       TEXT    NOT NULL") || !strings.Contains(schema, "snapshots_type_schema_idx") {
		t.Fatalf("snapshots schema after the upgrade:\n%s", schema)
	}
	evs := storetest.ReadAll(t, st, typ, ahead, 0)
	if stored, err := st.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: ahead, AggregateType: typ, Version: 1, SchemaVersion: 1,
		EventID: evs[0].ID, State: []byte(`{"n": 1}`), CreatedAt: time.Now()}); err != nil || !stored {
		t.Fatalf("SaveSnapshot after the upgrade = %v, %v", stored, err)
	}
}

func TestUseBeforeMigrate(t *testing.T) {
	for _, path := range []string{tempDB(t), sqlitestore.MemoryPath} {
		s, err := sqlitestore.Open(context.Background(), path, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx := context.Background()
		typ, id := "Unmigrated", uuid.New()
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, sqlitestore.ErrNotMigrated) || !strings.Contains(err.Error(), "Migrate") {
				t.Errorf("%s: %s before Migrate: error %v, want ErrNotMigrated telling to run Migrate", path, op, err)
			}
			t.Logf("%s: %v", op, err)
		}
		_, err = s.Append(ctx, typ, id, eventsource.NoStream, events(1, 1))
		check("Append", err)
		_, err = s.StreamVersion(ctx, typ, id)
		check("StreamVersion", err)
		for _, err := range s.ReadEvents(ctx, typ, id, 0) {
			check("ReadEvents", err)
		}
		_, err = s.SaveSnapshot(ctx, snapshot(typ, id, 1))
		check("SaveSnapshot", err)
		_, err = s.GetSnapshot(ctx, typ, id, 1)
		check("GetSnapshot", err)
		_, err = s.DeleteSnapshotsByType(ctx, typ, 0)
		check("DeleteSnapshotsByType", err)
		for _, err := range s.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
			check("ListAggregates", err)
		}
		// Migrate then makes the same store usable.
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, typ, id, eventsource.NoStream, events(1, 1))
	}
}

func TestOpenBadPath(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	notDB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("this is not a database ", 500)), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, want string
	}{
		{"missing directory", filepath.Join(dir, "no", "such", "dir", "x.db"), "does not exist"},
		{"parent is a file", filepath.Join(notDir, "x.db"), "not a directory"},
		{"path is a directory", dir, "is a directory"},
		{"not a database", notDB, "not a database"},
		{"empty", "", "empty database path"},
		{"query in path", filepath.Join(dir, "x.db?mode=ro"), "contains '?'"},
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "readonly")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ name, path, want string }{"unwritable directory", filepath.Join(ro, "x.db"), "unable to open"})
	} else {
		cases = append(cases, struct{ name, path, want string }{"unwritable location", "/proc/evsnap-cannot-create.db", "unable to open"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := sqlitestore.Open(context.Background(), c.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", c.path)
			}
			if !strings.Contains(err.Error(), c.want) || (c.path != "" && !strings.Contains(err.Error(), c.path)) {
				t.Fatalf("Open(%q) error %q: want it to name the path and say %q", c.path, err, c.want)
			}
			t.Log(err)
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	cases := []struct {
		name string
		opts []sqlitestore.Option
		want string
	}{
		{"uppercase", []sqlitestore.Option{sqlitestore.WithEventsTable("Events")}, `"Events"`},
		{"injection", []sqlitestore.Option{sqlitestore.WithSnapshotsTable(`x"; DROP TABLE events; --`)}, `DROP TABLE`},
		{"empty", []sqlitestore.Option{sqlitestore.WithStreamsTable("")}, `streams table name ""`},
		{"too long", []sqlitestore.Option{sqlitestore.WithEventsTable(strings.Repeat("a", 64))}, strings.Repeat("a", 64)},
		{"reserved", []sqlitestore.Option{sqlitestore.WithMigrationsTable("sqlite_master")}, `"sqlite_master"`},
		{"same name twice", []sqlitestore.Option{sqlitestore.WithSnapshotsTable("events")}, `both named "events"`},
		{"nil logger", []sqlitestore.Option{sqlitestore.WithLogger(nil)}, "WithLogger(nil)"},
		{"nil tracer", []sqlitestore.Option{sqlitestore.WithTracerProvider(nil)}, "WithTracerProvider(nil)"},
		{"zero busy timeout", []sqlitestore.Option{sqlitestore.WithBusyTimeout(0)}, "busy timeout"},
		{"bad synchronous", []sqlitestore.Option{sqlitestore.WithSynchronous("OFF")}, `"OFF"`},
		{"no read conns", []sqlitestore.Option{sqlitestore.WithReadConns(0)}, "read connections 0"},
		{"nil option", []sqlitestore.Option{nil}, "nil Option"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := tempDB(t)
			s, err := sqlitestore.Open(context.Background(), path, c.opts...)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q: want ErrInvalidOption naming %s", err, c.want)
			}
			if _, statErr := os.Stat(path); !errors.Is(statErr, os.ErrNotExist) {
				t.Fatalf("an invalid option still created %s", path)
			}
		})
	}
	t.Run("New", func(t *testing.T) {
		if _, err := sqlitestore.New(nil); !errors.Is(err, eventsource.ErrInvalidOption) {
			t.Fatalf("New(nil) error %v", err)
		}
		db := rawDB(t, tempDB(t))
		_, err := sqlitestore.New(db, sqlitestore.WithBusyTimeout(time.Second))
		if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), "WithBusyTimeout") {
			t.Fatalf("New with an Open-only option: error %v", err)
		}
	})
}

func TestInvalidJSONRefused(t *testing.T) {
	path := tempDB(t)
	s := openStore(t, path)
	ctx := context.Background()
	typ, id := "Json", uuid.New()
	bad := events(1, 3)
	bad[1].Payload = []byte(`{"n": 2,`)
	_, err := s.Append(ctx, typ, id, eventsource.NoStream, bad)
	if !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), "event 1") || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("append with a broken payload: error %v, want ErrInvalidArgument naming event 1", err)
	}
	if v := versionOf(t, s, typ, id); v != 0 {
		t.Fatalf("stream at version %d after a refused append", v)
	}
	mustAppend(t, s, typ, id, eventsource.NoStream, events(1, 2))
	if _, err := s.Append(ctx, typ, id, 2, bad); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("second refused append: %v", err)
	}
	if got := readVersions(t, s, typ, id); len(got) != 2 {
		t.Fatalf("%d events stored, want 2", len(got))
	}
	sn := snapshot(typ, id, 2)
	sn.State = []byte(`not json`)
	if _, err := s.SaveSnapshot(ctx, sn); !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("snapshot with a broken state: error %v", err)
	}
	if got, err := s.GetSnapshot(ctx, typ, id, 1); err != nil || got != nil {
		t.Fatalf("broken snapshot stored: %v, %v", got, err)
	}

	// The schema refuses it too, for writers that go around the store.
	db := rawDB(t, path)
	_, err = db.Exec(`INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, payload, metadata, occurred_at)
		VALUES (?, ?, ?, 3, 'Thing', '{"broken":', '{}', 0)`, uuid.NewString(), typ, id.String())
	if err == nil || !strings.Contains(err.Error(), "CHECK constraint failed") {
		t.Fatalf("raw insert of invalid JSON: error %v, want a CHECK constraint failure", err)
	}
	_, err = db.Exec(`INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, event_id, state, created_at)
		VALUES (?, ?, 1, 1, ?, 'nope', 0)`, uuid.NewString(), typ, uuid.NewString())
	if err == nil || !strings.Contains(err.Error(), "CHECK constraint failed") {
		t.Fatalf("raw snapshot insert of invalid JSON: error %v, want a CHECK constraint failure", err)
	}
}

func TestDuplicateEventID(t *testing.T) {
	s := openStore(t, tempDB(t))
	ctx := context.Background()
	typ, id := "Dup", uuid.New()
	first := events(1, 1)
	mustAppend(t, s, typ, id, eventsource.NoStream, first)

	check := func(name string, err error, wantID uuid.UUID, inBatch bool) {
		t.Helper()
		var de *eventsource.DuplicateEventIDError
		if !errors.Is(err, eventsource.ErrDuplicateEventID) || !errors.As(err, &de) || de.EventID != wantID || de.InBatch != inBatch {
			t.Fatalf("%s: error %v, want a DuplicateEventIDError for %s (in batch %v) matching ErrInvalidArgument", name, err, wantID, inBatch)
		}
	}
	again := events(2, 3)
	again[2].ID = first[0].ID
	_, err := s.Append(ctx, typ, id, 1, again)
	check("same stream", err, first[0].ID, false)

	otherID := uuid.New()
	other := events(1, 2)
	other[1].ID = first[0].ID
	_, err = s.Append(ctx, typ, otherID, eventsource.NoStream, other)
	check("other stream", err, first[0].ID, false)

	twice := events(2, 2)
	twice[1].ID = twice[0].ID
	_, err = s.Append(ctx, typ, id, 1, twice)
	check("within the append", err, twice[0].ID, true)

	if v := versionOf(t, s, typ, id); v != 1 {
		t.Fatalf("stream at %d after refused appends, want 1", v)
	}
	if v := versionOf(t, s, typ, otherID); v != 0 {
		t.Fatalf("other stream at %d after a refused append, want 0", v)
	}
	for in, err := range s.ListAggregates(ctx, typ, eventsource.ListOptions{}) {
		if err != nil || in.AggregateID != id {
			t.Fatalf("listing after refused appends: %+v, %v (only %s should exist)", in, err, id)
		}
	}
}

// TestTwoStoresOneFile keeps two stores with different table names in one
// file: their indexes and migration records do not clash.
func TestTwoStoresOneFile(t *testing.T) {
	path := tempDB(t)
	a := openStore(t, path)
	b := openStore(t, path, sqlitestore.WithEventsTable("b_events"), sqlitestore.WithSnapshotsTable("b_snapshots"),
		sqlitestore.WithStreamsTable("b_streams"))
	c := openStore(t, path, sqlitestore.WithEventsTable("order"), sqlitestore.WithSnapshotsTable("select"),
		sqlitestore.WithStreamsTable("group"), sqlitestore.WithMigrationsTable("table"))
	typ, id := "Shared", uuid.New()
	mustAppend(t, a, typ, id, eventsource.NoStream, events(1, 3))
	mustAppend(t, b, typ, id, eventsource.NoStream, events(1, 5))
	mustAppend(t, c, typ, id, eventsource.NoStream, events(1, 7))
	for s, want := range map[*sqlitestore.Store]int64{a: 3, b: 5, c: 7} {
		if v := versionOf(t, s, typ, id); v != want {
			t.Fatalf("version %d, want %d", v, want)
		}
	}
	if _, err := b.SaveSnapshot(context.Background(), snapshot(typ, id, 5)); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.GetSnapshot(context.Background(), typ, id, 1); got != nil {
		t.Fatal("store a sees store b's snapshot")
	}
	db := rawDB(t, path)
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name LIKE '%type_schema_idx'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d snapshot indexes (%v), want 3, one per store", n, err)
	}
	if err := db.QueryRow(`SELECT count(DISTINCT scope) FROM evsnap_migrations`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d migration scopes (%v), want 2", n, err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	for _, path := range []string{tempDB(t), sqlitestore.MemoryPath} {
		s, err := sqlitestore.Open(context.Background(), path, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := s.Close(); err != nil {
				t.Fatalf("%s: Close #%d: %v", path, i+1, err)
			}
		}
		_, err = s.Append(context.Background(), "T", uuid.New(), eventsource.NoStream, events(1, 1))
		if !errors.Is(err, sqlitestore.ErrClosed) {
			t.Fatalf("%s: Append after Close: %v, want ErrClosed", path, err)
		}
		for _, err := range s.ReadEvents(context.Background(), "T", uuid.New(), 0) {
			if !errors.Is(err, sqlitestore.ErrClosed) {
				t.Fatalf("%s: ReadEvents after Close: %v, want ErrClosed", path, err)
			}
		}
		if err := s.Migrate(context.Background()); !errors.Is(err, sqlitestore.ErrClosed) {
			t.Fatalf("%s: Migrate after Close: %v, want ErrClosed", path, err)
		}
	}
}

// recommendedDSN is the DSN the package docs recommend for a caller's own
// *sql.DB: WAL, a busy timeout and BEGIN IMMEDIATE transactions.
const recommendedDSN = "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate"

// newOnDB opens dsn as a caller's *sql.DB and returns a migrated store
// over it.
func newOnDB(t *testing.T, dsn string) (*sql.DB, *sqlitestore.Store) {
	t.Helper()
	db, err := sql.Open(sqlitestore.DriverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := sqlitestore.New(db, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, s
}

// TestNew runs the suites on stores over a caller's *sql.DB: a file with the
// recommended DSN and a pool, and ":memory:" on one connection.
func TestNew(t *testing.T) {
	newFile := func(t *testing.T) *sqlitestore.Store {
		db, s := newOnDB(t, tempDB(t)+recommendedDSN)
		t.Cleanup(func() {
			s.Close()
			if err := db.Ping(); err != nil {
				t.Errorf("Store.Close closed the caller's *sql.DB: %v", err)
			}
		})
		return s
	}
	newMemory := func(t *testing.T) *sqlitestore.Store {
		db, err := sql.Open(sqlitestore.DriverName, sqlitestore.MemoryPath)
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		s, err := sqlitestore.New(db, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for name, newStore := range map[string]func(*testing.T) *sqlitestore.Store{"File": newFile, "Memory": newMemory} {
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) eventsource.Store { return newStore(t) })
		})
	}
}

// holdWriteLock takes the write lock of the database at path on another
// connection, with an uncommitted delete of every snapshot, until the test
// ends, and returns a context far shorter than the busy timeout: a read
// that waited for the lock fails with it.
func holdWriteLock(t *testing.T, path string) context.Context {
	t.Helper()
	conn, err := rawDB(t, path).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		conn.Close()
	})
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), `DELETE FROM "snapshots"`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestGetSnapshotsTakesNoWriteLock runs GetSnapshots on a store over a
// caller's *sql.DB whose DSN makes transactions BEGIN IMMEDIATE, while
// another connection holds the write lock: the batch read does not wait
// for it, and it sees the database as it was before the uncommitted write.
func TestGetSnapshotsTakesNoWriteLock(t *testing.T) {
	path := tempDB(t)
	_, s := newOnDB(t, path+recommendedDSN)
	t.Cleanup(func() { s.Close() })
	typ, id := "BatchRead", uuid.New()
	if _, err := s.SaveSnapshot(context.Background(), snapshot(typ, id, 2)); err != nil {
		t.Fatal(err)
	}

	ctx := holdWriteLock(t, path)
	snaps, err := s.GetSnapshots(ctx, typ, 1, []uuid.UUID{id, uuid.New()})
	if err != nil {
		t.Fatalf("GetSnapshots while another connection holds the write lock: %v", err)
	}
	if snaps[0] == nil || snaps[0].Version != 2 || snaps[1] != nil {
		t.Fatalf("GetSnapshots = %v, %v; want the committed v2 snapshot and none", snaps[0], snaps[1])
	}
}

// TestLoadSnapshotAndEventsTakesNoWriteLock: the read transaction of
// LoadSnapshotAndEvents is a deferred one even on a caller's *sql.DB whose
// DSN makes transactions BEGIN IMMEDIATE, so a load does not wait for
// another connection's write lock, and sees the database as it was
// before the uncommitted write.
func TestLoadSnapshotAndEventsTakesNoWriteLock(t *testing.T) {
	path := tempDB(t)
	_, s := newOnDB(t, path+recommendedDSN)
	t.Cleanup(func() { s.Close() })
	typ, id := "LoadRead", uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, events(1, 3))
	snap := snapshot(typ, id, 2)
	snap.EventID = readVersions(t, s, typ, id)[1].ID
	if _, err := s.SaveSnapshot(context.Background(), snap); err != nil {
		t.Fatal(err)
	}

	ctx := holdWriteLock(t, path)
	got, evs, err := s.LoadSnapshotAndEvents(ctx, typ, id, 1)
	if err != nil {
		t.Fatalf("LoadSnapshotAndEvents while another connection holds the write lock: %v", err)
	}
	var versions []int64
	for rec, err := range evs {
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, rec.Version)
	}
	if got == nil || got.Version != 2 || !slices.Equal(versions, []int64{2, 3}) {
		t.Fatalf("LoadSnapshotAndEvents = %+v, versions %v; want the committed v2 snapshot and v2, v3", got, versions)
	}
}

func TestSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	s := openStore(t, sqlitestore.MemoryPath, sqlitestore.WithTracerProvider(tp))
	typ, id := "Traced", uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, events(1, 2))
	_, conflict := s.Append(context.Background(), typ, id, eventsource.NoStream, events(3, 1))
	readVersions(t, s, typ, id)
	if _, err := s.GetSnapshot(context.Background(), typ, id, 1); err != nil {
		t.Fatal(err)
	}
	var names []string
	var sawConflict bool
	for _, sp := range rec.Ended() {
		names = append(names, sp.Name())
		if sp.Name() == "sqlitestore.Append" && sp.Status().Code == codes.Error && strings.Contains(sp.Status().Description, "conflict") {
			sawConflict = true
		}
	}
	for _, want := range []string{"sqlitestore.Migrate", "sqlitestore.Append", "sqlitestore.ReadEvents", "sqlitestore.GetSnapshot"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("no %s span among %v", want, names)
		}
	}
	if !sawConflict {
		t.Errorf("the conflicting append (%v) left no error span", conflict)
	}
}

// TestStreamsBehindEvents writes an event around the store (the streams
// table does not see it): the append that collides with it on the version
// gets the typed conflict with the events table's head, never a raw
// constraint error.
func TestStreamsBehindEvents(t *testing.T) {
	path := tempDB(t)
	s := openStore(t, path)
	typ, id := "Behind", uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, events(1, 2))
	db := rawDB(t, path)
	if _, err := db.Exec(`INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, payload, occurred_at)
		VALUES (?, ?, ?, 3, 'Thing', '{}', 0)`, uuid.NewString(), typ, id.String()); err != nil {
		t.Fatal(err)
	}
	_, err := s.Append(context.Background(), typ, id, 2, events(3, 1))
	var ce *eventsource.ConflictError
	if !errors.As(err, &ce) || ce.Expected != 2 || ce.Actual != 3 {
		t.Fatalf("append onto a version written around the store: error %v, want a ConflictError expected 2 actual 3", err)
	}
	if v := versionOf(t, s, typ, id); v != 2 {
		t.Fatalf("streams head moved to %d by a refused append", v)
	}
}

// TestLockedByAnotherProcess holds the write lock from another connection
// (as another process would) for longer than the busy timeout: the append
// fails with an error that names the database and the timeout, and commits
// nothing; once the lock is released, appends succeed again.
func TestLockedByAnotherProcess(t *testing.T) {
	path := tempDB(t)
	s := openStore(t, path, sqlitestore.WithBusyTimeout(50*time.Millisecond))
	ctx := context.Background()
	typ, id := "Locked", uuid.New()
	mustAppend(t, s, typ, id, eventsource.NoStream, events(1, 1))

	other := rawDB(t, path)
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Append(ctx, typ, id, 1, events(2, 1))
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "busy timeout (50ms)") {
		t.Fatalf("append while another connection holds the write lock: error %v, want one naming %s and the busy timeout", err, path)
	}
	if waited := time.Since(start); waited < 40*time.Millisecond {
		t.Fatalf("append gave up after %v, before the busy timeout", waited)
	}
	t.Log(err)
	// Reads are not blocked by the other writer (WAL).
	if v := versionOf(t, s, typ, id); v != 1 {
		t.Fatalf("version %d, want 1", v)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, typ, id, 1, events(2, 1))
}

// snapshotsAtMigrationOne rebuilds the default snapshots table in db (an
// empty one) as migration 1 made it, without event_id.
func snapshotsAtMigrationOne(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec(`DROP TABLE snapshots;
CREATE TABLE snapshots (
    aggregate_id   TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    state          TEXT    NOT NULL CHECK (json_valid(state)),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (aggregate_id, aggregate_type)
) STRICT;
CREATE INDEX snapshots_type_schema_idx ON snapshots (aggregate_type, schema_version);`); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateUpgradesTheRunnerBeforeGoose: a file migrated by the releases
// before goose, whose runner recorded migrations as (scope, version, name,
// applied_at) rows, upgrades cleanly. Two stores share the file and its
// migrations table: a, at migration 1 (its snapshots have no event_id),
// and b, at migration 3; both hold data. Two handles migrate at once, as
// two processes would. The table is rebuilt in goose's layout with every
// record, a gets migrations 2 on, b those after 3 (the runner's last),
// and no data is lost.
func TestMigrateUpgradesTheRunnerBeforeGoose(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	bTables := []sqlitestore.Option{sqlitestore.WithEventsTable("b_events"), sqlitestore.WithSnapshotsTable("b_snapshots"),
		sqlitestore.WithStreamsTable("b_streams")}
	a, b := openStore(t, path), openStore(t, path, bTables...)
	const typ = "Upgraded"
	id := uuid.New()
	aEvents, bEvents := events(1, 3), events(1, 2)
	mustAppend(t, a, typ, id, eventsource.NoStream, aEvents)
	mustAppend(t, b, typ, id, eventsource.NoStream, bEvents)
	bSnap := snapshot(typ, id, 2)
	bSnap.EventID = bEvents[1].ID
	if _, err := b.SaveSnapshot(ctx, bSnap); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sqlitestore.Store{a, b} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Put the file back as the runner before goose left it (it knew
	// migrations 1 to 3).
	db := rawDB(t, path)
	snapshotsAtMigrationOne(t, db)
	for _, streams := range []string{"streams", "b_streams"} {
		if _, err := db.Exec(`DROP TRIGGER "` + streams + `_change_on_insert"; DROP TRIGGER "` + streams + `_change_on_update";
DROP INDEX "` + streams + `_change_idx"; DROP TABLE "` + streams + `_sweep_marks";
ALTER TABLE "` + streams + `" DROP COLUMN change_seq;`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`DROP TABLE evsnap_migrations;
CREATE TABLE evsnap_migrations (
    scope      TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (scope, version)
) STRICT;
INSERT INTO evsnap_migrations VALUES
    ('events=events,snapshots=snapshots,streams=streams', 1, 'initial', 1764000000000000),
    ('events=b_events,snapshots=b_snapshots,streams=b_streams', 1, 'initial', 1764000000000000),
    ('events=b_events,snapshots=b_snapshots,streams=b_streams', 2, 'snapshot_event_id', 1765000000000000),
    ('events=b_events,snapshots=b_snapshots,streams=b_streams', 3, 'snapshot_per_schema_version', 1766000000000000);`); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	stores := []*sqlitestore.Store{nil, nil}
	errs := make([]error, 2)
	for i, opts := range [][]sqlitestore.Option{nil, bTables} {
		s, err := sqlitestore.Open(ctx, path, append([]sqlitestore.Option{quiet}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
		wg.Go(func() { errs[i] = s.Migrate(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate of store %c over the runner's records: %v", 'a'+i, err)
		}
	}
	a, b = stores[0], stores[1]

	records := func() string {
		t.Helper()
		var got string
		if err := db.QueryRow(`SELECT group_concat(r, ' ') FROM (
    SELECT scope || ':' || version_id AS r FROM evsnap_migrations WHERE is_applied ORDER BY scope, version_id)`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	const want = "events=b_events,snapshots=b_snapshots,streams=b_streams:0 events=b_events,snapshots=b_snapshots,streams=b_streams:1 " +
		"events=b_events,snapshots=b_snapshots,streams=b_streams:2 events=b_events,snapshots=b_snapshots,streams=b_streams:3 " +
		"events=b_events,snapshots=b_snapshots,streams=b_streams:4 " +
		"events=events,snapshots=snapshots,streams=streams:0 events=events,snapshots=snapshots,streams=streams:1 events=events,snapshots=snapshots,streams=streams:2 " +
		"events=events,snapshots=snapshots,streams=streams:3 events=events,snapshots=snapshots,streams=streams:4"
	if got := records(); got != want {
		t.Fatalf("migrations recorded after the upgrade:\n got %s\nwant %s", got, want)
	}
	for _, s := range []*sqlitestore.Store{a, b} {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate after the upgrade: %v", err)
		}
	}
	if got := records(); got != want {
		t.Fatalf("a second Migrate changed the records:\n got %s\nwant %s", got, want)
	}

	// The data is all there, and migration 2 ran on a's snapshots table.
	if v := versionOf(t, a, typ, id); v != 3 {
		t.Fatalf("a's stream after the upgrade at version %d, want 3", v)
	}
	if v := versionOf(t, b, typ, id); v != 2 {
		t.Fatalf("b's stream after the upgrade at version %d, want 2", v)
	}
	if got, err := b.GetSnapshot(ctx, typ, id, 1); err != nil || got == nil || got.Version != 2 || got.EventID != bEvents[1].ID {
		t.Fatalf("b's snapshot after the upgrade: %+v, %v", got, err)
	}
	aSnap := snapshot(typ, id, 3)
	aSnap.EventID = aEvents[2].ID
	if stored, err := a.SaveSnapshot(ctx, aSnap); err != nil || !stored {
		t.Fatalf("a's SaveSnapshot after the upgrade (its snapshots table has event_id again) = %v, %v", stored, err)
	}
}
