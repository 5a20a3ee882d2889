package memstore_test

import (
	"context"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
)

// Visited is the event of the example's aggregate, a page that counts its
// visits.
type Visited struct{}

func (Visited) EventType() string { return "Visited" }

// PageState is the state a Page's snapshots hold.
type PageState struct {
	Visits int `json:"visits"`
}

func (s PageState) Apply(e eventsource.Event) PageState {
	if _, ok := e.(Visited); ok {
		s.Visits++
	}
	return s
}

// Page is the example's aggregate.
type Page struct{ eventsource.Root[PageState] }

func (*Page) AggregateType() string { return "Page" }
func (*Page) SchemaVersion() int    { return 1 }

// A repository on memstore: events and snapshots in memory, for tests and
// development. With no options it snapshots every 100 events in ModeSync.
func ExampleNew() {
	ctx := context.Background()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[Visited](reg)
	store := memstore.New()
	repo, err := eventsource.NewRepository[Page](store, reg)
	if err != nil {
		panic(err)
	}
	defer repo.Close(ctx)

	p := repo.New(uuid.MustParse("5e0b1f64-0000-4000-8000-000000000001"))
	for range 130 {
		p.Raise(Visited{})
	}
	if err := repo.Save(ctx, p); err != nil {
		panic(err)
	}
	loaded, err := repo.Load(ctx, p.ID())
	if err != nil {
		panic(err)
	}
	fromSnapshot, replayed := loaded.LoadedFromSnapshot()
	fmt.Println("visits:", loaded.State().Visits, "from snapshot:", fromSnapshot, "replayed:", replayed)
	fmt.Println("events:", store.EventStore.Count(), "snapshots:", store.SnapshotStore.Count())
	// Output:
	// visits: 130 from snapshot: true replayed: 0
	// events: 130 snapshots: 1
}
