package eventsource_test

import (
	"slices"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

func TestDistinctIDs(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	if got := eventsource.DistinctIDs([]uuid.UUID{b, a, b, c, a}); !slices.Equal(got, []uuid.UUID{b, a, c}) {
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
	got := eventsource.SnapshotsInOrder([]uuid.UUID{a, none, b, a}, found)
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
