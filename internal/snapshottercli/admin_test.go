package snapshottercli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/google/uuid"
)

// adminConfig is a Config on a fresh SQLite file holding one Account of
// 120 events with a snapshot at 100, whose id it returns, and one of 5
// events without a snapshot.
func adminConfig(t *testing.T) (Config, *bytes.Buffer, uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	c := DefaultConfig()
	c.Store.SQLitePath = filepath.Join(t.TempDir(), "evsnap.db")
	var out bytes.Buffer
	c.Stdout = &out
	b, err := storeopen.Open(ctx, c.Store)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	repo, err := eventsource.NewRepository[exampledomain.Account](b.Store, exampledomain.NewRegistry(),
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 100}))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close(ctx)
	save := func(a *exampledomain.Account, deposits int) {
		t.Helper()
		for range deposits {
			_ = a.Deposit(1)
		}
		if err := repo.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	long, short := repo.New(uuid.New()), repo.New(uuid.New())
	_ = long.Open("long", 0)
	save(long, 99) // v100: snapshot
	save(long, 20) // v120
	_ = short.Open("short", 0)
	save(short, 4)
	return c, &out, long.ID()
}

func TestStatsAndVerifyReport(t *testing.T) {
	ctx := context.Background()
	c, out, long := adminConfig(t)
	if err := Stats(ctx, c, exampledomain.AccountType, snapshotter.StatsOptions{Stalest: 5}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Account: 2 aggregates, 1 snapshots (of schema version 1)\naggregates by their newest snapshot's schema version: schema 1: 1\n",
		"events behind the head: min 5  p50 5  p90 5  p99 5  max 20  mean 12.5",
		"stalest 2:",
		long.String() + "  120   100       20",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stats lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := Verify(ctx, c, exampledomain.AccountType, 0); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Account: checked 2 aggregates", "  ok            1\n", "  no_snapshot   1\n", "  mismatch      0\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("verify lacks %q:\n%s", want, out.String())
		}
	}
}

func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte("consuming\n"))
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := Healthcheck(context.Background(), &out, srv.URL, time.Second); err != nil || out.String() != srv.URL+": consuming\n" {
		t.Fatalf("ready worker: %v, output %q", err, out.String())
	}
	status = http.StatusServiceUnavailable
	err := Healthcheck(context.Background(), &out, srv.URL, time.Second)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "consuming") {
		t.Fatalf("unready worker: %v; want an error with the status and the answer", err)
	}
}

// Estimated figures are printed as such: ~ on every scaled count, the
// snapshot count's margin, where the estimates come from, and the stalest
// as the sample's.
func TestStatsLabelsEstimates(t *testing.T) {
	var out bytes.Buffer
	id := uuid.New()
	printStats(&out, snapshotter.Stats{AggregateType: "Account", SchemaVersion: 1, Aggregates: 1_000_000, AggregatesEstimated: true,
		Snapshots: 950_000, SnapshotsMargin: 6000, NewestSchema: map[int]int{1: 950_000}, Sampled: 5000,
		EventsBehind: snapshotter.Distribution{Max: 300, Buckets: [5]int{300_000, 698_000, 0, 2000, 0}},
		Stalest:      []eventsource.AggregateInfo{{AggregateID: id, HeadVersion: 300}}})
	for _, want := range []string{
		"Account: ~1000000 aggregates, ~950000 (±6000) snapshots (of schema version 1)\n",
		"the number of aggregates is the store's estimate from its statistics\n",
		"estimated from a random sample of 5000 aggregates",
		"--exact reads every aggregate",
		"schema 1: ~950000",
		"events behind the head (of the sample):",
		"aggregates (estimated)",
		"~698000",
		"stalest 1 of the sample (--exact lists the stalest of all):",
		id.String() + "  300   0         300",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("estimated stats lack %q:\n%s", want, out.String())
		}
	}
}
