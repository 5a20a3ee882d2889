package storetest

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

// runSchemaRows checks the rows of schema versions (decision 28): one
// snapshot per aggregate and schema version, each monotonic on its own,
// within the kept window of storekit.DefaultKeptSchemaVersions (the
// stores Run is given keep the default), alone, in batches and with
// racing writers of two schema versions.
func runSchemaRows(t *testing.T, newStore factory) {
	t.Run("OneRowPerSchemaVersion", func(t *testing.T) { testOneRowPerSchema(t, newStore(t)) })
	t.Run("KeptWindow", func(t *testing.T) { testKeptWindow(t, newStore(t), storekit.DefaultKeptSchemaVersions) })
	t.Run("MatchesTheModel", func(t *testing.T) { testSchemaRowsModel(t, newStore(t), storekit.DefaultKeptSchemaVersions) })
	t.Run("RacingWritersOfTwoSchemaVersions", func(t *testing.T) { testRacingSchemaWriters(t, newStore(t)) })
	t.Run("RacingWritersAcrossTheWindow", func(t *testing.T) {
		testRacingAcrossWindow(t, newStore(t), storekit.DefaultKeptSchemaVersions)
	})
}

// RunKeptSchemaVersions checks that the stores newStore returns keep the
// snapshots of kept schema versions per aggregate, as a backend's option
// to keep another number than the default configures them: the window's
// rules alone and in batches, and racing writers across it. ([Run]
// checks stores that keep the default.)
func RunKeptSchemaVersions(t *testing.T, kept int, newStore func(t *testing.T) eventsource.Store) {
	t.Helper()
	if err := storekit.ValidateKeptSchemaVersions(kept); err != nil {
		t.Fatalf("storetest.RunKeptSchemaVersions: %v", err)
	}
	t.Run("KeptWindow", func(t *testing.T) { testKeptWindow(t, newStore(t), kept) })
	t.Run("MatchesTheModel", func(t *testing.T) { testSchemaRowsModel(t, newStore(t), kept) })
	t.Run("RacingWritersAcrossTheWindow", func(t *testing.T) { testRacingAcrossWindow(t, newStore(t), kept) })
}

// rowsOf reads every row of typ/id of schema versions 1 to upTo, as a
// map from schema version to version.
func rowsOf(t *testing.T, s eventsource.SnapshotStore, typ string, id uuid.UUID, upTo int) map[int]int64 {
	t.Helper()
	out := map[int]int64{}
	for schema := 1; schema <= upTo; schema++ {
		if got := mustGet(t, s, typ, id, schema); got != nil {
			out[schema] = got.Version
		}
	}
	return out
}

// testOneRowPerSchema: a row per schema version, each read by its own
// schema version only, each moving forwards on its own.
func testOneRowPerSchema(t *testing.T, s eventsource.SnapshotStore) {
	typ, id := uniqueType("SchemaRows"), uuid.New()
	mustSave(t, s, snap(typ, id, 10, 1), true)
	mustSave(t, s, snap(typ, id, 5, 2), true) // a lower version of another schema: its own row
	checkStored(t, s, typ, id, 10, 1)
	checkStored(t, s, typ, id, 5, 2)
	if got := mustGet(t, s, typ, id, 3); got != nil {
		t.Fatalf("GetSnapshot of schema 3 = %+v, want none", got)
	}
	mustSave(t, s, snap(typ, id, 9, 1), false) // behind its own row
	mustSave(t, s, snap(typ, id, 4, 2), false)
	mustSave(t, s, snap(typ, id, 6, 2), true)
	mustSave(t, s, snap(typ, id, 11, 1), true)
	if got, want := rowsOf(t, s, typ, id, 3), map[int]int64{1: 11, 2: 6}; !maps.Equal(got, want) {
		t.Fatalf("rows (schema: version) = %v, want %v", got, want)
	}
}

