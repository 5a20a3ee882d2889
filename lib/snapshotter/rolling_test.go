package snapshotter_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// accountV2 is the Account of the next release: same type, schema 2.
type accountV2 struct {
	eventsource.Root[exampledomain.AccountState]
}

func (*accountV2) AggregateType() string { return exampledomain.AccountType }
func (*accountV2) SchemaVersion() int    { return 2 }

// schemaWatch records, per aggregate, every stored snapshot's schema
// version, and reports if it ever went down (snapshots flapping between
// releases).
type schemaWatch struct {
	eventsource.Store
	mu    sync.Mutex
	last  map[uuid.UUID]int
	flaps int
}

func (s *schemaWatch) SaveSnapshot(ctx context.Context, snap eventsource.Snapshot) (bool, error) {
	ok, err := s.Store.SaveSnapshot(ctx, snap)
	if ok {
		cur, _ := s.Store.GetSnapshot(ctx, snap.AggregateType, snap.AggregateID)
		s.mu.Lock()
		if cur != nil {
			if cur.SchemaVersion < s.last[snap.AggregateID] {
				s.flaps++
			}
			s.last[snap.AggregateID] = max(s.last[snap.AggregateID], cur.SchemaVersion)
		}
		s.mu.Unlock()
	}
	return ok, err
}

// A rolling deploy: v1 and v2 apps and workers run side by side on one
// consumer. Snapshots never flap back to v1 once v2 wrote; v1 apps load
// by replay and keep saving; once the v1 workers are gone, the next save
// of each aggregate leaves it with a v2 snapshot.
func TestRollingDeploySchemaV1AndV2(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	watch := &schemaWatch{Store: e.store.Store, last: map[uuid.UUID]int{}}
	cfg := func(c *snapshotter.Config) { c.Store = watch }
	v1w, err := snapshotter.New(e.config(cfg), snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: 5}))
	if err != nil {
		t.Fatal(err)
	}
	v2w, err := snapshotter.New(e.config(cfg), snapshotter.For[accountV2](e.reg, eventsource.Policy{Threshold: 5}))
	if err != nil {
		t.Fatal(err)
	}
	stopV1 := e.start(v1w)
	e.start(v2w)
	ctx := context.Background()
	v1, err := eventsource.NewRepository[exampledomain.Account](watch, e.reg, eventsource.WithAppendNotifier(e.pub))
	if err != nil {
		t.Fatal(err)
	}
	defer v1.Close(ctx)
	v2, err := eventsource.NewRepository[accountV2](watch, e.reg, eventsource.WithAppendNotifier(e.pub))
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close(ctx)

	ids := make([]uuid.UUID, 8)
	for i := range ids {
		a := v1.New(uuid.New())
		_ = a.Open("rolling", 0)
		if err := v1.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
		ids[i] = a.ID()
	}
	for round := range 12 {
		for i, id := range ids {
			if (i+round)%2 == 0 {
				a, err := v1.Load(ctx, id)
				if err != nil {
					t.Fatalf("v1 load: %v", err)
				}
				_ = a.Deposit(1)
				if err := v1.Save(ctx, a); err != nil {
					t.Fatalf("v1 save: %v", err)
				}
			} else {
				a, err := v2.Load(ctx, id)
				if err != nil {
					t.Fatalf("v2 load: %v", err)
				}
				a.Raise(exampledomain.MoneyDeposited{Amount: 1})
				if err := v2.Save(ctx, a); err != nil {
					t.Fatalf("v2 save: %v", err)
				}
			}
		}
	}
	waitFor(t, 20*time.Second, "every notice handled", e.consumerIdle("snapshotter"))
	// The deploy completes: v1 workers go away, and the next save of each
	// aggregate (by a v2 app) makes a v2 worker replace any v1 snapshot.
	stopV1()
	for _, id := range ids {
		a, err := v2.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		a.Raise(exampledomain.MoneyDeposited{Amount: 1})
		if err := v2.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "every notice handled", e.consumerIdle("snapshotter"))
	for _, id := range ids {
		s, err := watch.GetSnapshot(ctx, exampledomain.AccountType, id)
		if err != nil || s == nil {
			t.Fatalf("no snapshot for %s: %v", id, err)
		}
		if s.SchemaVersion != 2 {
			t.Fatalf("aggregate %s ended with a schema %d snapshot", id, s.SchemaVersion)
		}
		a, err := v1.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if from, _ := a.LoadedFromSnapshot(); from {
			t.Fatal("a v1 app used a v2 snapshot")
		}
		b, err := v2.Load(ctx, id)
		if err != nil || b.State() != a.State() || b.Version() != a.Version() {
			t.Fatalf("v2 load %+v v%d, v1 load %+v v%d (%v)", b.State(), b.Version(), a.State(), a.Version(), err)
		}
	}
	if watch.flaps != 0 {
		t.Fatalf("snapshots flapped back to an older schema %d times", watch.flaps)
	}
}
