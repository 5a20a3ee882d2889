// Package policy decides when an aggregate is due a snapshot. One
// implementation serves every snapshot mode: the repository's sync and
// background modes and the out-of-process snapshotter worker ask the same
// question with the same inputs.
//
// Users configure policies with eventsource.Policy, the one vocabulary of
// the repository (eventsource.WithSnapshotPolicy), the worker
// (snapshotter.For) and the EVSNAP_POLICY string (eventsource.ParsePolicy).
package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Input is what a policy decides on.
type Input struct {
	// AggregateType is the aggregate's type name.
	AggregateType string
	// HeadVersion is the aggregate's version after the save being decided.
	HeadVersion int64
	// SnapshotVersion is the version of the latest stored snapshot, 0 for none.
	SnapshotVersion int64
	// Appended lists the event types the save appended (or, for the worker,
	// the event types named by the notices being handled).
	Appended []string
}

// EventsSinceSnapshot returns how many events the stored snapshot is behind
// the head.
func (in Input) EventsSinceSnapshot() int64 {
	if in.SnapshotVersion >= in.HeadVersion {
		return 0
	}
	return in.HeadVersion - in.SnapshotVersion
}

// Policy decides whether a snapshot is due. Implementations are pure and
// safe for concurrent use, and monotone in the snapshot's age: if a
// policy is not due for a snapshot at version v, it is not due for any
// snapshot at a version above v either. So an input with no snapshot
// (SnapshotVersion 0) that is not due is not due whatever is stored,
// which lets the worker decide such notices without a read.
type Policy interface {
	// Due reports whether to take a snapshot at in.HeadVersion.
	Due(in Input) bool
	// String describes the policy for logs and errors.
	String() string
}

// Threshold is due when the head is at least N events past the last stored
// snapshot. A save that jumps past the threshold still snapshots (unlike a
// "version is a multiple of N" rule, which a multi-event save can skip).
type Threshold int64

// NewThreshold returns a threshold policy, or an error for n < 1.
func NewThreshold(n int64) (Threshold, error) {
	if n < 1 {
		return 0, fmt.Errorf("snapshot threshold must be at least 1, got %d", n)
	}
	return Threshold(n), nil
}

// Due implements Policy.
func (t Threshold) Due(in Input) bool {
	return t > 0 && in.EventsSinceSnapshot() >= int64(t)
}

// String implements Policy.
func (t Threshold) String() string { return fmt.Sprintf("threshold(%d)", int64(t)) }

// Milestones is due when the save appended an event of one of its types,
// and the snapshot is behind the head.
type Milestones struct {
	types []string
}

// NewMilestones returns a milestone policy for the given event types. Empty
// names are an error.
func NewMilestones(types ...string) (Milestones, error) {
	out := make([]string, 0, len(types))
	for _, t := range types {
		if strings.TrimSpace(t) == "" {
			return Milestones{}, fmt.Errorf("milestone event type must not be empty")
		}
		out = append(out, t)
	}
	slices.Sort(out)
	return Milestones{types: slices.Compact(out)}, nil
}

// Types returns the milestone event types, sorted.
func (m Milestones) Types() []string { return slices.Clone(m.types) }

// Due implements Policy.
func (m Milestones) Due(in Input) bool {
	if in.EventsSinceSnapshot() == 0 {
		return false
	}
	for _, t := range in.Appended {
		if _, ok := slices.BinarySearch(m.types, t); ok {
			return true
		}
	}
	return false
}

// String implements Policy.
func (m Milestones) String() string { return "milestones(" + strings.Join(m.types, ",") + ")" }

// AnyOf is due when any of its policies is due. An empty AnyOf is never due.
type AnyOf []Policy

// Due implements Policy.
func (a AnyOf) Due(in Input) bool {
	for _, p := range a {
		if p.Due(in) {
			return true
		}
	}
	return false
}

// String implements Policy.
func (a AnyOf) String() string {
	parts := make([]string, len(a))
	for i, p := range a {
		parts[i] = p.String()
	}
	return "any(" + strings.Join(parts, ",") + ")"
}

// Never is never due: the manual mode's policy.
type Never struct{}

// Due implements Policy.
func (Never) Due(Input) bool { return false }

// String implements Policy.
func (Never) String() string { return "never" }

// Of is the rule of a threshold (0: none) and milestone event types (none:
// none): either alone, or both as AnyOf. The types must be valid (see
// NewMilestones); with neither, Of is Never.
func Of(threshold int64, milestones []string) Policy {
	var ps AnyOf
	if threshold > 0 {
		ps = append(ps, Threshold(threshold))
	}
	if len(milestones) > 0 {
		m, _ := NewMilestones(milestones...)
		ps = append(ps, m)
	}
	switch len(ps) {
	case 0:
		return Never{}
	case 1:
		return ps[0]
	}
	return ps
}
