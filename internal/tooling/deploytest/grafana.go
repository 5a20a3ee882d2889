package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Dashboard is the part of Grafana's dashboard JSON model (schema version
// 39) that evsnap's dashboard uses. [GrafanaDashboard] rejects any other
// field, so a dashboard of another shape fails to load instead of being
// half read.
type Dashboard struct {
	Title         string                    `json:"title"`
	UID           string                    `json:"uid"`
	Description   string                    `json:"description"`
	ID            *int                      `json:"id"` // null: Grafana assigns it on import
	Version       int                       `json:"version"`
	SchemaVersion int                       `json:"schemaVersion"`
	Editable      bool                      `json:"editable"`
	GraphTooltip  int                       `json:"graphTooltip"`
	Refresh       string                    `json:"refresh"`
	Tags          []string                  `json:"tags"`
	Timezone      string                    `json:"timezone"`
	Time          struct{ From, To string } `json:"time"`
	Templating    struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	Panels []Panel `json:"panels"`
}

// Variable is a templating variable: the data source (type "datasource",
// Query the plugin id) or a query over it (type "query", Query a Grafana
// Prometheus variable query such as label_values(metric, label)).
type Variable struct {
	Name        string         `json:"name"`
	Label       string         `json:"label"`
	Description string         `json:"description"`
	Type        string         `json:"type"`
	Query       string         `json:"query"`
	Datasource  *DatasourceRef `json:"datasource"`
	Refresh     int            `json:"refresh"`
	Regex       string         `json:"regex"`
	Sort        int            `json:"sort"`
	Hide        int            `json:"hide"`
	IncludeAll  bool           `json:"includeAll"`
	AllValue    string         `json:"allValue"`
	Multi       bool           `json:"multi"`
}

// DatasourceRef names a data source by plugin type and uid (here the
// variable "${datasource}").
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Panel is a row ("row": a title over the panels below it) or a
// visualisation ("timeseries", "stat") with its queries.
type Panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *DatasourceRef `json:"datasource"`
	GridPos     GridPos        `json:"gridPos"`
	Collapsed   bool           `json:"collapsed"` // rows
	Panels      []Panel        `json:"panels"`    // a collapsed row's panels
	Targets     []Target       `json:"targets"`
	FieldConfig *FieldConfig   `json:"fieldConfig"`
	Options     *PanelOptions  `json:"options"`
}

// GridPos places a panel on Grafana's 24-column grid.
type GridPos struct {
	X int `json:"x"`
	Y int `json:"y"`
	W int `json:"w"`
	H int `json:"h"`
}

// Target is one PromQL query of a panel.
type Target struct {
	RefID        string         `json:"refId"`
	Datasource   *DatasourceRef `json:"datasource"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	EditorMode   string         `json:"editorMode"`
	Range        bool           `json:"range"`
	Instant      bool           `json:"instant"`
}

// FieldConfig is a panel's field defaults (no overrides).
type FieldConfig struct {
	Defaults struct {
		Unit     string   `json:"unit"`
		Min      *float64 `json:"min"`
		Max      *float64 `json:"max"`
		Decimals *int     `json:"decimals"`
		Color    *struct {
			Mode string `json:"mode"`
		} `json:"color"`
		Thresholds *struct {
			Mode  string `json:"mode"`
			Steps []struct {
				Color string   `json:"color"`
				Value *float64 `json:"value"` // null: the base step
			} `json:"steps"`
		} `json:"thresholds"`
		Custom *struct {
			DrawStyle       string `json:"drawStyle"`
			LineWidth       int    `json:"lineWidth"`
			FillOpacity     int    `json:"fillOpacity"`
			ShowPoints      string `json:"showPoints"`
			SpanNulls       bool   `json:"spanNulls"`
			ThresholdsStyle *struct {
				Mode string `json:"mode"`
			} `json:"thresholdsStyle"`
		} `json:"custom"`
	} `json:"defaults"`
	Overrides []struct{} `json:"overrides"`
}

// PanelOptions holds the options of the panel types the dashboard uses:
// legend and tooltip (timeseries), the rest (stat).
type PanelOptions struct {
	Legend *struct {
		DisplayMode string   `json:"displayMode"`
		Placement   string   `json:"placement"`
		ShowLegend  bool     `json:"showLegend"`
		Calcs       []string `json:"calcs"`
	} `json:"legend"`
	Tooltip *struct {
		Mode string `json:"mode"`
		Sort string `json:"sort"`
	} `json:"tooltip"`
	ReduceOptions *struct {
		Calcs  []string `json:"calcs"`
		Fields string   `json:"fields"`
		Values bool     `json:"values"`
	} `json:"reduceOptions"`
	ColorMode   string `json:"colorMode"`
	GraphMode   string `json:"graphMode"`
	JustifyMode string `json:"justifyMode"`
	Orientation string `json:"orientation"`
	TextMode    string `json:"textMode"`
}

// GrafanaDashboard reads a dashboard JSON file strictly: a field this
// package's types do not have, a value of the wrong type, or anything
// after the dashboard object is an error.
func GrafanaDashboard(file string) (*Dashboard, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Dashboard
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: data after the dashboard object", file)
	}
	return &d, nil
}

// AllPanels returns every panel, those of collapsed rows included, in
// order.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// Query is a PromQL expression of a dashboard and where it is.
type Query struct {
	Where string // `panel 3 "Title" query A`, or "variable job"
	Expr  string
}

// labelValuesRE is Grafana's label_values(selector, label) and
// label_values(label) variable query.
var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:(.*\S)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// Queries returns the PromQL of every panel query and of every query
// variable (the selector of label_values; a variable query of any other
// kind is an error).
func (d *Dashboard) Queries() ([]Query, error) {
	var out []Query
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesRE.FindStringSubmatch(v.Query)
		if m == nil {
			return nil, fmt.Errorf("variable %s: query %q: want label_values(selector, label)", v.Name, v.Query)
		}
		if m[1] != "" {
			out = append(out, Query{Where: "variable " + v.Name, Expr: m[1]})
		}
	}
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			out = append(out, Query{Where: fmt.Sprintf("panel %d %q query %s", p.ID, p.Title, t.RefID), Expr: t.Expr})
		}
	}
	return out, nil
}

// grafanaVarRE is a variable reference: $name, ${name}, ${name:format}
// or [[name]].
var grafanaVarRE = regexp.MustCompile(`\$([a-zA-Z0-9_]+)|\$\{([a-zA-Z0-9_]+)(?::[a-z]+)?\}|\[\[([a-zA-Z0-9_]+)\]\]`)

// GrafanaBuiltinIntervals are the interval variables Grafana defines for
// every dashboard, with the value [ExpandVariables] gives them.
var GrafanaBuiltinIntervals = map[string]string{"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}

// ExpandVariables replaces the variable references in a query: Grafana's
// interval variables by a duration, the dashboard's own by value. It
// returns an error naming a variable that is neither.
func (d *Dashboard) ExpandVariables(expr, value string) (string, error) {
	var missing []string
	out := grafanaVarRE.ReplaceAllStringFunc(expr, func(ref string) string {
		m := grafanaVarRE.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		if v, ok := GrafanaBuiltinIntervals[name]; ok {
			return v
		}
		for _, v := range d.Templating.List {
			if v.Name == name {
				return value
			}
		}
		missing = append(missing, name)
		return ref
	})
	if missing != nil {
		return "", fmt.Errorf("no variable %s in the dashboard", strings.Join(missing, ", "))
	}
	return out, nil
}
