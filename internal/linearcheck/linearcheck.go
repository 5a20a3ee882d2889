// Package linearcheck records a history of concurrent appends (with
// expected versions) and reads of event streams and checks, with the
// porcupine linearizability checker, that every stream behaved as a
// single register of versions: each read saw the version left by the
// appends that completed before it (and perhaps some concurrent ones),
// each append with an expected version succeeded exactly when the stream
// was at that version, and a refused append reported the version the
// stream was at. The conformance suite and the chaos suite record their
// histories with it.
package linearcheck

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/evsnap/evsnap/lib/eventsource"
)

// Kind is what an operation did to a stream.
type Kind uint8

const (
	// Read read the stream's version (a load, or StreamVersion).
	Read Kind = iota + 1
	// Append appended events with an expected version.
	Append
)

// Input is what an operation asked for.
type Input struct {
	Stream string
	Kind   Kind
	// Expected is an Append's expected version, N is how many events it
	// appended.
	Expected int64
	N        int64
}

// Output is what an operation returned.
type Output struct {
	// Version is what a Read saw.
	Version int64
	// Conflict reports that an Append was refused; Actual is the version
	// its error reported (-1 when the store could not read it).
	Conflict bool
	Actual   int64
	// Unknown marks an operation whose outcome the caller could not learn
	// (a timeout, a connection lost mid-request): an Append that may or
	// may not have happened. The checker allows both.
	Unknown bool
}

// AppendOutput is the Output of an append that returned err: a success,
// or a refusal with the version a *eventsource.ConflictError reports.
// Any other error is returned as other, for the caller to judge: a test
// fails on it; a run with faults records the append as Unknown (it may
// have committed before the connection went).
func AppendOutput(err error) (out Output, other error) {
	var ce *eventsource.ConflictError
	switch {
	case err == nil:
		return Output{}, nil
	case errors.As(err, &ce):
		return Output{Conflict: true, Actual: ce.Actual}, nil
	}
	return Output{Unknown: true}, err
}

// History is a concurrency-safe record of operations.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// New returns an empty history whose clock starts now.
func New() *History { return &History{start: time.Now()} }

// Begin records the call of an operation by client and returns the
// function that records its return; call it exactly once.
func (h *History) Begin(client int, in Input) (end func(Output)) {
	call := time.Since(h.start).Nanoseconds()
	return func(out Output) {
		ret := time.Since(h.start).Nanoseconds()
		h.mu.Lock()
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
		h.mu.Unlock()
	}
}

// Len returns how many operations have returned.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Check checks the recorded history and returns nil if every stream is
// linearizable, or an error naming a stream whose history is not (or that
// the checker could not decide within timeout).
func (h *History) Check(timeout time.Duration) error {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	return Check(ops, timeout)
}

// Check checks a history; see [History.Check].
func Check(ops []porcupine.Operation, timeout time.Duration) error {
	for _, part := range partition(ops) {
		res, _ := porcupine.CheckOperationsVerbose(model, part, timeout)
		switch res {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			return fmt.Errorf("stream %s: linearizability of %d operations not decided within %v", part[0].Input.(Input).Stream, len(part), timeout)
		default:
			return fmt.Errorf("stream %s is not linearizable as a register of versions; its %d operations:\n%s",
				part[0].Input.(Input).Stream, len(part), describe(part))
		}
	}
	return nil
}

// partition splits ops by stream: streams are independent registers.
func partition(ops []porcupine.Operation) [][]porcupine.Operation {
	by := map[string][]porcupine.Operation{}
	var names []string
	for _, op := range ops {
		s := op.Input.(Input).Stream
		if _, ok := by[s]; !ok {
			names = append(names, s)
		}
		by[s] = append(by[s], op)
	}
	sort.Strings(names)
	out := make([][]porcupine.Operation, 0, len(names))
	for _, n := range names {
		out = append(out, by[n])
	}
	return out
}

// model is a stream as a register holding its version (0: no stream).
// An append whose outcome is unknown leads to both states, so the model is
// nondeterministic.
var model = (&porcupine.NondeterministicModel{
	Partition: partition,
	Init:      func() []any { return []any{int64(0)} },
	Step: func(state, input, output any) []any {
		v, in, out := state.(int64), input.(Input), output.(Output)
		ok := false
		switch {
		case in.Kind == Read:
			ok = out.Version == v
		case in.Kind != Append:
		case out.Unknown:
			if v == in.Expected {
				return []any{v, v + in.N} // it happened, or it did not
			}
			return []any{v}
		case out.Conflict:
			ok = v != in.Expected && (out.Actual == -1 || out.Actual == v)
		default:
			if v == in.Expected {
				return []any{v + in.N}
			}
		}
		if ok {
			return []any{v}
		}
		return nil
	},
	DescribeOperation: func(input, output any) string { return describeOp(input.(Input), output.(Output)) },
}).ToModel()

func describeOp(in Input, out Output) string {
	switch {
	case in.Kind == Read:
		return fmt.Sprintf("read -> v%d", out.Version)
	case out.Unknown:
		return fmt.Sprintf("append %d at v%d -> unknown", in.N, in.Expected)
	case out.Conflict:
		return fmt.Sprintf("append %d at v%d -> conflict (actual v%d)", in.N, in.Expected, out.Actual)
	default:
		return fmt.Sprintf("append %d at v%d -> ok", in.N, in.Expected)
	}
}

// describe lists ops in call order, at most 60 of them.
func describe(ops []porcupine.Operation) string {
	ops = append([]porcupine.Operation(nil), ops...)
	sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	var b strings.Builder
	for i, op := range ops {
		if i == 60 {
			fmt.Fprintf(&b, "  ... %d more\n", len(ops)-i)
			break
		}
		fmt.Fprintf(&b, "  client %d [%d µs, %d µs]: %s\n", op.ClientId, op.Call/1000, op.Return/1000, describeOp(op.Input.(Input), op.Output.(Output)))
	}
	return b.String()
}