// testKeptWindow walks one aggregate through the kept window's rules,
// from schema version 5 on.
func testKeptWindow(t *testing.T, s eventsource.SnapshotStore, kept int) {
	typ, id := uniqueType("KeptWindow"), uuid.New()
	const base = 5
	oldest, newest := base, base+kept-1 // the window once newest is written
	mustSave(t, s, snap(typ, id, 10, oldest), true)
	if kept > 1 {
		mustSave(t, s, snap(typ, id, 8, newest), true)
		checkStored(t, s, typ, id, 10, oldest) // still in the window
	}
	// One schema version more: the oldest falls out of the window.
	mustSave(t, s, snap(typ, id, 9, newest+1), true)
	if got := mustGet(t, s, typ, id, oldest); got != nil {
		t.Fatalf("a save of schema %d kept the row of schema %d (%d kept): %+v", newest+1, oldest, kept, got)
	}
	if kept > 1 {
		checkStored(t, s, typ, id, 8, newest)
	}
	checkStored(t, s, typ, id, 9, newest+1)
	// A save of a schema version older than every kept one is not stored,
	// at any version; one of the oldest kept is.
	mustSave(t, s, snap(typ, id, 99, oldest), false)
	if got := mustGet(t, s, typ, id, oldest); got != nil {
		t.Fatalf("a refused save of schema %d left a row: %+v", oldest, got)
	}
	mustSave(t, s, snap(typ, id, 50, oldest+1), true)
	checkStored(t, s, typ, id, 50, oldest+1)
	// A save far ahead removes every row it puts out of the window, even
	// several at once; rows of other aggregates stay.
	other := uuid.New()
	mustSave(t, s, snap(typ, other, 3, oldest+1), true)
	mustSave(t, s, snap(typ, id, 1, newest+1+kept), true)
	if got, want := rowsOf(t, s, typ, id, newest+1+kept), map[int]int64{newest + 1 + kept: 1}; !maps.Equal(got, want) {
		t.Fatalf("rows (schema: version) after a save %d schema versions ahead = %v, want %v", kept, got, want)
	}
	checkStored(t, s, typ, other, 3, oldest+1)
	// The same rules for a batch: of two snapshots of one aggregate, the
	// one the other puts out of the window is not written, and a
	// snapshot of the batch removes the stored rows it puts out of it.
	third, fourth := uuid.New(), uuid.New()
	mustSave(t, s, snap(typ, fourth, 3, base), true)
	mustSaveBatch(t, s, []eventsource.Snapshot{
		snap(typ, third, 7, base), snap(typ, third, 2, base+kept), snap(typ, fourth, 1, base+kept),
	}, []bool{false, true, true})
	for _, id := range []uuid.UUID{third, fourth} {
		if got := rowsOf(t, s, typ, id, base+kept); len(got) != 1 || got[base+kept] == 0 {
			t.Fatalf("rows of a batch's aggregate (schema: version) = %v, want only schema %d's", got, base+kept)
		}
	}
}

// schemaModel is the reference semantics of one aggregate's rows: schema
// version to version.
type schemaModel struct {
	kept int
	rows map[int]int64
}

// save applies a save the way every store must, and reports whether s
// was stored.
func (m *schemaModel) save(s eventsource.Snapshot) bool {
	newest := s.SchemaVersion
	for schema := range m.rows {
		newest = max(newest, schema)
	}
	for schema := range m.rows {
		if !storekit.SchemaKept(schema, newest, m.kept) {
			delete(m.rows, schema)
		}
	}
	if !storekit.SchemaKept(s.SchemaVersion, newest, m.kept) {
		return false
	}
	if v, ok := m.rows[s.SchemaVersion]; ok && s.Version < v {
		return false
	}
	m.rows[s.SchemaVersion] = s.Version
	return true
}

