package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
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

// pageScans are the scans of a sweep page's own rows (its materialized
// page of at most Examine streams, and the one-row tail).
const pageScans = "SCAN p|SCAN page|SCAN one|SCAN l|SCAN CONSTANT ROW"

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
			if i%4 == 0 { // and a quarter a row of the next schema version too
				snap.SchemaVersion = 2
				if _, err := s.SaveSnapshot(context.Background(), snap); err != nil {
					t.Fatal(err)
				}
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
		// of the list of ids it is given (or of its one row of
		// parameters), never of a table; "|" separates several.
		walks string
	}{
		{"readEvents", s.q.readEvents, []any{"P", uuid.NewString(), 0, 512}, []string{"USING INDEX events_stream_version_key"}, ""},
		{"streamVersion", s.q.streamVersion, []any{"P", uuid.NewString()}, []string{"USING PRIMARY KEY"}, ""},
		{"getSnapshot", s.q.getSnapshot, []any{uuid.NewString(), "P", 1},
			[]string{"USING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=? AND schema_version=?)"}, ""},
		{"getSnapshots", s.q.getSnapshots, []any{"P", `["` + uuid.NewString() + `","` + uuid.NewString() + `"]`, 1},
			[]string{"SCAN j VIRTUAL TABLE", "SEARCH s USING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=? AND schema_version=?)"}, "SCAN j VIRTUAL TABLE"},
		// A save's two statements: each finds the aggregate's newest
		// schema version by a walk of its primary-key entries, and the
		// trim its rows out of the window likewise.
		{"trimSnapshots", s.q.trimSnapshots, []any{uuid.NewString(), "P", nil, 2},
			[]string{"SEARCH snapshots USING COVERING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=? AND schema_version<",
				"SEARCH snapshots USING COVERING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=?)"}, ""},
		{"saveSnapshot", s.q.saveSnapshot, []any{uuid.NewString(), "P", 3, 2, `{}`, 0, uuid.NewString()},
			[]string{"SEARCH snapshots USING COVERING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=?)"}, "SCAN CONSTANT ROW"},
		{"listByID", s.q.listByID, []any{"P", "", 0, -1, 0}, []string{"SEARCH s USING PRIMARY KEY",
			"SEARCH p USING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=? AND schema_version=?)",
			"SEARCH q USING COVERING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=?)"}, ""},
		{"deleteByTypeLt", s.q.deleteByTypeLt, []any{"P", 2}, []string{"USING INDEX snapshots_type_schema_idx"}, ""},
		// The sweep's (decision 37): an append's next change position is
		// one step back on the change index; a page walks the change
		// index (or the primary key) from its start and looks each
		// snapshot up. The page's own CTE is scanned, never a table.
		{"bumpStream", s.q.bumpStream, []any{"P", uuid.NewString(), 1},
			[]string{"SEARCH streams USING COVERING INDEX streams_change_idx (aggregate_type=? AND change_seq>?)"}, "SCAN CONSTANT ROW"},
		{"moveStream", s.q.moveStream, []any{"P", uuid.NewString()},
			[]string{"SEARCH streams USING PRIMARY KEY", "SEARCH streams USING COVERING INDEX streams_change_idx (aggregate_type=? AND change_seq>?)"}, ""},
		{"scanChanges", s.q.scanChanges, []any{"P", 1, 0, 0, uuid.Nil.String(), 100},
			[]string{"SEARCH streams USING INDEX streams_change_idx (aggregate_type=? AND (change_seq,aggregate_id)>(?,?))",
				"SEARCH n USING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=? AND schema_version=?)"}, pageScans},
		{"scanByID", s.q.scanByID, []any{"P", 1, 0, 0, uuid.Nil.String(), 100},
			[]string{"SEARCH streams USING PRIMARY KEY (aggregate_type=? AND aggregate_id>?)",
				"SEARCH n USING INDEX sqlite_autoindex_snapshots_1 (aggregate_id=? AND aggregate_type=? AND schema_version=?)"}, pageScans},
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
			if c.walks == "" || !slices.ContainsFunc(strings.Split(c.walks, "|"), func(w string) bool { return strings.HasPrefix(detail, w) }) {
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

// previousAppend appends a new stream as the releases before migration 4
// did (the current append sets the stream's change position, a column
// those releases' schema lacks).
func previousAppend(t *testing.T, s *Store, typ string, id uuid.UUID, evs []eventsource.NewEvent) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.writer.ExecContext(ctx, `INSERT INTO "streams" (aggregate_type, aggregate_id, version) VALUES (?1, ?2, ?3)`, typ, id.String(), len(evs)); err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		if _, err := s.writer.ExecContext(ctx, `INSERT INTO "events" (event_id, aggregate_type, aggregate_id, version, event_type, payload, occurred_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)`, e.ID.String(), typ, id.String(), i+1, e.Type, string(e.Payload), e.OccurredAt.UnixMicro()); err != nil {
			t.Fatal(err)
		}
	}
}

// previousSaveSnapshot is the upsert the release before migration 3 runs:
// one row per aggregate, keyed by (aggregate_id, aggregate_type).
const previousSaveSnapshot = `INSERT INTO "snapshots" (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE SET
  version = excluded.version, schema_version = excluded.schema_version, event_id = excluded.event_id,
  state = excluded.state, created_at = excluded.created_at
WHERE excluded.version >= "snapshots".version AND excluded.schema_version >= "snapshots".schema_version`

