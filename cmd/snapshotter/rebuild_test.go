package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

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
