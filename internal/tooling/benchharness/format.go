package benchharness

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// sig formats v with about three significant digits and no exponent:
// 123, 12.3, 1.23, 0.123, 0.0123.
func sig(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	d := 2 - int(math.Floor(math.Log10(math.Abs(v))))
	d = max(0, min(d, 6))
	return strconv.FormatFloat(v, 'f', d, 64)
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return sig(float64(d) / float64(time.Millisecond)) }

// us formats a duration in microseconds.
func us(d time.Duration) string { return sig(float64(d) / float64(time.Microsecond)) }

// times formats a ratio as a speed-up or factor: "1,234×", "12.3×".
func times(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "—"
	}
	if r >= 1000 {
		return thousands(int64(math.Round(r))) + "×"
	}
	return sig(r) + "×"
}

// pct formats a relative change as a signed percentage.
func pct(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "—"
	}
	return fmt.Sprintf("%+.1f%%", r*100)
}

// rate formats a per-second figure with thousands separators.
func rate(v float64) string {
	if v >= 100 {
		return thousands(int64(math.Round(v)))
	}
	return sig(v)
}

// thousands formats n with comma separators: 100,000.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// mb formats bytes as MB (10^6 bytes).
func mb(b float64) string { return sig(b / 1e6) }
