package snapshotter_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/pgtest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// workerGrants are the least privileges the snapshotter worker needs on
// PostgreSQL (documented in docs/security.md): read events and stream
// heads, read and write snapshots (DELETE too: a save removes the rows of
// schema versions no longer kept, decision 28), move a stream in change
// order when a load removes a stale snapshot (the change_xid column
// only), and read and write the sweep's marks (decision 37; DELETE for
// prune).
var workerGrants = []string{
	"GRANT USAGE ON SCHEMA %[1]s TO %[2]s",
	"GRANT SELECT ON %[1]s.events, %[1]s.streams TO %[2]s",
	"GRANT UPDATE (change_xid) ON %[1]s.streams TO %[2]s",
	"GRANT SELECT, INSERT, UPDATE, DELETE ON %[1]s.snapshots, %[1]s.streams_sweep_marks TO %[2]s",
}

// The worker runs with only the documented grants, and those grants do not
// let it write events.
func TestWorkerLeastPrivilegeRole(t *testing.T) {
	owner := pgtest.Store(t)
	ctx := context.Background()
	reg := exampledomain.NewRegistry()
	app, err := eventsource.NewRepository[exampledomain.Account](owner, reg, eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	a := app.New(uuid.New())
	_ = a.Open("grants", 0)
	for range 120 {
		_ = a.Deposit(1)
	}
	if err := app.Save(ctx, a); err != nil {
		t.Fatal(err)
	}

	var b [4]byte
	_, _ = rand.Read(b[:])
	role := "evsnap_worker_" + hex.EncodeToString(b[:])
	schema := pgx.Identifier{owner.Schema()}.Sanitize()
	roleQ := pgx.Identifier{role}.Sanitize()
	pool := owner.Pool()
	if _, err := pool.Exec(ctx, "CREATE ROLE "+roleQ+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP OWNED BY "+roleQ)
		_, _ = pool.Exec(context.Background(), "DROP ROLE "+roleQ)
	})
	for _, g := range workerGrants {
		if _, err := pool.Exec(ctx, sprintf(g, schema, roleQ)); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	ws, err := pgstore.Open(ctx, u.String(), pgstore.WithSchema(owner.Schema()))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	cfg := snapshotter.DefaultConfig()
	cfg.Store = ws
	w, err := snapshotter.New(cfg, snapshotter.For[exampledomain.Account](reg, eventsource.DefaultPolicy()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	if n, err := w.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep as the worker role = %d, %v", n, err)
	}
	if s, err := ws.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1); err != nil || s == nil || s.Version != 121 {
		t.Fatalf("snapshot after the sweep: %+v, %v", s, err)
	}
	if rep, err := w.Verify(ctx, exampledomain.AccountType, 0); err != nil || rep.ByStatus[snapshotter.VerifyOK] != 1 {
		t.Fatalf("verify as the worker role: %+v, %v", rep, err)
	}
	// A load that finds the snapshot stale removes it and moves the stream
	// in change order; the sweep, in change order now, writes it again.
	s, err := ws.GetSnapshot(ctx, exampledomain.AccountType, a.ID(), 1)
	if err != nil || s == nil {
		t.Fatalf("snapshot: %+v, %v", s, err)
	}
	if ok, err := ws.DeleteStaleSnapshot(ctx, *s); !ok || err != nil {
		t.Fatalf("DeleteStaleSnapshot as the worker role = %v, %v", ok, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n, err := w.Sweep(ctx)
		if err != nil {
			t.Fatalf("sweep as the worker role: %v", err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweep did not write the removed snapshot again within 30s")
		}
	}
	if n, err := w.Prune(ctx, exampledomain.AccountType, 0, snapshotter.PruneOptions{}); err != nil || n.Deleted != 1 {
		t.Fatalf("prune as the worker role = %+v, %v", n, err)
	}
	_, err = ws.Append(ctx, exampledomain.AccountType, a.ID(), eventsource.AnyVersion, []eventsource.NewEvent{{
		ID: uuid.New(), Type: exampledomain.TypeMoneyDeposited, Payload: []byte(`{"amount":1}`)}})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
		t.Fatalf("the worker role could append events (or failed otherwise): %v", err)
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
