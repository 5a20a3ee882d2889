package storekit_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/storekit"
	"github.com/google/uuid"
)

func TestDistinctIDs(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	if got := storekit.DistinctIDs([]uuid.UUID{b, a, b, c, a}); !slices.Equal(got, []uuid.UUID{b, a, c}) {
		t.Fatalf("DistinctIDs = %v, want %v", got, []uuid.UUID{b, a, c})
	}
}

// Every request gets what was found for its id, in order, nil for none,
// and a repeated id its own copy.
func TestSnapshotsInOrder(t *testing.T) {
	a, b, none := uuid.New(), uuid.New(), uuid.New()
	found := map[uuid.UUID]*eventsource.Snapshot{
		a: {AggregateID: a, Version: 3, State: []byte(`{"a":1}`)},
		b: {AggregateID: b, Version: 5, State: []byte(`{"b":1}`)},
	}
	got := storekit.SnapshotsInOrder([]uuid.UUID{a, none, b, a}, found)
	if len(got) != 4 || got[0] != found[a] || got[1] != nil || got[2] != found[b] || got[3] == nil {
		t.Fatalf("SnapshotsInOrder = %v", got)
	}
	if got[3] == got[0] || got[3].Version != 3 || string(got[3].State) != `{"a":1}` {
		t.Fatalf("the repeated id got %p %+v, want its own copy of %p", got[3], got[3], got[0])
	}
	got[3].State[0] = 'X'
	if string(got[0].State) != `{"a":1}` {
		t.Fatal("the copy shares its state bytes with the first")
	}
}

// The limits storekit checks are the ones eventsource.Snapshot.Validate
// checks: a store that validates with both refuses the same input.
func TestLimitsMatchSnapshotValidate(t *testing.T) {
	id := uuid.New()
	snap := func(typ string, schema int) *eventsource.Snapshot {
		return &eventsource.Snapshot{AggregateID: id, AggregateType: typ, Version: 1, SchemaVersion: schema,
			EventID: uuid.New(), State: []byte(`{}`)}
	}
	longest := strings.Repeat("T", storekit.MaxAggregateTypeLen)
	if err := storekit.ValidateStream(longest, id); err != nil {
		t.Fatalf("ValidateStream of a %d-byte type: %v", len(longest), err)
	}
	if err := snap(longest, 1).Validate(); err != nil {
		t.Fatalf("Snapshot.Validate of a %d-byte type: %v", len(longest), err)
	}
	tooLong := longest + "T"
	if err := storekit.ValidateStream(tooLong, id); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("ValidateStream of a %d-byte type: %v, want ErrInvalidArgument", len(tooLong), err)
	}
	if err := snap(tooLong, 1).Validate(); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Fatalf("Snapshot.Validate of a %d-byte type: %v, want ErrInvalidArgument", len(tooLong), err)
	}
	over := eventsource.MaxSchemaVersion
	over++ // a variable: where int has 32 bits it wraps negative, still out of range
	for _, v := range []int{0, -1, over} {
		if err := storekit.ValidateSchemaVersion(v); !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), strconv.Itoa(v)) {
			t.Errorf("ValidateSchemaVersion(%d) = %v, want ErrInvalidArgument naming it", v, err)
		}
		if err := snap("T", v).Validate(); !errors.Is(err, eventsource.ErrInvalidArgument) {
			t.Errorf("Snapshot.Validate at schema %d = %v, want ErrInvalidArgument", v, err)
		}
	}
	if err := storekit.ValidateSchemaVersion(eventsource.MaxSchemaVersion); err != nil {
		t.Errorf("ValidateSchemaVersion(MaxSchemaVersion) = %v", err)
	}
}

// A batch keeps one snapshot per row (aggregate and schema version), the
// last that supersedes, and drops those another of the batch puts out of
// the kept window.
func TestResolveSnapshotBatchKeptWindow(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	snap := func(id uuid.UUID, version int64, schema int) eventsource.Snapshot {
		return eventsource.Snapshot{AggregateID: id, AggregateType: "T", Version: version, SchemaVersion: schema, EventID: uuid.New(), State: []byte(`{}`)}
	}
	batch := []eventsource.Snapshot{
		snap(a, 5, 1), // dropped: schema 3 puts schema 1 out of a window of 2
		snap(a, 3, 2), // superseded by the next
		snap(a, 4, 2),
		snap(a, 1, 3),
		snap(b, 9, 1), // b's newest is 1: kept
		snap(b, 8, 1), // lower than v9 of its row
	}
	for _, c := range []struct {
		kept int
		want []int
	}{{1, []int{3, 4}}, {2, []int{2, 3, 4}}, {3, []int{0, 2, 3, 4}}} {
		got, err := storekit.ResolveSnapshotBatch(batch, c.kept)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ResolveSnapshotBatch(kept %d) = %v, %v; want %v", c.kept, got, err, c.want)
		}
	}
	if !storekit.SchemaKept(2, 3, 2) || storekit.SchemaKept(1, 3, 2) || !storekit.SchemaKept(eventsource.MaxSchemaVersion, eventsource.MaxSchemaVersion, eventsource.MaxSchemaVersion) {
		t.Fatal("SchemaKept: want schema > newest-kept")
	}
}

func TestValidateKeptAndList(t *testing.T) {
	for _, k := range []int{0, -3} {
		if err := storekit.ValidateKeptSchemaVersions(k); !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), strconv.Itoa(k)) {
			t.Errorf("ValidateKeptSchemaVersions(%d) = %v, want ErrInvalidOption naming it", k, err)
		}
	}
	if err := storekit.ValidateKeptSchemaVersions(storekit.DefaultKeptSchemaVersions); err != nil {
		t.Errorf("ValidateKeptSchemaVersions(default) = %v", err)
	}
	if err := storekit.ValidateList("T", eventsource.ListOptions{SchemaVersion: -1}); !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(err.Error(), "-1") {
		t.Errorf("ValidateList(SchemaVersion -1) = %v", err)
	}
	if err := storekit.ValidateList("", eventsource.ListOptions{}); !errors.Is(err, eventsource.ErrInvalidArgument) {
		t.Errorf("ValidateList(empty type) = %v", err)
	}
	if err := storekit.ValidateList("T", eventsource.ListOptions{SchemaVersion: eventsource.MaxSchemaVersion}); err != nil {
		t.Errorf("ValidateList(SchemaVersion max) = %v", err)
	}
}
