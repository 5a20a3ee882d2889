package benchharness

import (
	"math"
	"slices"
	"time"
)

// Number is what the statistics functions accept: durations, counts and
// rates.
type Number interface {
	~int | ~int64 | ~float64
}

// Percentile returns the p-th quantile (0 <= p <= 1) of xs, interpolating
// linearly between the two closest ranks (the "linear" method of NumPy and
// R's type 7). It does not modify xs. An empty xs gives 0.
func Percentile[T Number](xs []T, p float64) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted[T Number](s []T, p float64) T {
	p = math.Max(0, math.Min(1, p))
	pos := p * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	if lo == hi {
		return s[lo]
	}
	frac := pos - float64(lo)
	v := float64(s[lo]) + frac*(float64(s[hi])-float64(s[lo]))
	half := 0.5
	if T(half) != 0 { // a floating-point type
		return T(v)
	}
	return T(math.Round(v))
}

// Median returns the median of xs (the mean of the two middle values when
// len(xs) is even). An empty xs gives 0.
func Median[T Number](xs []T) T { return Percentile(xs, 0.5) }

// Quantiles returns the p50 and p99 of a latency sample.
func Quantiles(xs []time.Duration) (p50, p99 time.Duration) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, 0.5), percentileSorted(s, 0.99)
}
