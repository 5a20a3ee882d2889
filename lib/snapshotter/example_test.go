package snapshotter_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Deposited is the example's one event.
type Deposited struct {
	Amount int `json:"amount"`
}

// EventType implements eventsource.Event.
func (Deposited) EventType() string { return "Deposited" }

// WalletState is the example aggregate's state.
type WalletState struct{ Balance int }

// Apply implements eventsource.State.
func (s WalletState) Apply(e eventsource.Event) WalletState {
	if d, ok := e.(Deposited); ok {
		s.Balance += d.Amount
	}
	return s
}

// Wallet is the example aggregate.
type Wallet struct{ eventsource.Root[WalletState] }

// AggregateType implements eventsource.Aggregate.
func (*Wallet) AggregateType() string { return "Wallet" }

// SchemaVersion implements eventsource.Aggregate.
func (*Wallet) SchemaVersion() int { return 1 }

// A worker snapshots the aggregates an app saves in external mode: the
// app's saves publish "events appended" notices to JetStream, and the
// worker, running beside it (or in N replicas of its own process), takes
// the snapshot the policy asks for. Here both run in one process, on an
// embedded nats-server and an in-memory store.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "evsnap-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := natsconnect.StartEmbedded(dir, "") // an in-process nats-server with JetStream
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	if _, err := natsnotice.EnsureStream(ctx, js, natsnotice.DefaultStreamConfig()); err != nil {
		panic(err)
	}

	store := memstore.New()
	reg := eventsource.NewRegistry()
	if err := eventsource.Register[Deposited](reg); err != nil {
		panic(err)
	}

	// The worker: a snapshot every 10 events.
	cfg := snapshotter.DefaultConfig()
	cfg.Store, cfg.JetStream = store, js
	cfg.Logger = slog.New(slog.DiscardHandler) // the example prints only its results
	w, err := snapshotter.New(cfg, snapshotter.For[Wallet](reg, eventsource.Policy{Threshold: 10}))
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(runCtx) }()

	// The app: every save publishes a notice.
	pub, err := natsnotice.NewPublisher(js)
	if err != nil {
		panic(err)
	}
	repo, err := eventsource.NewRepository[Wallet](store, reg,
		eventsource.WithAppendNotifier(pub))
	if err != nil {
		panic(err)
	}
	wallet := repo.New(uuid.New())
	for range 12 {
		wallet.Raise(Deposited{Amount: 5})
	}
	if err := repo.Save(ctx, wallet); err != nil {
		panic(err)
	}

	// The snapshot appears shortly after the save.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		s, err := store.GetSnapshot(ctx, "Wallet", wallet.ID(), 1)
		if err != nil {
			panic(err)
		}
		if s != nil {
			fmt.Printf("snapshot of the wallet at version %d: %s\n", s.Version, s.State)
			break
		}
	}
	loaded, err := repo.Load(ctx, wallet.ID())
	if err != nil {
		panic(err)
	}
	fromSnapshot, replayed := loaded.LoadedFromSnapshot()
	fmt.Printf("load: from the snapshot %v, events replayed %d, balance %d\n", fromSnapshot, replayed, loaded.State().Balance)

	// Shut down: stop the worker (it drains), then the app's parts.
	stop()
	if err := <-stopped; err != nil {
		panic(err)
	}
	if err := w.Close(ctx); err != nil {
		panic(err)
	}
	if err := repo.Close(ctx); err != nil {
		panic(err)
	}
	if err := pub.Close(ctx); err != nil {
		panic(err)
	}
	// Output:
	// snapshot of the wallet at version 12: {"Balance":60}
	// load: from the snapshot true, events replayed 0, balance 60
}
