// Package logattr holds the one way evsnap's logs carry a duration: a
// number of seconds under a key ending in "_seconds", as the metrics'
// units are. JSON logs then hold a number a query can compare
// (`retry_in_seconds > 10`), and text logs a plain decimal, instead of
// slog's default (nanoseconds in JSON, a Go duration string in text).
package logattr

import (
	"log/slog"
	"math"
	"strings"
	"time"
)

// Suffix ends every key that carries a duration.
const Suffix = "_seconds"

// Seconds returns d as seconds (rounded to the microsecond) under key,
// which gets Suffix if it does not end with it already.
func Seconds(key string, d time.Duration) slog.Attr {
	if !strings.HasSuffix(key, Suffix) {
		key += Suffix
	}
	return slog.Float64(key, math.Round(d.Seconds()*1e6)/1e6)
}
