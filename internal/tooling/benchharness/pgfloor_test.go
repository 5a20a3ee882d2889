package benchharness

import (
	"context"
	"testing"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// The floors run the store's own statements through raw pgx, so they must
// scan what those statements return today: when the snapshot gained its
// event id, `make bench` failed at the floor ("5 field descriptions, 4
// destinations") and no test noticed. This runs each floor once against a
// real PostgreSQL.
func TestPGFloorsReadWhatTheStoreWrites(t *testing.T) {
	ctx := context.Background()
	store := pgtest.Store(t)
	reg := exampledomain.NewRegistry()
	repo, err := eventsource.NewRepository[exampledomain.Account](store, reg,
		eventsource.WithSnapshotMode(eventsource.ModeManual))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close(ctx)
	a := repo.New(uuid.New())
	if err := a.Open("floor", 1); err != nil {
		t.Fatal(err)
	}
	for range 59 {
		_ = a.Deposit(1)
	}
	if err := repo.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateSnapshot(ctx, a); err != nil {
		t.Fatal(err)
	}
	f := &pgFloor{pool: store.Pool(), sql: store.Statements(), codec: reg.Codec()}
	if err := f.loadBatch(ctx, a.ID(), 60); err != nil {
		t.Errorf("loadBatch: %v", err)
	}
	if err := f.loadTwo(ctx, a.ID()); err != nil {
		t.Errorf("loadTwo: %v", err)
	}
	if err := f.replay(ctx, a.ID(), 60); err != nil {
		t.Errorf("replay: %v", err)
	}
}
