//go:build race

package eventsource

// raceEnabled: the race detector is on. It makes sync.Pool drop items at
// random, so allocation counts are not exact and tests skip them.
const raceEnabled = true
