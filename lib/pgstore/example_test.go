package pgstore_test

import (
	"context"
	"log"
	"os"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
)

// Opening the PostgreSQL store and giving it to a repository. (Not run by
// go test: it needs a server, named here by EVSNAP_POSTGRES_URL; the
// conformance tests run the store against EVSNAP_TEST_POSTGRES_URL.)
func ExampleOpen() {
	ctx := context.Background()
	store, err := pgstore.Open(ctx, os.Getenv("EVSNAP_POSTGRES_URL"), pgstore.WithSchema("evsnap"))
	if err != nil {
		log.Fatal(err) // names the server, password masked
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil { // once per deployment
		log.Fatal(err)
	}

	reg := eventsource.NewRegistry()
	// eventsource.MustRegister[MoneyDeposited](reg) ...
	repo, err := eventsource.NewRepository[Account](store, reg)
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close(ctx)
	// repo.Load reads the snapshot and the events after it in one round
	// trip (one pgx.Batch).
}

// Account stands for an application's aggregate.
type Account struct {
	eventsource.Root[AccountState]
}

func (*Account) AggregateType() string { return "Account" }
func (*Account) SchemaVersion() int    { return 1 }

// AccountState stands for its state.
type AccountState struct {
	Balance int64 `json:"balance"`
}

func (s AccountState) Apply(eventsource.Event) AccountState { return s }
