package eventsource

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Event ids are RFC 9562 version 7 UUIDs carrying the time they were
// raised at (the millisecond in the timestamp, its microseconds in
// rand_a), sort by that time, stay unique at one instant, and cost no
// allocation.
func TestNewEventID(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 123_456_000, time.UTC) // .123456
	id := newEventID(at)
	if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
		t.Fatalf("%s: version %d, variant %v; want 7, RFC 4122", id, id.Version(), id.Variant())
	}
	if sec, nsec := id.Time().UnixTime(); time.Unix(sec, nsec).UnixMilli() != at.UnixMilli() {
		t.Fatalf("%s carries %v, want the millisecond of %v", id, time.Unix(sec, nsec).UTC(), at)
	}
	if randA := int64(id[6]&0x0f)<<8 | int64(id[7]); randA != 456*4096/1000 {
		t.Fatalf("%s: rand_a %d, want the 456 µs of the millisecond as %d/4096", id, randA, 456*4096/1000)
	}
	prev := newEventID(at)
	for _, d := range []time.Duration{time.Microsecond, 999 * time.Microsecond, time.Millisecond, time.Hour} {
		next := newEventID(at.Add(d))
		if bytes.Compare(prev[:], next[:]) >= 0 {
			t.Fatalf("the id raised %v after %v sorts before it: %s, %s", d, at, next, prev)
		}
	}
	seen := make(map[uuid.UUID]bool, 100_000)
	for range 100_000 {
		id := newEventID(at)
		if seen[id] {
			t.Fatalf("id %s made twice at one instant", id)
		}
		seen[id] = true
	}
	if raceEnabled {
		return // allocation counts are not exact under the race detector
	}
	if n := testing.AllocsPerRun(100, func() { _ = newEventID(at) }); n != 0 {
		t.Fatalf("newEventID allocates %v times", n)
	}
}
