package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// The events and aggregate the repository cases save and load. Their names
// are the suite's own, so they never clash with a backend's other tests.

type tallyDeposited struct {
	Amount int `json:"amount"`
}

func (tallyDeposited) EventType() string { return "storetest.Deposited" }

type tallyMystery struct {
	Clue string `json:"clue"`
}

func (tallyMystery) EventType() string { return "storetest.Mystery" }

// tallyRiddle is another Go type registered under tallyMystery's name, as
// a second program (or a later release) may do.
type tallyRiddle struct {
	Clue string `json:"clue"`
}

func (tallyRiddle) EventType() string { return "storetest.Mystery" }

type tallyState struct {
	Total     int    `json:"total"`
	Mysteries int    `json:"mysteries"`
	Riddles   string `json:"riddles"`
}

func (s tallyState) Apply(e eventsource.Event) tallyState {
	switch e := e.(type) {
	case tallyDeposited:
		s.Total += e.Amount
	case tallyMystery:
		s.Mysteries++
	case tallyRiddle:
		s.Riddles += e.Clue
	}
	return s
}

type tally struct{ eventsource.Root[tallyState] }

func (*tally) AggregateType() string { return "storetest.Tally" }
func (*tally) SchemaVersion() int    { return 1 }

// tallyRepo returns a repository of tallies on s whose registry knows the
// given event types. It takes no snapshots: the cases read events only.
func tallyRepo(t *testing.T, s eventsource.Store, register ...func(*eventsource.Registry) error) *eventsource.Repository[tally, *tally] {
	t.Helper()
	reg := eventsource.NewRegistry()
	for _, r := range register {
		if err := r(reg); err != nil {
			t.Fatal(err)
		}
	}
	return newTallyRepo(t, s, reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
}

// tallyRepoWith returns a repository of tallies (deposits only) on s with
// the given options.
func tallyRepoWith(t *testing.T, s eventsource.Store, opts ...eventsource.Option) *eventsource.Repository[tally, *tally] {
	t.Helper()
	reg := eventsource.NewRegistry()
	if err := eventsource.Register[tallyDeposited](reg); err != nil {
		t.Fatal(err)
	}
	return newTallyRepo(t, s, reg, opts...)
}

func newTallyRepo(t *testing.T, s eventsource.Store, reg *eventsource.Registry, opts ...eventsource.Option) *eventsource.Repository[tally, *tally] {
	t.Helper()
	repo, err := eventsource.NewRepository[tally](s, reg, opts...)
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	t.Cleanup(func() { _ = repo.Close(context.Background()) })
	return repo
}

// testUnknownEventTypeOnLoad saves Deposited, Mystery, Deposited through a
// repository whose registry knows Mystery and loads the aggregate through
// repositories on the same store whose registries do not, or map the name
// to another Go type. What a store kept from the save (an in-memory store
// may keep the decoded events) must not change what the load sees: the
// reader's registry decides, as it does on a store that keeps only bytes.
func testUnknownEventTypeOnLoad(t *testing.T, s eventsource.Store) {
	ctx := context.Background()
	writer := tallyRepo(t, s, eventsource.Register[tallyDeposited], eventsource.Register[tallyMystery])
	id := uuid.New()
	a := writer.New(id)
	a.Raise(tallyDeposited{Amount: 1})
	a.Raise(tallyMystery{Clue: "who"})
	a.Raise(tallyDeposited{Amount: 2})
	if err := writer.Save(ctx, a); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if got, err := writer.Load(ctx, id); err != nil || got.Version() != 3 || got.State() != (tallyState{Total: 3, Mysteries: 1}) {
		t.Fatalf("Load with the writer's registry = %+v, %v; want v3 {Total 3, Mysteries 1}", got, err)
	}

	partial := tallyRepo(t, s, eventsource.Register[tallyDeposited])
	got, err := partial.Load(ctx, id)
	var ue *eventsource.UnknownEventTypeError
	if !errors.As(err, &ue) || ue.Type != "storetest.Mystery" || !errors.Is(err, eventsource.ErrUnknownEventType) {
		v := int64(-1)
		if got != nil {
			v = got.Version()
		}
		t.Fatalf("Load with a registry that lacks storetest.Mystery: version %d, error %v; want an *UnknownEventTypeError naming storetest.Mystery", v, err)
	}

	other := tallyRepo(t, s, eventsource.Register[tallyDeposited], eventsource.Register[tallyRiddle])
	got, err = other.Load(ctx, id)
	if err != nil || got.Version() != 3 || got.State() != (tallyState{Total: 3, Riddles: "who"}) {
		t.Fatalf("Load with a registry that maps storetest.Mystery to another Go type = %+v, %v; want v3 {Total 3, Riddles who}", got, err)
	}
}
