package eventsource

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/google/uuid"
)

// newEventID returns the id of an event raised at the time at: a UUIDv7
// (RFC 9562) whose 48-bit timestamp is at's Unix milliseconds, whose
// 12-bit rand_a is the fraction of that millisecond at microsecond
// precision (RFC 9562 section 6.2, method 3), and whose other 62 bits are
// random, from crypto/rand. Ids raised later sort later (to the
// microsecond), so a store's unique index on them grows at its right
// edge instead of at random places; nothing relies on that order, which
// is not strict within a microsecond or across processes (versions order
// a stream). It reads no clock of its own (at is the event's OccurredAt)
// and allocates nothing. See docs/decisions/0035-time-ordered-event-ids.md.
func newEventID(at time.Time) uuid.UUID {
	var id uuid.UUID
	_, _ = rand.Read(id[8:]) // never fails (Go 1.24+); fills without allocating
	us := at.UnixMicro()
	binary.BigEndian.PutUint64(id[:8], uint64(us/1000)<<16|0x7000|uint64(us%1000*4096/1000))
	id[8] = id[8]&0x3f | 0x80 // the RFC 9562 variant
	return id
}
