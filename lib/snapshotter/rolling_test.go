package snapshotter_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// A rolling deploy and a rollback: v1 and v2 of the example app
// (exampledomain.Account and AccountV2, schema versions 1 and 2, state
// encoded differently) and of the worker run side by side on one stream
// and one durable consumer. Each worker writes its own schema version's
// row, whichever app's save announced the events; v1 loads read v1's
// snapshots and v2 loads v2's. Then v2 is rolled back (its apps and
// workers stop): v1 loads of the aggregates v1 had snapshotted never
// replay every event, the v1 worker alone keeps their snapshots within the
// threshold, and no row ever moves backwards.
func TestRollingDeployAndRollback(t *testing.T) {
	e := newEnv(t, natstest.RunServer(t).ClientURL(), memstore.New(), false)
	const threshold = 5
	v1w, err := snapshotter.New(e.config(nil), snapshotter.For[exampledomain.Account](e.reg, eventsource.Policy{Threshold: threshold}))
	if err != nil {
		t.Fatal(err)
	}
	v2w, err := snapshotter.New(e.config(nil), snapshotter.For[exampledomain.AccountV2](e.reg, eventsource.Policy{Threshold: threshold}))
	if err != nil {
		t.Fatal(err)
	}
	e.start(v1w)
	stopV2 := e.start(v2w)
	ctx := context.Background()
	v1, err := eventsource.NewRepository[exampledomain.Account](e.store, e.reg, eventsource.WithAppendNotifier(e.pub))
	if err != nil {
		t.Fatal(err)
	}
	defer v1.Close(ctx)
	v2, err := eventsource.NewRepository[exampledomain.AccountV2](e.store, e.reg, eventsource.WithAppendNotifier(e.pub))
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
				if err := a.Deposit(1); err != nil {
					t.Fatal(err)
				}
				if err := v2.Save(ctx, a); err != nil {
					t.Fatalf("v2 save: %v", err)
				}
			}
		}
	}
	waitFor(t, 20*time.Second, "every notice handled", e.consumerIdle("snapshotter"))
	snapshotted := map[uuid.UUID]bool{}
	for _, id := range ids {
		for schema := 1; schema <= 2; schema++ {
			s, err := e.store.Store.GetSnapshot(ctx, exampledomain.AccountType, id, schema)
			if err != nil {
				t.Fatal(err)
			}
			if s != nil && s.SchemaVersion != schema {
				t.Fatalf("GetSnapshot of schema %d returned one of schema %d", schema, s.SchemaVersion)
			}
			if s != nil && schema == 1 {
				snapshotted[id] = true
			}
		}
		a, err := v1.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := v2.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if b.State().Cents != int64(a.State().Balance*100) || b.Version() != a.Version() {
			t.Fatalf("v2 load %+v v%d, v1 load %+v v%d", b.State(), b.Version(), a.State(), a.Version())
		}
	}
	if len(snapshotted) == 0 {
		t.Fatal("the v1 worker wrote no snapshot while v2 ran beside it")
	}

	// v2 is rolled back: its apps stop saving and its workers stop.
	stopV2()
	fullReplays := 0
	for range 3 {
		for _, id := range ids {
			a, err := v1.Load(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if from, _ := a.LoadedFromSnapshot(); !from && snapshotted[id] {
				fullReplays++
			}
			for range threshold {
				_ = a.Deposit(1)
			}
			if err := v1.Save(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 20*time.Second, "every notice handled", e.consumerIdle("snapshotter"))
	}
	if fullReplays != 0 {
		t.Fatalf("after the rollback, %d v1 loads of aggregates v1 had snapshotted replayed every event; want 0", fullReplays)
	}
	for _, id := range ids {
		s, err := e.store.Store.GetSnapshot(ctx, exampledomain.AccountType, id, 1)
		if err != nil || s == nil {
			t.Fatalf("no v1 snapshot of %s after the rollback: %v", id, err)
		}
		if head := e.head(id); head-s.Version >= threshold {
			t.Fatalf("v1 snapshot of %s at v%d, head v%d: the v1 worker did not keep it within the threshold", id, s.Version, head)
		}
	}
	e.store.checkNoRegressions(t)
	t.Logf("%d of %d aggregates had a v1 snapshot when v2 was rolled back; v1 full replays after: %d", len(snapshotted), len(ids), fullReplays)
}
