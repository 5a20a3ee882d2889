package benchharness

import (
	"errors"
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// Point is one measurement in a [Chart]; both coordinates must be positive
// (the axes are logarithmic).
type Point struct{ X, Y float64 }

// Series is one line of a [Chart].
type Series struct {
	Name   string
	Color  string // any SVG colour; a palette colour when empty
	Dashed bool
	Points []Point
}

// Chart is a line chart with logarithmic x and y axes, rendered as a
// self-contained SVG document by [Chart.SVG].
type Chart struct {
	Title          string
	XLabel, YLabel string
	// XFormat and YFormat label the decade ticks (default: the number).
	XFormat, YFormat func(float64) string
	// XTicks, when set, are the values labelled on the x axis instead of
	// its decades (for example replica counts 1, 2, 4, 8).
	XTicks []float64
	Series []Series
	// Width and Height in pixels (default 800×460).
	Width, Height int
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

// decade formats a power of ten plainly: 0.001, 1, 1000.
func decade(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// decades returns the powers of ten that enclose every value.
func decades(vals []float64) (lo, hi int) {
	lo, hi = math.MaxInt, math.MinInt
	for _, v := range vals {
		l := math.Log10(v)
		lo = min(lo, int(math.Floor(l+1e-9)))
		hi = max(hi, int(math.Ceil(l-1e-9)))
	}
	if hi == lo {
		hi++
	}
	return lo, hi
}

// SVG renders the chart. It fails if no series has a point, or a point is
// not positive.
func (c Chart) SVG() ([]byte, error) {
	w, h := c.Width, c.Height
	if w == 0 {
		w = 800
	}
	if h == 0 {
		h = 460
	}
	var xs, ys []float64
	for _, s := range c.Series {
		for _, p := range s.Points {
			if !(p.X > 0 && p.Y > 0) || math.IsInf(p.X, 0) || math.IsInf(p.Y, 0) {
				return nil, fmt.Errorf("chart: series %q has point (%v, %v); log axes need positive values", s.Name, p.X, p.Y)
			}
			xs, ys = append(xs, p.X), append(ys, p.Y)
		}
	}
	if len(xs) == 0 {
		return nil, errors.New("chart: no points")
	}
	xf, yf := c.XFormat, c.YFormat
	if xf == nil {
		xf = decade
	}
	if yf == nil {
		yf = decade
	}
	x0, x1 := decades(xs)
	y0, y1 := decades(ys)
	const left, right, top, bottom = 78, 250, 40, 56
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	px := func(x float64) float64 { return left + (math.Log10(x)-float64(x0))/float64(x1-x0)*pw }
	py := func(y float64) float64 { return top + ph - (math.Log10(y)-float64(y0))/float64(y1-y0)*ph }
	esc := html.EscapeString

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, esc(c.Title))
	// Grid and ticks: decades labelled, 2..9 faint.
	b.WriteString(`<g class="grid" stroke="#e4e4e4" stroke-width="1">` + "\n")
	for d := x0; d <= x1; d++ {
		for m := 1; m <= 9 && (m == 1 || d < x1); m++ {
			v := float64(m) * math.Pow10(d)
			op := "1"
			if m > 1 {
				op = "0.45"
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" opacity="%s"/>`+"\n", px(v), top, px(v), top+ph, op)
		}
	}
	for d := y0; d <= y1; d++ {
		for m := 1; m <= 9 && (m == 1 || d < y1); m++ {
			v := float64(m) * math.Pow10(d)
			op := "1"
			if m > 1 {
				op = "0.45"
			}
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" opacity="%s"/>`+"\n", left, py(v), left+pw, py(v), op)
		}
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	b.WriteString(`<g class="ticks" fill="#333">` + "\n")
	xticks := c.XTicks
	if len(xticks) == 0 {
		for d := x0; d <= x1; d++ {
			xticks = append(xticks, math.Pow10(d))
		}
	}
	for _, v := range xticks {
		if !(v > 0) {
			return nil, fmt.Errorf("chart: x tick %v; log axes need positive values", v)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(v), top+ph+18, esc(xf(v)))
	}
	for d := y0; d <= y1; d++ {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py(math.Pow10(d))+4, esc(yf(math.Pow10(d))))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<text class="xlabel" x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", left+pw/2, h-14, esc(c.XLabel))
	fmt.Fprintf(&b, `<text class="ylabel" transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+ph/2, esc(c.YLabel))

	// Series and legend.
	lx, ly := float64(w-right+16), float64(top+8)
	for i, s := range c.Series {
		color := s.Color
		if color == "" {
			color = palette[i%len(palette)]
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts []string
		for _, p := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.X), py(p.Y)))
		}
		fmt.Fprintf(&b, `<g class="series" data-name="%s">`+"\n", esc(s.Name))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", esc(color), dash, strings.Join(pts, " "))
		for _, p := range s.Points {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p.X), py(p.Y), esc(color))
		}
		b.WriteString("</g>\n")
		y := ly + float64(i)*20
		fmt.Fprintf(&b, `<g class="legend"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/><text x="%.1f" y="%.1f">%s</text></g>`+"\n",
			lx, y, lx+26, y, esc(color), dash, lx+32, y+4, esc(s.Name))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String()), nil
}
