package deploytest

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// RuleFile is a Prometheus rule file (rule_files:), read strictly by
// [PrometheusRules].
type RuleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []Rule `json:"rules"`
	} `json:"groups"`
}

// Rule is a recording rule (Record set) or an alerting rule (Alert set).
type Rule struct {
	Record        string            `json:"record,omitempty"`
	Alert         string            `json:"alert,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Name is the rule's recorded series or alert name.
func (r Rule) Name() string { return r.Record + r.Alert }

// PrometheusRules reads a rule file; a field Prometheus's rule files do
// not have is an error.
func PrometheusRules(file string) (*RuleFile, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var f RuleFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &f, nil
}

// Rules returns every rule of every group, in order.
func (f *RuleFile) Rules() []Rule {
	var out []Rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// Series maps each series name a scrape exposes to the label names its
// samples carry (a histogram is its _bucket, _sum and _count series).
type Series map[string]map[string]bool

// Scrape reads url (a /metrics endpoint) in Prometheus's text format and
// returns its series.
func Scrape(url string) (Series, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	out := Series{}
	for name, mf := range families {
		suffixes := []string{""}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			suffixes = []string{"_bucket", "_sum", "_count"}
		case dto.MetricType_SUMMARY:
			suffixes = []string{"", "_sum", "_count"}
		}
		for _, sfx := range suffixes {
			labels := map[string]bool{}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = true
				}
			}
			switch {
			case sfx == "_bucket":
				labels["le"] = true
			case sfx == "" && mf.GetType() == dto.MetricType_SUMMARY:
				labels["quantile"] = true
			}
			out[name+sfx] = labels
		}
	}
	return out, nil
}

// Merge adds the series of o to s.
func (s Series) Merge(o Series) {
	for name, labels := range o {
		if s[name] == nil {
			s[name] = map[string]bool{}
		}
		for l := range labels {
			s[name][l] = true
		}
	}
}

// Known is what a query may name.
type Known struct {
	// Exported is what running processes export on /metrics.
	Exported Series
	// Recorded holds the recording rules' series names.
	Recorded map[string]bool
	// Synthetic holds the series Prometheus itself writes for each scrape
	// (up, scrape_duration_seconds, ...).
	Synthetic map[string]bool
	// TargetLabels are the labels Prometheus adds to every scraped series
	// (job, instance, and those relabelling adds).
	TargetLabels []string
}

// Check returns an error if sel names a series that is not known, or a
// label an exported series does not carry. (The labels of recorded and
// synthetic series are not checked.)
func (k Known) Check(sel Selector) error {
	if k.Recorded[sel.Metric] || k.Synthetic[sel.Metric] {
		return nil
	}
	labels, ok := k.Exported[sel.Metric]
	if !ok {
		return fmt.Errorf("no series %s: no running process exports it and no recording rule records it", sel.Metric)
	}
	var missing []string
	for _, l := range sel.Labels {
		if !labels[l] && !slices.Contains(k.TargetLabels, l) {
			missing = append(missing, l)
		}
	}
	if missing != nil {
		have := slices.Sorted(maps.Keys(labels))
		return fmt.Errorf("%s has no label %s (it has %s, and the target labels %s)", sel.Metric,
			strings.Join(missing, ", "), strings.Join(have, ", "), strings.Join(k.TargetLabels, ", "))
	}
	return nil
}
