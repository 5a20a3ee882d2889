package eventsource

import "testing"

type noteApplied struct{}

func (noteApplied) EventType() string { return "NoteApplied" }

// Root's hooks, which the repository calls through Aggregate, work on the
// zero-state root the package asserts them with.
func TestRootHooks(t *testing.T) {
	var r Root[noState]
	var h rootHooks = &r
	h.applyEvent(noteApplied{})
	if r.Version() != 1 || h.rootCore().version != 1 {
		t.Fatalf("version %d after one event, want 1", r.Version())
	}
	data, err := h.exportState(jsonCodec{})
	if err != nil || string(data) != "{}" {
		t.Fatalf("exportState = %q, %v", data, err)
	}
	if err := h.restoreState(jsonCodec{}, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	h.resetState()
}
