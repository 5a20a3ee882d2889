package storetest

import (
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// ownedEvents is the length of ownedStream's stream.
const ownedEvents = 2500

// ownedStream appends one stream built to cross a store's pages, windows
// and payload chunks: ownedEvents events of 40 event types, with payloads
// of 20 to 60 bytes and every 50th one of 3,000.
func ownedStream(t *testing.T, s eventsource.EventStore) (typ string, id uuid.UUID) {
	t.Helper()
	typ, id = uniqueType("Owned"), uuid.New()
	evs := make([]eventsource.NewEvent, ownedEvents)
	for i := range evs {
		note := strings.Repeat("x", i%40)
		if i%50 == 3 {
			note = strings.Repeat("y", 3000)
		}
		evs[i] = eventsource.NewEvent{ID: uuid.New(), Type: fmt.Sprintf("Type%d", i%40),
			Payload: fmt.Appendf(nil, `{"n": %d, "note": "%s"}`, i, note), OccurredAt: time.Now().UTC()}
	}
	mustAppend(t, s, typ, id, eventsource.NoStream, evs)
	return typ, id
}

// checkOwned reads the stream through read twice. The events of the first
// read must be the caller's own: kept after the read, appended to and
// overwritten, they change neither each other nor what the store holds.
func checkOwned(t *testing.T, read func() iter.Seq2[eventsource.RecordedEvent, error]) {
	t.Helper()
	collect := func() []eventsource.RecordedEvent {
		t.Helper()
		var out []eventsource.RecordedEvent
		for rec, err := range read() {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, rec)
		}
		return out
	}
	got := collect()
	if len(got) != ownedEvents {
		t.Fatalf("read %d events, want %d", len(got), ownedEvents)
	}
	stored := make([]string, len(got))
	for i, rec := range got {
		if want := fmt.Sprintf("Type%d", i%40); rec.Type != want || rec.Version != int64(i+1) {
			t.Fatalf("event %d: type %s v%d, want %s v%d", i+1, rec.Type, rec.Version, want, i+1)
		}
		stored[i] = string(rec.Payload)
	}
	for i := range got {
		got[i].Payload = append(got[i].Payload, "tail"...)
	}
	for i, rec := range got {
		if string(rec.Payload) != stored[i]+"tail" {
			t.Fatalf("event %d's payload changed when another's grew: %q", i+1, rec.Payload)
		}
	}
	for i := range got {
		for j := range got[i].Payload {
			got[i].Payload[j] = '!'
		}
	}
	for i, rec := range got {
		if string(rec.Payload) != strings.Repeat("!", len(stored[i])+4) {
			t.Fatalf("event %d's payload changed with another's: %q", i+1, rec.Payload)
		}
	}
	for i, rec := range collect() {
		if string(rec.Payload) != stored[i] {
			t.Fatalf("changing the events a read returned changed the stored event %d: %q", i+1, rec.Payload)
		}
	}
}

func testReadEventsOwned(t *testing.T, s eventsource.EventStore) {
	typ, id := ownedStream(t, s)
	checkOwned(t, func() iter.Seq2[eventsource.RecordedEvent, error] {
		return s.ReadEvents(t.Context(), typ, id, 0)
	})
}
