//go:build !race

package eventsource

// raceEnabled: the race detector is off, so allocation counts are exact.
const raceEnabled = false
