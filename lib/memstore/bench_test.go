package memstore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
)

// benchEvent is an event of the size of the tutorial's deposit.
func benchEvent() eventsource.NewEvent {
	return eventsource.NewEvent{ID: uuid.New(), Type: "Deposited", Payload: []byte(`{"amount":10}`)}
}

// BenchmarkReadEvents reads the last n events of a 1,000-event stream:
// 1 is what a load from a snapshot at the head reads.
func BenchmarkReadEvents(b *testing.B) {
	ctx := context.Background()
	s := memstore.NewEventStore()
	id := uuid.New()
	const head = 1000
	for v := range head {
		if _, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), []eventsource.NewEvent{benchEvent()}); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{1, 51, 1000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				got := 0
				for _, err := range s.ReadEvents(ctx, "Account", id, head-int64(n)) {
					if err != nil {
						b.Fatal(err)
					}
					got++
				}
				if got != n {
					b.Fatalf("read %d events, want %d", got, n)
				}
			}
		})
	}
}

// BenchmarkAppend appends one event at a time to one stream, with event
// ids of version 7 made in time order (as the repository makes them) or
// of version 4 (random). The ids are made from a counter, so that making
// them costs next to nothing.
func BenchmarkAppend(b *testing.B) {
	for _, version := range []byte{7, 4} {
		b.Run(fmt.Sprintf("ids=v%d", version), func(b *testing.B) {
			ctx := context.Background()
			s := memstore.NewEventStore()
			id := uuid.New()
			events := []eventsource.NewEvent{benchEvent()}
			prefix := uuid.New()
			start := uint64(time.Now().UnixMilli()) << 16
			b.ReportAllocs()
			v := 0
			for b.Loop() {
				e := &events[0].ID
				if version == 7 {
					binary.BigEndian.PutUint64(e[:8], start+uint64(v)>>4<<16) // 16 events a millisecond
					binary.BigEndian.PutUint64(e[8:], uint64(v)*0x9e3779b97f4a7c15)
				} else { // random-looking: a hash of the counter over a random prefix
					copy(e[:8], prefix[:8])
					binary.BigEndian.PutUint64(e[8:], uint64(v)*0x9e3779b97f4a7c15)
					binary.BigEndian.PutUint64(e[:8], binary.BigEndian.Uint64(prefix[:8])^uint64(v)*0xbf58476d1ce4e5b9)
				}
				e[6] = version<<4 | e[6]&0x0f
				e[8] = e[8]&0x3f | 0x80
				if _, err := s.Append(ctx, "Account", id, eventsource.ExpectedVersion(v), events); err != nil {
					b.Fatal(err)
				}
				v++
			}
		})
	}
}
