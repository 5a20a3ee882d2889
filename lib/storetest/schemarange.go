package storetest

import (
	"context"
	"strconv"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// outOfRangeSchemas are schema versions above [eventsource.MaxSchemaVersion]
// that an int holds: the next one, and (where int has 64 bits) the values
// a 32-bit column would wrap to 1 and 2.
func outOfRangeSchemas() []int {
	next := eventsource.MaxSchemaVersion
	next++ // a variable, so that this compiles where int has 32 bits (it wraps negative there)
	out := []int{next}
	for _, wide := range []int64{1<<32 + 1, 1<<32 + 2} {
		if n := int(wide); int64(n) == wide {
			out = append(out, n)
		}
	}
	return out
}

// testSchemaVersionRange: the highest schema version is stored and read
// back exactly; one above it is refused as an invalid argument that names
// the value and the range, and so is a DeleteSnapshotsByType bound above
// it, on every backend alike, whatever width its column has.
func testSchemaVersionRange(t *testing.T, s eventsource.SnapshotStore) {
	ctx := context.Background()
	const maxSchema = eventsource.MaxSchemaVersion
	typ, top, below := uniqueType("SchemaRange"), uuid.New(), uuid.New()
	mustSave(t, s, snap(typ, top, 7, maxSchema), true)
	checkStored(t, s, typ, top, 7, maxSchema)
	mustSave(t, s, snap(typ, below, 7, maxSchema-1), true)
	checkStored(t, s, typ, below, 7, maxSchema-1)

	for _, v := range outOfRangeSchemas() {
		_, err := s.SaveSnapshot(ctx, snap(typ, top, 8, v))
		checkInvalid(t, "SaveSnapshot with schema version "+strconv.Itoa(v), err, strconv.Itoa(v), strconv.Itoa(maxSchema))
		fresh := uuid.New()
		_, err = s.SaveSnapshot(ctx, snap(typ, fresh, 1, v))
		checkInvalid(t, "SaveSnapshot of a new aggregate with schema version "+strconv.Itoa(v), err, strconv.Itoa(v))
		if got := mustGet(t, s, typ, fresh, 1); got != nil {
			t.Fatalf("a snapshot with schema version %d was stored, reading back as %d", v, got.SchemaVersion)
		}
		n, err := s.DeleteSnapshotsByType(ctx, typ, v)
		checkInvalid(t, "DeleteSnapshotsByType below "+strconv.Itoa(v), err, strconv.Itoa(v), strconv.Itoa(maxSchema))
		if n != 0 {
			t.Fatalf("a refused DeleteSnapshotsByType below %d reports %d deleted", v, n)
		}
		// Reads and the stale delete name a row by its schema version:
		// one out of range is refused, never wrapped onto another row.
		_, err = s.GetSnapshot(ctx, typ, top, v)
		checkInvalid(t, "GetSnapshot with schema version "+strconv.Itoa(v), err, strconv.Itoa(v), strconv.Itoa(maxSchema))
		_, err = s.GetSnapshots(ctx, typ, v, []uuid.UUID{top})
		checkInvalid(t, "GetSnapshots with schema version "+strconv.Itoa(v), err, strconv.Itoa(v), strconv.Itoa(maxSchema))
		stale := snap(typ, below, 7, v)
		deleted, err := s.DeleteStaleSnapshot(ctx, stale)
		checkInvalid(t, "DeleteStaleSnapshot with schema version "+strconv.Itoa(v), err, strconv.Itoa(v))
		if deleted {
			t.Fatalf("a refused DeleteStaleSnapshot at schema %d reports a delete", v)
		}
	}
	for _, v := range []int{0, -1} {
		_, err := s.GetSnapshot(ctx, typ, top, v)
		checkInvalid(t, "GetSnapshot with schema version "+strconv.Itoa(v), err, strconv.Itoa(v))
		_, err = s.GetSnapshots(ctx, typ, v, []uuid.UUID{top})
		checkInvalid(t, "GetSnapshots with schema version "+strconv.Itoa(v), err, strconv.Itoa(v))
	}
	checkStored(t, s, typ, top, 7, maxSchema)
	checkStored(t, s, typ, below, 7, maxSchema-1)

	// The highest bound is accepted and compares exactly.
	n, err := s.DeleteSnapshotsByType(ctx, typ, maxSchema)
	if err != nil || n != 1 {
		t.Fatalf("DeleteSnapshotsByType below %d = %d, %v; want 1 (the snapshot at schema %d)", maxSchema, n, err, maxSchema-1)
	}
	if got := mustGet(t, s, typ, below, maxSchema-1); got != nil {
		t.Fatalf("the snapshot at schema %d survived a delete below %d", maxSchema-1, maxSchema)
	}
	checkStored(t, s, typ, top, 7, maxSchema)
}

// testBatchSchemaVersionRange: a batch holding a snapshot whose schema
// version is out of range fails whole, and one at the highest round-trips.
func testBatchSchemaVersionRange(t *testing.T, s eventsource.SnapshotStore) {
	typ, good, bad := uniqueType("BatchSchemaRange"), uuid.New(), uuid.New()
	for _, v := range outOfRangeSchemas() {
		stored, err := s.SaveSnapshots(context.Background(), []eventsource.Snapshot{snap(typ, good, 1, 1), snap(typ, bad, 1, v)})
		checkInvalid(t, "SaveSnapshots with schema version "+strconv.Itoa(v), err, "snapshot 1", strconv.Itoa(v))
		if stored != nil || mustGet(t, s, typ, good, 1) != nil || mustGet(t, s, typ, bad, 1) != nil {
			t.Fatalf("a batch with schema version %d was (partly) stored: %v", v, stored)
		}
	}
	mustSaveBatch(t, s, []eventsource.Snapshot{snap(typ, good, 2, eventsource.MaxSchemaVersion)}, []bool{true})
	checkStored(t, s, typ, good, 2, eventsource.MaxSchemaVersion)
}

// testLoaderSchemaVersionRange: LoadSnapshotAndEvents takes a schema
// version in range (the highest finds a snapshot of it) and refuses one
// above it as an invalid argument.
func testLoaderSchemaVersionRange(t *testing.T, b eventsource.Store) {
	typ, id := uniqueType("LoaderSchemaRange"), uuid.New()
	mustAppend(t, b, typ, id, eventsource.NoStream, testEvents("Thing", 1, 6))
	mustSave(t, b, snap(typ, id, 4, eventsource.MaxSchemaVersion), true)
	s, vs := loadVersions(t, b, typ, id, eventsource.MaxSchemaVersion)
	if s == nil || s.SchemaVersion != eventsource.MaxSchemaVersion {
		t.Fatalf("snapshot %+v, want the one at schema %d", s, eventsource.MaxSchemaVersion)
	}
	checkRange(t, vs, 4, 6)
	for _, v := range outOfRangeSchemas() {
		_, _, err := b.LoadSnapshotAndEvents(context.Background(), typ, id, v)
		checkInvalid(t, "LoadSnapshotAndEvents with schema version "+strconv.Itoa(v), err, strconv.Itoa(v))
	}
}