// testSchemaRowsModel saves random snapshots (schema versions 1 to 7, in
// any order, alone and in batches) of two aggregates and checks every
// result and every row against [schemaModel].
func testSchemaRowsModel(t *testing.T, s eventsource.SnapshotStore, kept int) {
	typ := uniqueType("SchemaModel")
	ids := []uuid.UUID{uuid.New(), uuid.New()}
	models := map[uuid.UUID]*schemaModel{ids[0]: {kept, map[int]int64{}}, ids[1]: {kept, map[int]int64{}}}
	r := rand.New(rand.NewPCG(uint64(kept), 28))
	const maxSchema = 7
	random := func() eventsource.Snapshot {
		return snap(typ, ids[r.IntN(len(ids))], int64(1+r.IntN(20)), 1+r.IntN(maxSchema))
	}
	for step := range 60 {
		var batch []eventsource.Snapshot
		if step%3 == 2 {
			for range 1 + r.IntN(4) {
				batch = append(batch, random())
			}
			write, err := storekit.ResolveSnapshotBatch(batch, kept)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]bool, len(batch))
			for _, i := range write {
				want[i] = models[batch[i].AggregateID].save(batch[i])
			}
			got, err := s.SaveSnapshots(context.Background(), batch)
			if err != nil {
				t.Fatalf("step %d: SaveSnapshots: %v", step, err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: SaveSnapshots(%s) stored %v, want %v", step, describe(batch), got, want)
			}
		} else {
			sn := random()
			batch = []eventsource.Snapshot{sn}
			want := models[sn.AggregateID].save(sn)
			if got, err := s.SaveSnapshot(context.Background(), sn); err != nil || got != want {
				t.Fatalf("step %d: SaveSnapshot(%s) = %v, %v; want %v", step, describe(batch), got, err, want)
			}
		}
		for _, id := range ids {
			if got, want := rowsOf(t, s, typ, id, maxSchema), models[id].rows; !maps.Equal(got, want) {
				t.Fatalf("step %d, after %s: rows of %s (schema: version) = %v, want %v", step, describe(batch), id, got, want)
			}
		}
	}
}

// describe names the snapshots of a batch by version and schema.
func describe(snaps []eventsource.Snapshot) string {
	out := ""
	for i, s := range snaps {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%s v%d schema %d", s.AggregateID.String()[:8], s.Version, s.SchemaVersion)
	}
	return out
}

// testRacingSchemaWriters races writers of schema 1 and of schema 2 (a
// rolling deploy's two versions) over a few aggregates, alone and in
// batches, each walking the versions in its own order: neither row of any
// aggregate ever moves backwards (a writer that saw its snapshot stored
// reads at least that version back), and each ends at the highest
// version written to it.
func testRacingSchemaWriters(t *testing.T, s eventsource.SnapshotStore) {
	typ := uniqueType("SchemaRace")
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	const versions = 30
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		schema := 1 + w%2
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for _, v := range r.Perm(versions) {
				batch := make([]eventsource.Snapshot, len(ids))
				for i := range ids {
					batch[i] = snap(typ, ids[(i+w)%len(ids)], int64(v+1), schema)
				}
				if w >= 2 {
					if _, err := s.SaveSnapshots(context.Background(), batch); err != nil {
						errs <- fmt.Errorf("writer %d (schema %d): %w", w, schema, err)
						return
					}
				} else {
					for _, sn := range batch {
						if _, err := s.SaveSnapshot(context.Background(), sn); err != nil {
							errs <- fmt.Errorf("writer %d (schema %d): %w", w, schema, err)
							return
						}
					}
				}
				for _, id := range ids {
					got, err := s.GetSnapshot(context.Background(), typ, id, schema)
					if err != nil {
						errs <- err
						return
					}
					if got == nil || got.Version < int64(v+1) || got.SchemaVersion != schema {
						errs <- fmt.Errorf("after writing v%d of schema %d the row holds %+v", v+1, schema, got)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, id := range ids {
		checkStored(t, s, typ, id, versions, 1)
		checkStored(t, s, typ, id, versions, 2)
	}
}

// testRacingAcrossWindow races writers of schema 1 and of schema 1+kept
// (too far apart to be kept together) on fresh aggregates. Each save
// applies the window against what is stored when it runs, so both may be
// stored; the aggregate's next save leaves only the rows in the window,
// and the newer schema's row is never lost.
func testRacingAcrossWindow(t *testing.T, s eventsource.SnapshotStore, kept int) {
	typ := uniqueType("WindowRace")
	older, newer := 1, 1+kept
	for round := range 20 {
		id := uuid.New()
		var wg sync.WaitGroup
		results := make([]error, 2)
		for i, schema := range []int{older, newer} {
			wg.Go(func() {
				_, results[i] = s.SaveSnapshot(context.Background(), snap(typ, id, int64(round+1), schema))
			})
		}
		wg.Wait()
		for _, err := range results {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		checkStored(t, s, typ, id, int64(round+1), newer)
		mustSave(t, s, snap(typ, id, int64(round+2), newer), true)
		if got, want := rowsOf(t, s, typ, id, newer), map[int]int64{newer: int64(round + 2)}; !maps.Equal(got, want) {
			t.Fatalf("round %d: rows after the next save (schema: version) = %v, want %v", round, got, want)
		}
	}
}
