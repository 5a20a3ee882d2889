package benchharness

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestChartSVGIsValidXMLWithEverySeries(t *testing.T) {
	r := &Report{}
	for _, b := range []string{Memstore, SQLite, Postgres} {
		for i, n := range []int{100, 1_000, 10_000, 100_000} {
			r.Load = append(r.Load, LoadRow{Backend: b, Events: n,
				None: time.Duration(n) * 2 * time.Microsecond, Head: time.Duration(30+i) * time.Microsecond})
		}
	}
	svg, err := r.LoadChartSVG()
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var series, polylines, legends int
	var root string
	var texts []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not valid XML: %v\n%s", err, svg)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
			for _, a := range el.Attr {
				if a.Name.Local == "class" && a.Value == "series" {
					series++
				}
				if a.Name.Local == "class" && a.Value == "legend" {
					legends++
				}
			}
			if el.Name.Local == "polyline" {
				polylines++
			}
		case xml.CharData:
			texts = append(texts, string(el))
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	if series != 6 || polylines != 6 || legends != 6 {
		t.Errorf("got %d series, %d polylines, %d legend entries; want 6 of each (3 backends × with/without snapshot)", series, polylines, legends)
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"events in the stream", "load time (ms)", "postgres, no snapshot", "memstore, snapshot at head", "100,000"} {
		if !strings.Contains(all, want) {
			t.Errorf("SVG text lacks %q", want)
		}
	}
}

func TestChartRefusesNonPositive(t *testing.T) {
	c := Chart{Series: []Series{{Name: "x", Points: []Point{{100, 0}}}}}
	if _, err := c.SVG(); err == nil {
		t.Error("a zero value on a log axis was accepted")
	}
	if _, err := (Chart{}).SVG(); err == nil {
		t.Error("an empty chart was accepted")
	}
}
