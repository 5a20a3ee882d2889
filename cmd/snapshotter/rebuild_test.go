package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// rebuild's progress, written to something that is not a terminal (a
// file, a CI log), comes as whole lines, never carriage returns.
func TestRebuildProgressIsWholeLinesOffATerminal(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "evsnap.db")
	b, err := storeopen.Open(ctx, storeopen.Options{SQLitePath: db})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	repo, err := eventsource.NewRepository[exampledomain.Account](b.Store, exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		a := repo.New(uuid.New())
		_ = a.Open("rebuild", 10)
		if err := repo.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	_ = repo.Close(ctx)
	_ = b.Close()
	var out, errOut bytes.Buffer
	if code := Main(ctx, []string{"rebuild", "--type", "Account", "--sqlite-path", db, "--log-format", "text"}, &out, &errOut); code != 0 {
		t.Fatalf("rebuild exit %d: %s%s", code, out.String(), errOut.String())
	}
	if strings.Contains(out.String(), "\r") || !strings.HasPrefix(out.String(), "rebuilt 3 Account snapshots in ") {
		t.Fatalf("rebuild output %q: want whole lines, the last saying 3 were rebuilt", out.String())
	}
}

// accountsDB is a migrated SQLite file with n Accounts (a few events, no
// snapshots), whose ids it returns in id order.
func accountsDB(t *testing.T, n int) (string, []uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "evsnap.db")
	b, err := storeopen.Open(ctx, storeopen.Options{SQLitePath: db})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	repo, err := eventsource.NewRepository[exampledomain.Account](b.Store, exampledomain.NewRegistry(), eventsource.WithSnapshotMode(eventsource.ModeOff))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close(ctx)
	var ids []uuid.UUID
	for range n {
		a := repo.New(uuid.New())
		_ = a.Open("resume", 10)
		_ = a.Deposit(5)
		if err := repo.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID())
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return db, ids
}

// A rebuild stopped by its context (a signal) says where it stopped and
// how to resume; resumed from there, it rebuilds the rest, and together
// the two runs rebuild every aggregate once.
func TestRebuildStopsAndResumes(t *testing.T) {
	db, ids := accountsDB(t, 6)
	common := []string{"--type", "Account", "--sqlite-path", db, "--log-format", "text"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut bytes.Buffer
	go func() { // a signal once the first snapshot is stored: at 1 a second, 5 are still to do
		defer cancel()
		b, err := storeopen.Open(ctx, storeopen.Options{SQLitePath: db})
		if err != nil {
			t.Error(err)
			return
		}
		defer b.Close()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			for in, err := range b.Store.ListAggregates(ctx, exampledomain.AccountType, eventsource.ListOptions{MinBehind: -1}) {
				if err == nil && in.SnapshotVersion > 0 {
					time.Sleep(200 * time.Millisecond) // the rebuild has counted it; the next is due at 1 s
					return
				}
			}
		}
		t.Error("no snapshot stored within 30 s")
	}()
	if code := Main(ctx, append([]string{"rebuild", "--rate", "1"}, common...), &out, &errOut); code != 1 {
		t.Fatalf("stopped rebuild: exit %d, want 1: %s%s", code, out.String(), errOut.String())
	}
	m := regexp.MustCompile(`rebuilt (\d+) Account snapshots(?s:.*)--resume-after ([0-9a-f-]{36})\n`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("stopped rebuild output %q: want how many and the --resume-after to continue with", out.String())
	}
	first, _ := strconv.Atoi(m[1])
	if first < 1 || first >= len(ids) || m[2] != ids[first-1].String() {
		t.Fatalf("stopped after %s with %d rebuilt; want the %d-th lowest id %v", m[2], first, first, ids)
	}
	out.Reset()
	if code := Main(context.Background(), append([]string{"rebuild", "--rate", "1000", "--resume-after", m[2]}, common...), &out, &errOut); code != 0 {
		t.Fatalf("resumed rebuild: exit %d: %s%s", code, out.String(), errOut.String())
	}
	if want := fmt.Sprintf("rebuilt %d Account snapshots", len(ids)-first); !strings.HasPrefix(out.String(), want) {
		t.Fatalf("resumed rebuild output %q, want %q", out.String(), want)
	}
}

// prune --resume-after prunes only the aggregates above the id; a run from
// the start then prunes the rest; --batch sets the batch (a batch covers
// that many aggregates that have a snapshot, in id order).
func TestPruneResumeAfter(t *testing.T) {
	db, ids := accountsDB(t, 7)
	common := []string{"--type", "Account", "--sqlite-path", db, "--log-format", "text"}
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), append([]string{"rebuild", "--rate", "1000"}, common...), &out, &errOut); code != 0 {
		t.Fatalf("rebuild: exit %d: %s%s", code, out.String(), errOut.String())
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		// Batches of 2 over the 4 above ids[2], and one that finds the end.
		{[]string{"--batch", "2", "--resume-after", ids[2].String()}, "deleted 4 Account snapshots with schema version below 2 in 3 batches"},
		// The aggregates with a snapshot left: ids[0..2].
		{[]string{"--batch", "2"}, "deleted 3 Account snapshots with schema version below 2 in 2 batches"},
		{nil, "deleted 0 Account snapshots with schema version below 2 in 1 batch"},
	} {
		out.Reset()
		if code := Main(context.Background(), append(append([]string{"prune", "--schema-below", "2"}, c.args...), common...), &out, &errOut); code != 0 {
			t.Fatalf("prune %v: exit %d: %s%s", c.args, code, out.String(), errOut.String())
		}
		if !strings.HasPrefix(out.String(), c.want) {
			t.Errorf("prune %v output %q, want %q", c.args, out.String(), c.want)
		}
	}
}
