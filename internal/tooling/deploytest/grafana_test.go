package deploytest

import (
	"path/filepath"
	"strings"
	"testing"
)

const smallDashboard = `{
  "title": "t", "uid": "u", "id": null, "schemaVersion": 39,
  "templating": {"list": [
    {"name": "datasource", "type": "datasource", "query": "prometheus"},
    {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
     "query": "label_values(up{job=~\"a.*\"}, job)"},
    {"name": "label", "type": "query", "query": "label_values(job)"}
  ]},
  "panels": [
    {"id": 1, "type": "row", "title": "r", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}, "panels": [
      {"id": 3, "type": "stat", "title": "inner", "targets": [{"refId": "A", "expr": "up"}]}
    ]},
    {"id": 2, "type": "timeseries", "title": "p", "gridPos": {"x": 0, "y": 1, "w": 12, "h": 8},
     "targets": [{"refId": "A", "expr": "rate(x{job=~\"$job\"}[$__rate_interval])"}]}
  ]
}`

func TestGrafanaDashboard(t *testing.T) {
	dir := write(t, map[string]string{"ok.json": smallDashboard})
	d, err := GrafanaDashboard(filepath.Join(dir, "ok.json"))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := d.Queries()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range qs {
		got = append(got, q.Where+": "+q.Expr)
	}
	want := `variable job: up{job=~"a.*"}|panel 3 "inner" query A: up|panel 2 "p" query A: rate(x{job=~"$job"}[$__rate_interval])`
	if strings.Join(got, "|") != want {
		t.Errorf("Queries:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
	if e, err := d.ExpandVariables(qs[2].Expr, ".*"); err != nil || e != `rate(x{job=~".*"}[1m])` {
		t.Errorf("ExpandVariables: %q, %v", e, err)
	}
	if _, err := d.ExpandVariables(`x{a="${nope:regex}", b="$job", c="[[other]]"}`, ""); err == nil || err.Error() != "no variable nope, other in the dashboard" {
		t.Errorf("ExpandVariables of undefined variables: %v", err)
	}
}

func TestGrafanaDashboardIsStrict(t *testing.T) {
	for name, c := range map[string]struct{ json, want string }{
		"unknown field": {strings.Replace(smallDashboard, `"title": "p",`, `"title": "p", "transparent": true,`, 1), `unknown field "transparent"`},
		"wrong type":    {strings.Replace(smallDashboard, `"w": 12`, `"w": "12"`, 1), "cannot unmarshal string"},
		"trailing data": {smallDashboard + "{}", "data after the dashboard object"},
		"not JSON":      {"title: t", "invalid character"},
	} {
		dir := write(t, map[string]string{"d.json": c.json})
		if _, err := GrafanaDashboard(filepath.Join(dir, "d.json")); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", name, err, c.want)
		}
	}
	bad := write(t, map[string]string{"d.json": strings.Replace(smallDashboard, `label_values(job)`, `query_result(up)`, 1)})
	d, err := GrafanaDashboard(filepath.Join(bad, "d.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Queries(); err == nil || !strings.Contains(err.Error(), "variable label: query \"query_result(up)\"") {
		t.Errorf("a variable query that is not label_values: %v", err)
	}
}

func TestPrometheusRulesIsStrict(t *testing.T) {
	dir := write(t, map[string]string{
		"ok.yml": `groups:
- name: g
  rules:
  - record: a:b
    expr: sum(x)
  - alert: A
    expr: a:b > 0
    for: 5m
    annotations: {summary: s}
`,
		"bad.yml": `groups:
- name: g
  rules:
  - alert: A
    expression: x > 0
`,
	})
	f, err := PrometheusRules(filepath.Join(dir, "ok.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if rs := f.Rules(); len(rs) != 2 || rs[0].Name() != "a:b" || rs[1].Name() != "A" || rs[1].Expr != "a:b > 0" {
		t.Errorf("rules: %+v", rs)
	}
	if _, err := PrometheusRules(filepath.Join(dir, "bad.yml")); err == nil || !strings.Contains(err.Error(), `unknown field "expression"`) {
		t.Errorf("a rule with an unknown field: %v", err)
	}
}
