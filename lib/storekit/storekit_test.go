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
