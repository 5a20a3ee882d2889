package pgstore_test

import (
	"context"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
)

// TestOpenMigrateRepository runs the wiring the package doc shows: open
// the store in a schema of its own, migrate it, hand it to a repository,
// save and load. (An Example could not run: it needs a server.)
func TestOpenMigrateRepository(t *testing.T) {
	ctx := context.Background()
	schema := newSchemaName()
	store, err := pgstore.Open(ctx, testURL(t), pgstore.WithSchema(schema))
	if err != nil {
		t.Fatal(err) // names the server, password masked
	}
	defer store.Close()
	dropSchemaAtCleanup(t, testPool(t), schema)
	if err := store.Migrate(ctx); err != nil { // once per deployment
		t.Fatal(err)
	}
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[deposited](reg)
	repo, err := eventsource.NewRepository[account](store, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close(ctx)
	a := repo.New(uuid.New())
	for range 3 {
		a.Raise(deposited{Amount: 5})
	}
	if err := repo.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := repo.Load(ctx, a.ID())
	if err != nil || got.State().Balance != 15 || got.Version() != 3 {
		t.Fatalf("Load = balance %d v%d, %v; want 15 at v3", got.State().Balance, got.Version(), err)
	}
}

type account struct {
	eventsource.Root[accountState]
}

func (*account) AggregateType() string { return "Account" }
func (*account) SchemaVersion() int    { return 1 }

type accountState struct {
	Balance int64 `json:"balance"`
}

func (s accountState) Apply(e eventsource.Event) accountState {
	if d, ok := e.(deposited); ok {
		s.Balance += d.Amount
	}
	return s
}

type deposited struct {
	Amount int64 `json:"amount"`
}

func (deposited) EventType() string { return "Deposited" }
