package benchharness

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		p    float64
		want float64
	}{
		{nil, 0.5, 0},
		{[]float64{7}, 0.99, 7},
		{[]float64{3, 1, 2}, 0.5, 2},
		{[]float64{4, 1, 3, 2}, 0.5, 2.5},
		{[]float64{1, 2, 3, 4, 5}, 0, 1},
		{[]float64{1, 2, 3, 4, 5}, 1, 5},
		{[]float64{1, 2, 3, 4, 5}, 0.25, 2},
		{[]float64{10, 20}, 0.99, 19.9},
	} {
		if got := Percentile(c.xs, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.xs, c.p, got, c.want)
		}
	}
}

func TestMedianDoesNotModifyInput(t *testing.T) {
	xs := []time.Duration{5, 1, 4, 2, 3}
	if got := Median(xs); got != 3 {
		t.Errorf("Median = %v, want 3", got)
	}
	if xs[0] != 5 || xs[4] != 3 {
		t.Errorf("Median sorted its input: %v", xs)
	}
	if got := Median([]int{1, 2}); got != 2 { // 1.5 rounds to 2 for integers
		t.Errorf("Median([1 2]) = %v, want 2", got)
	}
}

func TestQuantiles(t *testing.T) {
	xs := make([]time.Duration, 100)
	for i := range xs {
		xs[i] = time.Duration(100-i) * time.Millisecond // 100ms..1ms, unsorted
	}
	p50, p99 := Quantiles(xs)
	if p50 != 50500*time.Microsecond {
		t.Errorf("p50 = %v, want 50.5ms", p50)
	}
	if p99 != 99010*time.Microsecond {
		t.Errorf("p99 = %v, want 99.01ms", p99)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{sig(123.456), "123"},
		{sig(12.3456), "12.3"},
		{sig(0.0123456), "0.0123"},
		{ms(1500 * time.Microsecond), "1.50"},
		{thousands(100000), "100,000"},
		{thousands(999), "999"},
		{thousands(-1234567), "-1,234,567"},
		{times(1234.4), "1,234×"},
		{times(1.5), "1.50×"},
		{pct(0.123), "+12.3%"},
		{pct(-0.05), "-5.0%"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
