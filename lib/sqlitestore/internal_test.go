package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

func openInternal(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func newEvents(n int) []eventsource.NewEvent {
	out := make([]eventsource.NewEvent, n)
	for i := range out {
		out[i] = eventsource.NewEvent{ID: uuid.New(), Type: "T", Payload: []byte(fmt.Sprintf(`{"i":%d}`, i)), OccurredAt: time.Now().UTC()}
	}
	return out
}

// TestQueryPlans checks that the hot queries walk an index in the order
// they return rows: no temporary b-tree (sort), no table scan.
func TestQueryPlans(t *testing.T) {
	s := openInternal(t, filepath.Join(t.TempDir(), "plan.db"))
	// Give the planner statistics of a realistic store: many aggregates,
	// half of them with a snapshot. (A snapshots table this small is what
	// would tempt the planner to scan it for getSnapshots.)
	for i := range 200 {
		id := uuid.New()
		if _, err := s.Append(context.Background(), "P", id, eventsource.NoStream, newEvents(1+i%5)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			snap := eventsource.Snapshot{AggregateID: id, AggregateType: "P", Version: 1, SchemaVersion: 1, EventID: uuid.New(), State: []byte(`{}`)}
			if _, err := s.SaveSnapshot(context.Background(), snap); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.writer.Exec("ANALYZE"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, query string
		args        []any
		want        []string
		// walks is the plan line of a scan the query is meant to do:
		// of the list of ids it is given, never of a table.
		walks string
	}{
		{"readEvents", s.q.readEvents, []any{"P", uuid.NewString(), 0, 512}, []string{"USING INDEX events_stream_version_key"}, ""},
		{"streamVersion", s.q.streamVersion, []any{"P", uuid.NewString()}, []string{"USING PRIMARY KEY"}, ""},
		{"getSnapshot", s.q.getSnapshot, []any{uuid.NewString(), "P"}, []string{"USING INDEX sqlite_autoindex_snapshots_1"}, ""},
		{"getSnapshots", s.q.getSnapshots, []any{"P", `["` + uuid.NewString() + `","` + uuid.NewString() + `"]`},
			[]string{"SCAN j VIRTUAL TABLE", "SEARCH s USING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=?)"}, "SCAN j VIRTUAL TABLE"},
		{"listByID", s.q.listByID, []any{"P", "", 0, -1}, []string{"SEARCH s USING PRIMARY KEY", "SEARCH p USING INDEX sqlite_autoindex_snapshots_1"}, ""},
		{"deleteByTypeLt", s.q.deleteByTypeLt, []any{"P", 2}, []string{"USING INDEX snapshots_type_schema_idx"}, ""},
	} {
		rows, err := s.reader.Query("EXPLAIN QUERY PLAN "+c.query, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var plan, checked []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
			if c.walks == "" || !strings.HasPrefix(detail, c.walks) {
				checked = append(checked, detail)
			}
		}
		rows.Close()
		text := strings.Join(plan, "; ")
		if bad := strings.Join(checked, "; "); strings.Contains(bad, "TEMP B-TREE") || strings.Contains(bad, "SCAN ") {
			t.Errorf("%s sorts or scans: %s", c.name, text)
		}
		for _, w := range c.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s plan %q lacks %q", c.name, text, w)
			}
		}
		t.Logf("%s: %s", c.name, text)
	}
}

// TestReadWindows reads across window boundaries, stops early, and checks
// that no read connection stays in use.
func TestReadWindows(t *testing.T) {
	for _, path := range []string{filepath.Join(t.TempDir(), "w.db"), MemoryPath} {
		s := openInternal(t, path)
		s.window = 3
		ctx := context.Background()
		id := uuid.New()
		if _, err := s.Append(ctx, "W", id, eventsource.NoStream, newEvents(10)); err != nil {
			t.Fatal(err)
		}
		for _, after := range []int64{0, 2, 3, 4, 9, 10} {
			want := after + 1
			for rec, err := range s.ReadEvents(ctx, "W", id, after) {
				if err != nil {
					t.Fatal(err)
				}
				if rec.Version != want {
					t.Fatalf("after %d: got v%d, want v%d", after, rec.Version, want)
				}
				want++
			}
			if want != 11 {
				t.Fatalf("after %d: read up to v%d, want v10", after, want-1)
			}
		}
		for _, stop := range []int64{1, 3, 4, 6} {
			for rec, err := range s.ReadEvents(ctx, "W", id, 0) {
				if err != nil {
					t.Fatal(err)
				}
				if rec.Version == stop {
					break
				}
			}
		}
		if inUse := s.reader.Stats().InUse; inUse != 0 {
			t.Fatalf("%s: %d read connections still in use after reads ended", path, inUse)
		}
		// Events appended while a read is between windows are read too:
		// each window is a fresh query.
		n := int64(0)
		for rec, err := range s.ReadEvents(ctx, "W", id, 0) {
			if err != nil {
				t.Fatal(err)
			}
			n = rec.Version
			if rec.Version == 2 {
				if _, err := s.Append(ctx, "W", id, 10, newEvents(2)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n != 12 {
			t.Fatalf("%s: read ended at v%d, want v12", path, n)
		}
	}
}

// BenchmarkReadWindow measures the events fetched per ReadEvents query on a
// 10,000-event stream; window=all is one query for the whole stream.
func BenchmarkReadWindow(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "w.db"), WithLogger(slog.New(slog.DiscardHandler)), WithSynchronous(SyncNormal))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	id := uuid.New()
	const total = 10000
	for v := 0; v < total; v += 100 {
		if _, err := s.Append(context.Background(), "W", id, eventsource.ExpectedVersion(v), newEvents(100)); err != nil {
			b.Fatal(err)
		}
	}
	for _, w := range []int{64, 256, 512, 2048, total + 1} {
		name := fmt.Sprint(w)
		if w > total {
			name = "all"
		}
		b.Run("window="+name, func(b *testing.B) {
			s.window = w
			n := 0
			for b.Loop() {
				for _, err := range s.ReadEvents(context.Background(), "W", id, 0) {
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
	s.window = defaultWindow
}

// TestMigrationAppliedMeanwhileChangesNothing: a migration that finds,
// inside its transaction, that another migrator recorded it since goose
// listed it as pending (two processes migrating one file) runs none of its
// SQL and says so, which makes Migrate ask goose again rather than apply it
// twice.
func TestMigrationAppliedMeanwhileChangesNothing(t *testing.T) {
	ctx := context.Background()
	s := openInternal(t, filepath.Join(t.TempDir(), "meanwhile.db"))
	gms, err := s.gooseMigrations(s.versionQueries())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range gms {
		tx, err := s.writer.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = m.UpFnContext(ctx, tx)
		if rbErr := tx.Rollback(); rbErr != nil {
			t.Fatal(rbErr)
		}
		if !errors.Is(err, errAppliedMeanwhile) {
			t.Fatalf("migration %d run again on a migrated file: %v, want errAppliedMeanwhile", m.Version, err)
		}
	}
}