// TestMigrationThreeKeepsEverySnapshot: a database at migration 2 (the
// previous release's schema) holding snapshots of several schema versions,
// written by that release's upsert, moves to migration 3: every snapshot
// is read by a load of its own schema version, as the row of that schema
// version, and by no other; the store then keeps a row per schema version.
// The previous release's upsert no longer finds its conflict target: a
// binary of it still running fails its snapshot writes (which its
// repositories log and count, never failing a save).
func TestMigrationThreeKeepsEverySnapshot(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "m3.db"), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.migrate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	type stored struct {
		id      uuid.UUID
		version int64
		schema  int
		eventID uuid.UUID
	}
	var snaps []stored
	for i, schema := range []int{1, 1, 2, 3} {
		id := uuid.New()
		evs := newEvents(6)
		previousAppend(t, s, "M3", id, evs)
		v := int64(3 + i%2)
		snaps = append(snaps, stored{id, v, schema, evs[v-1].ID})
		if _, err := s.writer.ExecContext(ctx, previousSaveSnapshot, id.String(), "M3", v, schema,
			fmt.Sprintf(`{"v": %d}`, v), time.Now().UnixMicro(), evs[v-1].ID.String()); err != nil {
			t.Fatalf("the previous release's upsert at migration 2: %v", err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from 2: %v", err)
	}
	for _, sn := range snaps {
		snap, events, err := s.LoadSnapshotAndEvents(ctx, "M3", sn.id, sn.schema)
		if err != nil {
			t.Fatal(err)
		}
		if snap == nil || snap.Version != sn.version || snap.SchemaVersion != sn.schema || snap.EventID != sn.eventID || string(snap.State) != fmt.Sprintf(`{"v": %d}`, sn.version) {
			t.Fatalf("load of schema %d after the upgrade: snapshot %+v, want v%d tied to %s", sn.schema, snap, sn.version, sn.eventID)
		}
		var first int64
		for rec, err := range events {
			if err != nil {
				t.Fatal(err)
			}
			first = rec.Version
			break
		}
		if first != sn.version {
			t.Fatalf("load of schema %d after the upgrade reads events from v%d, want v%d", sn.schema, first, sn.version)
		}
		if other, err := s.GetSnapshot(ctx, "M3", sn.id, sn.schema+1); err != nil || other != nil {
			t.Fatalf("GetSnapshot of schema %d after the upgrade: %+v, %v; want none", sn.schema+1, other, err)
		}
	}
	// A row per schema version from now on.
	up := eventsource.Snapshot{AggregateID: snaps[0].id, AggregateType: "M3", Version: 6, SchemaVersion: 2, EventID: uuid.New(), State: []byte(`{}`)}
	if ok, err := s.SaveSnapshot(ctx, up); err != nil || !ok {
		t.Fatalf("SaveSnapshot of schema 2 after the upgrade = %v, %v", ok, err)
	}
	if got, err := s.GetSnapshot(ctx, "M3", snaps[0].id, 1); err != nil || got == nil || got.Version != snaps[0].version {
		t.Fatalf("the schema 1 row after a schema 2 save: %+v, %v", got, err)
	}
	_, err = s.writer.ExecContext(ctx, previousSaveSnapshot, snaps[1].id.String(), "M3", 6, 1, `{}`, 0, uuid.NewString())
	if err == nil || !strings.Contains(err.Error(), "ON CONFLICT") {
		t.Fatalf("the previous release's upsert after the upgrade: %v, want an error about its ON CONFLICT target", err)
	}
}

// TestOlderAppendsMoveStreams: appends of a release before migration 4
// (a binary rolled back over a migrated file), which do not set the
// stream's change position, still move the stream to the end of its
// type's change order: the migration's triggers set it.
func TestOlderAppendsMoveStreams(t *testing.T) {
	ctx := context.Background()
	s := openInternal(t, filepath.Join(t.TempDir(), "older.db"))
	id := uuid.New()
	scan := func(after eventsource.ChangePosition) eventsource.ScanPage {
		t.Helper()
		page, err := s.ScanAggregates(ctx, "Older", eventsource.ScanOptions{SchemaVersion: 1, Examine: 10, After: after})
		if err != nil {
			t.Fatal(err)
		}
		return page
	}
	previousAppend(t, s, "Older", id, newEvents(2))
	first := scan(eventsource.ChangePosition{})
	if len(first.Behind) != 1 || first.Behind[0].AggregateID != id || first.Behind[0].Changed.Seq == 0 {
		t.Fatalf("after an older release's first append, the change order holds %+v, want the stream at a position", first.Behind)
	}
	if _, err := s.writer.ExecContext(ctx, `UPDATE "streams" SET version = version + 1 WHERE aggregate_type = 'Older' AND aggregate_id = ?1`, id.String()); err != nil {
		t.Fatal(err)
	}
	if next := scan(first.Next); len(next.Behind) != 1 || next.Behind[0].HeadVersion != 3 {
		t.Fatalf("after an older release's next append, the scan after the stream's last position found %+v, want the stream at v3", next.Behind)
	}
	// This release's appends set the position themselves, once.
	if _, err := s.Append(ctx, "Older", id, 3, newEvents(1)); err != nil {
		t.Fatal(err)
	}
	page := scan(eventsource.ChangePosition{})
	if len(page.Behind) != 1 || page.Behind[0].Changed.Seq != 3 {
		t.Fatalf("after three appends the stream is at %+v, want position 3", page.Behind)
	}
}
