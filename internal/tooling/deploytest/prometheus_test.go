package deploytest

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.Error(w, "no such page", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, `# TYPE c_total counter
c_total{reason="a"} 1
c_total{kind="b"} 2
# TYPE h_seconds histogram
h_seconds_bucket{type="A",le="1"} 1
h_seconds_bucket{type="A",le="+Inf"} 1
h_seconds_sum{type="A"} 0.5
h_seconds_count{type="A"} 1
# TYPE g gauge
g 3
`)
	}))
	defer srv.Close()
	s, err := Scrape(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, name := range slices.Sorted(maps.Keys(s)) {
		got = append(got, name+"{"+strings.Join(slices.Sorted(maps.Keys(s[name])), ",")+"}")
	}
	want := "c_total{kind,reason} g{} h_seconds_bucket{le,type} h_seconds_count{type} h_seconds_sum{type}"
	if strings.Join(got, " ") != want {
		t.Errorf("series:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if _, err := Scrape(srv.URL + "/other"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404: %v", err)
	}
}
