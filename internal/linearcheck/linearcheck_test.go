package linearcheck

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/evsnap/evsnap/lib/eventsource"
)

func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func TestCheck(t *testing.T) {
	app := func(s string, exp int64) Input { return Input{Stream: s, Kind: Append, Expected: exp, N: 1} }
	read := func(s string) Input { return Input{Stream: s, Kind: Read} }
	for _, tc := range []struct {
		name  string
		ops   []porcupine.Operation
		legal bool
	}{
		{"sequential", []porcupine.Operation{
			op(0, 0, 1, app("a", 0), Output{}),
			op(0, 2, 3, read("a"), Output{Version: 1}),
			op(1, 4, 5, app("a", 0), Output{Conflict: true, Actual: 1}),
		}, true},
		{"concurrent read sees either side", []porcupine.Operation{
			op(0, 0, 10, app("a", 0), Output{}),
			op(1, 1, 2, read("a"), Output{Version: 0}),
			op(2, 3, 4, read("a"), Output{Version: 1}),
		}, true},
		{"two winners at one version", []porcupine.Operation{
			op(0, 0, 10, app("a", 0), Output{}),
			op(1, 0, 10, app("a", 0), Output{}),
		}, false},
		{"stale read after a completed append", []porcupine.Operation{
			op(0, 0, 1, app("a", 0), Output{}),
			op(1, 2, 3, read("a"), Output{Version: 0}),
		}, false},
		{"read goes back", []porcupine.Operation{
			op(0, 0, 1, app("a", 0), Output{}),
			op(0, 2, 3, app("a", 1), Output{}),
			op(1, 4, 5, read("a"), Output{Version: 2}),
			op(1, 6, 7, read("a"), Output{Version: 1}),
		}, false},
		{"conflict reports a wrong actual", []porcupine.Operation{
			op(0, 0, 1, app("a", 0), Output{}),
			op(1, 2, 3, app("a", 0), Output{Conflict: true, Actual: 0}),
		}, false},
		{"conflict at the right version", []porcupine.Operation{
			op(0, 2, 3, app("a", 0), Output{Conflict: true, Actual: 0}),
		}, false},
		{"unknown append may have happened", []porcupine.Operation{
			op(0, 0, 1, app("a", 0), Output{Unknown: true}),
			op(1, 2, 3, read("a"), Output{Version: 1}),
		}, true},
		{"unknown append may not have happened", []porcupine.Operation{
			op(0, 0, 1, app("a", 0), Output{Unknown: true}),
			op(1, 2, 3, read("a"), Output{Version: 0}),
		}, true},
		{"streams are independent", []porcupine.Operation{
			op(0, 0, 1, app("a", 0), Output{}),
			op(1, 2, 3, read("b"), Output{Version: 0}),
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.ops, 5*time.Second)
			if tc.legal && err != nil {
				t.Fatalf("legal history refused: %v", err)
			}
			if !tc.legal && (err == nil || !strings.Contains(err.Error(), "not linearizable")) {
				t.Fatalf("illegal history: got %v, want a linearizability error", err)
			}
		})
	}
}

func TestHistoryRecordsConcurrently(t *testing.T) {
	h := New()
	done := make(chan struct{})
	for c := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 50 {
				h.Begin(c, Input{Stream: "s", Kind: Read})(Output{})
			}
		}()
	}
	for range 4 {
		<-done
	}
	if h.Len() != 200 {
		t.Fatalf("Len = %d, want 200", h.Len())
	}
	if err := h.Check(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestAppendOutput(t *testing.T) {
	if out, err := AppendOutput(nil); err != nil || out != (Output{}) {
		t.Errorf("success: %+v, %v", out, err)
	}
	conflict := fmt.Errorf("save: %w", &eventsource.ConflictError{Expected: 3, Actual: 5})
	if out, err := AppendOutput(conflict); err != nil || out != (Output{Conflict: true, Actual: 5}) {
		t.Errorf("conflict: %+v, %v", out, err)
	}
	lost := errors.New("conn closed")
	if out, err := AppendOutput(lost); err != lost || out != (Output{Unknown: true}) {
		t.Errorf("other error: %+v, %v; want Unknown and the error", out, err)
	}
}
