package deploytest

import (
	"fmt"
	"strings"
	"testing"
)

func TestPromQLSelectors(t *testing.T) {
	for _, c := range []struct {
		expr string
		want string // selectors as metric{labels}, space-separated
	}{
		{`up`, `up{}`},
		{`evsnap:notice_backlog:max > 1000 and deriv(evsnap:notice_backlog:max[10m]) > 0`,
			`evsnap:notice_backlog:max{} evsnap:notice_backlog:max{}`},
		{`sum by (evsnap_aggregate_type) (rate(x_bucket{le="5", job=~"a|b"}[5m])) / sum by (evsnap_aggregate_type) (rate(x_count[5m]))`,
			`x_bucket{le,job} x_count{}`},
		{`max without (instance, pod) (a)`, `a{}`},
		{`histogram_quantile(0.99, sum(rate(h_bucket[1m])) by (le))`, `h_bucket{}`},
		{`count(up{job!="x"} == bool 0) or vector(0)`, `up{job}`},
		{`a / on (instance) group_left (pod) b offset 5m`, `a{} b{}`},
		{`-a + -1.5e3 * .5 - 0x1f ^ Inf`, `a{}`},
		{`max_over_time(a[30m:1m]) @ end()`, `a{}`},
		{`rate({__name__="a", b='c',}[5m]) # a comment`, `a{b}`},
		{"label_replace(time(), \"x\", `y`, \"\", \"\")", ``},
		{"sum by (le)\n  (rate(a_bucket[1h30m]))", `a_bucket{}`},
	} {
		sels, err := PromQLSelectors(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, fmt.Sprintf("%s{%s}", s.Metric, strings.Join(s.Labels, ",")))
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("%s: selectors %s, want %s", c.expr, g, c.want)
		}
	}
}

func TestPromQLSelectorsRejectsMalformed(t *testing.T) {
	for _, c := range []struct{ expr, want string }{
		{``, "operand expected"},
		{`rate(a[5m]`, "unbalanced ("},
		{`sum(a))`, "unbalanced )"},
		{`a b`, "operator expected"},
		{`a +`, "operand expected"},
		{`* a`, "operator without a left operand"},
		{`rat(a[5m])`, "PromQL has no function rat"},
		{`a{job="x"`, `"}" or , expected`},
		{`a{job=x}`, "matcher expected"},
		{`a{job~"x"}`, `unexpected '~'`},
		{`a[5]`, "a range needs a duration"},
		{`a[5m`, "] expected"},
		{`[5m]`, "a range needs a selector"},
		{`rate(a[$__rate_interval])`, `unexpected '$'`},
		{`a{job="x}`, "unterminated string"},
		{`sum by a`, "by needs a label list"},
		{`{job="x"}`, "a selector without a metric name"},
		{`a offset x`, "offset needs a duration"},
		{`1.2.3`, "neither a number nor a duration"},
		{`clamp_min(a,)`, "operand expected before )"},
		{`sum`, "sum needs its arguments"},
	} {
		_, err := PromQLSelectors(c.expr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err %v, want one containing %q", c.expr, err, c.want)
		}
	}
}

func TestKnownCheck(t *testing.T) {
	k := Known{
		Exported:     Series{"evsnap_worker_ready": {}, "h_bucket": {"le": true, "evsnap_aggregate_type": true}},
		Recorded:     map[string]bool{"evsnap:notice_backlog:max": true},
		Synthetic:    map[string]bool{"up": true},
		TargetLabels: []string{"job", "instance"},
	}
	for _, ok := range []Selector{{Metric: "evsnap_worker_ready", Labels: []string{"job", "instance"}},
		{Metric: "h_bucket", Labels: []string{"le", "evsnap_aggregate_type"}}, {Metric: "evsnap:notice_backlog:max", Labels: []string{"anything"}}, {Metric: "up"}} {
		if err := k.Check(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for sel, want := range map[*Selector]string{
		{Metric: "evsnap_worker_redy"}:                             "no series evsnap_worker_redy",
		{Metric: "h_bucket", Labels: []string{"evsnap_aggregate"}}: "h_bucket has no label evsnap_aggregate (it has evsnap_aggregate_type, le",
	} {
		if err := k.Check(*sel); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want one containing %q", *sel, err, want)
		}
	}
}
