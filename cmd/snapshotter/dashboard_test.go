package main

// The Grafana dashboard (deploy/grafana) and the Prometheus rules
// (deploy/prometheus) are checked here, next to the other deploy tests:
// the dashboard's shape, and that every query of both names series that
// exist, read from the /metrics of a running worker (this binary's `run`)
// and of a running application (a repository and notice publisher with
// OpenTelemetry's Prometheus exporter), or recorded by a rule.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/syncbuf"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/tooling/deploytest"
	"github.com/evsnap/evsnap/internal/tooling/natstest"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

const (
	dashboardFile = "deploy/grafana/evsnap-dashboard.json"
	rulesFile     = "deploy/prometheus/evsnap-rules.yml"
	// datasourceVar is the data source variable every panel and query
	// variable uses, so the dashboard imports into any Grafana.
	datasourceVar = "${datasource}"
	gridColumns   = 24
)

// promDatasource is the reference every panel and query must carry.
var promDatasource = deploytest.DatasourceRef{Type: "prometheus", UID: datasourceVar}

func loadDashboard(t *testing.T) *deploytest.Dashboard {
	t.Helper()
	d, err := deploytest.GrafanaDashboard(filepath.Join(repoRoot, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func loadRules(t *testing.T) *deploytest.RuleFile {
	t.Helper()
	f, err := deploytest.PrometheusRules(filepath.Join(repoRoot, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestDeployDashboard checks the dashboard's shape: its data source is a
// variable every panel and query uses; panels have unique ids and titles,
// descriptions, and places on the grid that do not overlap; every query
// parses once Grafana's variables are expanded; and it shows every
// recording rule and names every alert of the rules file.
func TestDeployDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 36 || d.Title == "" || d.UID == "" || d.ID != nil {
		t.Errorf("%s: schemaVersion %d, title %q, uid %q, id %v: want schema 36 or later (datasource references by uid), a title and uid, and a null id",
			dashboardFile, d.SchemaVersion, d.Title, d.UID, d.ID)
	}

	vars := map[string]deploytest.Variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			t.Errorf("variable %s defined twice", v.Name)
		}
		vars[v.Name] = v
		switch {
		case v.Name == "datasource":
			if v.Type != "datasource" || v.Query != "prometheus" {
				t.Errorf("variable datasource: type %q, query %q; want type datasource, query prometheus", v.Type, v.Query)
			}
		case v.Type != "query":
			t.Errorf("variable %s: type %q; want query", v.Name, v.Type)
		case v.Datasource == nil || *v.Datasource != promDatasource:
			t.Errorf("variable %s: datasource %+v; want %+v", v.Name, v.Datasource, promDatasource)
		}
	}
	if _, ok := vars["datasource"]; !ok {
		t.Errorf("%s: no datasource variable", dashboardFile)
	}

	ids, titles := map[int]string{}, map[string]bool{}
	var cells [][2]int // (x, y) of every grid cell a panel covers
	for _, p := range d.AllPanels() {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("%s: id not positive or used by %s too", where, prev)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.X < 0 || g.Y < 0 || g.W < 1 || g.H < 1 || g.X+g.W > gridColumns {
			t.Errorf("%s: gridPos %+v outside the %d-column grid", where, g, gridColumns)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if slices.Contains(cells, [2]int{x, y}) {
					t.Errorf("%s: gridPos %+v overlaps another panel at (%d, %d)", where, g, x, y)
				}
				cells = append(cells, [2]int{x, y})
			}
		}
		if p.Title == "" || titles[p.Title] {
			t.Errorf("%s: title empty or used by another panel", where)
		}
		titles[p.Title] = true
		if p.Type == "row" {
			if len(p.Targets) > 0 || g.H != 1 || g.W != gridColumns {
				t.Errorf("%s: a row has no queries and spans the grid's width, 1 high: %d queries, gridPos %+v", where, len(p.Targets), g)
			}
			continue
		}
		if p.Type != "timeseries" && p.Type != "stat" {
			t.Errorf("%s: type %q; want row, timeseries or stat", where, p.Type)
		}
		if len(p.Description) < 40 {
			t.Errorf("%s: description %q: say what it shows and what to do when it looks wrong", where, p.Description)
		}
		if p.Datasource == nil || *p.Datasource != promDatasource {
			t.Errorf("%s: datasource %+v; want %+v", where, p.Datasource, promDatasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.Datasource == nil || *q.Datasource != promDatasource {
				t.Errorf("%s query %s: datasource %+v; want %+v", where, q.RefID, q.Datasource, promDatasource)
			}
			if q.RefID == "" || refs[q.RefID] {
				t.Errorf("%s: query refId %q empty or repeated", where, q.RefID)
			}
			refs[q.RefID] = true
		}
	}

	used := map[string]bool{}
	for _, q := range dashboardSelectors(t, d) {
		for _, s := range q.sels {
			used[s.Metric] = true
		}
	}
	var descriptions strings.Builder
	for _, p := range d.AllPanels() {
		descriptions.WriteString(p.Description + "\n")
	}
	for _, r := range loadRules(t).Rules() {
		if r.Record != "" && !used[r.Record] {
			t.Errorf("recording rule %s is on no panel", r.Record)
		}
		if r.Alert != "" && !strings.Contains(descriptions.String(), "Alert: "+r.Alert) {
			t.Errorf("alert %s: no panel description says what it shows (\"Alert: %s\")", r.Alert, r.Alert)
		}
	}
}

// querySelectors are the selectors of one query, and where it is.
type querySelectors struct {
	file, where string
	sels        []deploytest.Selector
}

// dashboardSelectors returns the selectors of every query of d, failing
// the test for a query that does not parse or uses a variable the
// dashboard does not define.
func dashboardSelectors(t *testing.T, d *deploytest.Dashboard) []querySelectors {
	t.Helper()
	qs, err := d.Queries()
	if err != nil {
		t.Fatal(err)
	}
	var out []querySelectors
	for _, q := range qs {
		expr, err := d.ExpandVariables(q.Expr, ".*")
		var sels []deploytest.Selector
		if err == nil {
			sels, err = deploytest.PromQLSelectors(expr)
		}
		if err != nil {
			t.Errorf("%s: %s\n\t%s", q.Where, err, q.Expr)
		}
		out = append(out, querySelectors{dashboardFile, q.Where, sels})
	}
	return out
}

// ruleSelectors returns the selectors of every rule's expression and the
// names the recording rules record, failing the test for an expression
// that does not parse.
func ruleSelectors(t *testing.T, f *deploytest.RuleFile) ([]querySelectors, map[string]bool) {
	t.Helper()
	var out []querySelectors
	recorded := map[string]bool{}
	for _, r := range f.Rules() {
		where := "rule " + r.Name()
		sels, err := deploytest.PromQLSelectors(r.Expr)
		if err != nil {
			t.Errorf("%s: %s\n\t%s", where, err, r.Expr)
		}
		out = append(out, querySelectors{rulesFile, where, sels})
		if r.Record != "" {
			recorded[r.Record] = true
		}
	}
	return out, recorded
}

// TestDeployQueriesNameExportedSeries runs a worker and an application,
// drives saves through them until every kind of series the dashboard and
// the rules read has appeared (snapshots from notices and from the sweep,
// a stale snapshot's fallback, a dropped notice, a notice that could not
// be sent), scrapes both /metrics, and checks that every series each
// dashboard query and rule names is exported by one of them, recorded by
// a rule, or Prometheus's own `up`, with the labels its matchers name.
func TestDeployQueriesNameExportedSeries(t *testing.T) {
	dash := dashboardSelectors(t, loadDashboard(t))
	rules, recorded := ruleSelectors(t, loadRules(t))
	if t.Failed() {
		t.FailNow()
	}
	workerURL, appURL := runWorkerAndApp(t)
	known := deploytest.Known{
		Exported:     deploytest.Series{},
		Recorded:     recorded,
		Synthetic:    map[string]bool{"up": true},
		TargetLabels: []string{"job", "instance"},
	}
	for _, url := range []string{workerURL, appURL} {
		s, err := deploytest.Scrape(url)
		if err != nil {
			t.Fatal(err)
		}
		known.Exported.Merge(s)
	}
	names := map[string]bool{}
	for _, q := range slices.Concat(dash, rules) {
		for _, s := range q.sels {
			names[s.Metric] = true
			if err := known.Check(s); err != nil {
				t.Errorf("%s: %s: %v", q.file, q.where, err)
			}
		}
	}
	t.Logf("%d dashboard queries and %d rules name %d series; the worker and the app export %d", len(dash), len(rules), len(names), len(known.Exported))
}

// runWorkerAndApp starts `snapshotter run` and an application on an
// embedded NATS server and a SQLite file, drives them, and returns the
// /metrics URLs of both once the worker has stored a snapshot from a
// notice and one from its sweep.
func runWorkerAndApp(t *testing.T) (workerURL, appURL string) {
	t.Helper()
	ctx := context.Background()
	srv := natstest.RunServer(t)
	db := filepath.Join(t.TempDir(), "evsnap.db")
	stream := natstest.UniqueName(t, "EVSNAP_DASH")
	prefix := "evsnapdash." + stream
	common := []string{"--sqlite-path", db, "--log-format", "text"}
	natsArgs := []string{"--nats-url", srv.ClientURL(), "--stream", stream, "--subject-prefix", prefix}
	var out, errOut bytes.Buffer
	if code := Main(ctx, append(append([]string{"migrate"}, common...), natsArgs...), &out, &errOut); code != 0 {
		t.Fatalf("migrate exit %d: %s%s", code, out.String(), errOut.String())
	}

	// The application: its meter provider exports to a Prometheus
	// registry served on /metrics, as an application's would.
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.WithoutCancel(ctx)) })
	appSrv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(appSrv.Close)
	store, err := sqlitestore.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	js := natstest.JetStream(t, natstest.Connect(t, srv.ClientURL()))
	quiet := slog.New(slog.DiscardHandler) // the faults below are logged
	pub, err := natsnotice.NewPublisher(js, natsnotice.WithSubjectPrefix(prefix), natsnotice.WithMeterProvider(mp), natsnotice.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.WithoutCancel(ctx)) })
	domain := exampledomain.NewRegistry()
	accounts := newAccounts(t, store, domain, eventsource.WithAppendNotifier(pub), eventsource.WithMeterProvider(mp), eventsource.WithLogger(quiet))

	// The worker.
	addr := freeAddr(t)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var runErr syncbuf.Buffer
	go func() {
		done <- Main(rctx, append(append([]string{"run", "--metrics-addr", addr, "--sweep-interval", "1s"}, common...), natsArgs...), io.Discard, &runErr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not exit within 30s of cancellation")
		}
	})
	workerURL = "http://" + addr + "/metrics"
	// waitFor waits for a sample of series whose labels include label.
	waitFor := func(what, series, label string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			for s, v := range scrape(t, addr, series+"{") {
				if strings.Contains(s, label) && v > 0 {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %s within 30s; worker log:\n%s", what, series, runErr.String())
			}
		}
	}

	// A save past the threshold (100 events): the notice leads to a
	// snapshot.
	saveAccount(t, accounts, 120)
	waitFor("a notice's snapshot", "evsnap_worker_snapshot_written_total", `evsnap_source="notice"`)

	// A save past the threshold without a notice: the sweep finds it.
	saveAccount(t, newAccounts(t, store, domain, eventsource.WithSnapshotMode(eventsource.ModeOff)), 120)
	waitFor("the sweep", "evsnap_worker_sweep_aggregates_total", `evsnap_aggregate_type="Account"`)

	// A snapshot not tied to the stream's history: the app's load falls
	// back to a full replay (reason stale).
	id := saveAccount(t, accounts, 3)
	if _, err := store.SaveSnapshot(ctx, eventsource.Snapshot{AggregateID: id, AggregateType: exampledomain.AccountType,
		Version: 3, EventID: uuid.New(), SchemaVersion: exampledomain.AccountSchemaVersion, State: []byte(`{}`), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := accounts.Load(ctx, id); err != nil {
		t.Fatal(err)
	}

	// A notice the publisher refuses (its type is not a subject token),
	// and a save whose notice cannot be sent (its publisher is closed).
	if err := pub.Notify(ctx, eventsource.Appended{AggregateType: "not a token", AggregateID: uuid.New(), FirstVersion: 1, LastVersion: 1,
		EventTypes: []string{exampledomain.TypeMoneyDeposited}, CommittedAt: time.Now()}); !errors.Is(err, natsnotice.ErrInvalidAggregateType) {
		t.Fatalf("Notify with an invalid type: %v", err)
	}
	closed, err := natsnotice.NewPublisher(js, natsnotice.WithSubjectPrefix(prefix), natsnotice.WithMeterProvider(mp), natsnotice.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if err := closed.Close(ctx); err != nil {
		t.Fatal(err)
	}
	saveAccount(t, newAccounts(t, store, domain, eventsource.WithAppendNotifier(closed), eventsource.WithMeterProvider(mp), eventsource.WithLogger(quiet)), 1)
	return workerURL, appSrv.URL + "/metrics"
}

// newAccounts returns an Account repository on store, closed at the end
// of the test.
func newAccounts(t *testing.T, store eventsource.Store, reg *eventsource.Registry, opts ...eventsource.Option) *eventsource.Repository[exampledomain.Account, *exampledomain.Account] {
	t.Helper()
	repo, err := eventsource.NewRepository[exampledomain.Account](store, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close(context.Background()) })
	return repo
}

// saveAccount saves a new account of n events through repo.
func saveAccount(t *testing.T, repo *eventsource.Repository[exampledomain.Account, *exampledomain.Account], n int) uuid.UUID {
	t.Helper()
	id := uuid.New()
	a := repo.New(id)
	_ = a.Open("dashboard", 0)
	for range n - 1 {
		_ = a.Deposit(1)
	}
	if err := repo.Save(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return id
}
