package eventsource_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
)

// CounterIncremented is an event with an explicit, stable type name.
type CounterIncremented struct {
	By int `json:"by"`
}

func (CounterIncremented) EventType() string { return "CounterIncremented" }

// CounterState evolves by applying events; it is what snapshots store.
type CounterState struct {
	Total int `json:"total"`
}

func (s CounterState) Apply(e eventsource.Event) CounterState {
	switch e := e.(type) {
	case CounterIncremented:
		s.Total += e.By
	}
	return s
}

// Counter is an aggregate: it embeds Root and declares its type name and
// state schema version.
type Counter struct {
	eventsource.Root[CounterState]
}

func (*Counter) AggregateType() string { return "Counter" }
func (*Counter) SchemaVersion() int    { return 1 }

// Increment is a command: validate, then raise an event.
func (c *Counter) Increment(by int) error {
	if by <= 0 {
		return fmt.Errorf("increment by %d: must be positive", by)
	}
	c.Raise(CounterIncremented{By: by})
	return nil
}

// A repository with synchronous snapshots every 10 events.
func Example() {
	ctx := context.Background()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[CounterIncremented](reg)
	store := memstore.New()

	repo, err := eventsource.NewRepository[Counter](store, reg,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}),
	)
	if err != nil {
		panic(err)
	}
	defer repo.Close(ctx)

	id := uuid.MustParse("7f1d2c9e-0000-4000-8000-000000000001")
	c := repo.New(id)
	for i := 1; i <= 12; i++ {
		_ = c.Increment(i)
	}
	if err := repo.Save(ctx, c); err != nil {
		panic(err)
	}

	loaded, err := repo.Load(ctx, id)
	if err != nil {
		panic(err)
	}
	fromSnapshot, replayed := loaded.LoadedFromSnapshot()
	fmt.Println("version:", loaded.Version(), "total:", loaded.State().Total)
	fmt.Println("from snapshot:", fromSnapshot, "events replayed:", replayed)
	// Output:
	// version: 12 total: 78
	// from snapshot: true events replayed: 0
}

// Background snapshots are written off the saving goroutine; tests wait
// for them with AwaitPendingSnapshots.
func ExampleRepository_AwaitPendingSnapshots() {
	ctx := context.Background()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[CounterIncremented](reg)
	store := memstore.New()
	repo, _ := eventsource.NewRepository[Counter](store, reg,
		eventsource.WithSnapshotMode(eventsource.ModeBackground),
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}),
	)
	defer repo.Close(ctx)

	c := repo.New(uuid.New())
	for range 15 {
		_ = c.Increment(1)
	}
	_ = repo.Save(ctx, c)
	// Save returned without writing the snapshot; wait for the writers.
	if _, err := repo.AwaitPendingSnapshots(ctx); err != nil {
		panic(err)
	}
	s, _ := store.GetSnapshot(ctx, "Counter", c.ID(), 1)
	fmt.Println("snapshot version:", s.Version)
	// Output:
	// snapshot version: 15
}

// Manual mode snapshots only when asked, e.g. at a business milestone.
func ExampleRepository_CreateSnapshot() {
	ctx := context.Background()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[CounterIncremented](reg)
	store := memstore.New()
	repo, _ := eventsource.NewRepository[Counter](store, reg,
		eventsource.WithSnapshotMode(eventsource.ModeManual),
	)
	defer repo.Close(ctx)

	c := repo.New(uuid.New())
	_ = c.Increment(5)
	_ = repo.Save(ctx, c)
	s, err := repo.CreateSnapshot(ctx, c)
	if err != nil {
		panic(err)
	}
	fmt.Printf("snapshot v%d schema %d state %s\n", s.Version, s.SchemaVersion, s.State)
	// Output:
	// snapshot v1 schema 1 state {"total":5}
}

// A stale save gets a typed conflict carrying both versions.
func ExampleConflictError() {
	ctx := context.Background()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[CounterIncremented](reg)
	repo, _ := eventsource.NewRepository[Counter](memstore.New(), reg)
	defer repo.Close(ctx)

	c := repo.New(uuid.New())
	_ = c.Increment(1)
	_ = repo.Save(ctx, c)

	a, _ := repo.Load(ctx, c.ID())
	b, _ := repo.Load(ctx, c.ID())
	_ = a.Increment(1)
	_ = b.Increment(2)
	_ = repo.Save(ctx, a)
	err := repo.Save(ctx, b)

	var conflict *eventsource.ConflictError
	if errors.As(err, &conflict) {
		fmt.Println("expected", conflict.Expected, "actual", conflict.Actual)
	}
	// Output:
	// expected 1 actual 2
}

// Split keeps snapshots apart from the events: here both halves are
// memstore's, as they could be PostgreSQL for the events and another
// database for the snapshots. Loads and saves work as on one store; what
// needs to list aggregates says it cannot.
func ExampleSplit() {
	ctx := context.Background()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[CounterIncremented](reg)
	snapshots := memstore.NewSnapshotStore()
	store := eventsource.Split(memstore.NewEventStore(), snapshots)

	repo, err := eventsource.NewRepository[Counter](store, reg, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
	if err != nil {
		panic(err)
	}
	defer repo.Close(ctx)
	c := repo.New(uuid.MustParse("7f1d2c9e-0000-4000-8000-000000000002"))
	for range 10 {
		_ = c.Increment(1)
	}
	if err := repo.Save(ctx, c); err != nil {
		panic(err)
	}
	fmt.Println("snapshots kept apart:", snapshots.Count())

	loaded, _ := repo.Load(ctx, c.ID())
	fromSnapshot, replayed := loaded.LoadedFromSnapshot()
	fmt.Println("from snapshot:", fromSnapshot, "events replayed:", replayed)

	for _, err := range store.ListAggregates(ctx, "Counter", eventsource.ListOptions{}) {
		fmt.Println("listing unsupported:", errors.Is(err, errors.ErrUnsupported))
	}
	// Output:
	// snapshots kept apart: 1
	// from snapshot: true events replayed: 0
	// listing unsupported: true
}
