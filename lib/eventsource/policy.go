package eventsource

import (
	"strconv"
	"strings"

	"github.com/evsnap/evsnap/internal/policy"
)

// maxThreshold is the largest snapshot threshold a policy takes.
const maxThreshold = 1_000_000_000

// Policy says when an aggregate is due a snapshot: when its snapshot is at
// least Threshold events behind the head, or when a save appended one of
// the Milestones event types. One vocabulary serves everywhere: the
// repository's sync and background modes ([WithSnapshotPolicy]), the
// snapshotter worker (snapshotter.For) and the EVSNAP_POLICY string
// ([ParsePolicy] reads what [Policy.String] writes).
type Policy struct {
	// Threshold is how many events past the stored snapshot make a
	// snapshot due (0: none, then Milestones must be given).
	Threshold int
	// Milestones are event types whose append makes a snapshot due.
	Milestones []string
}

// DefaultPolicy is a threshold of 100 events: what a repository uses
// without [WithSnapshotPolicy].
func DefaultPolicy() Policy { return Policy{Threshold: defaultSnapshotThreshold} }

// Validate reports what is wrong with p, as an error matching
// ErrInvalidOption.
func (p Policy) Validate() error {
	if p.Threshold < 0 || p.Threshold > maxThreshold {
		return invalid("snapshot threshold %d is outside 0-%d", p.Threshold, maxThreshold)
	}
	if p.Threshold == 0 && len(p.Milestones) == 0 {
		return invalid("a snapshot policy needs a threshold of at least 1 or milestone event types")
	}
	if _, err := policy.NewMilestones(p.Milestones...); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// String renders p in the form ParsePolicy reads:
// "threshold:100,milestones:OrderPaid|OrderShipped".
func (p Policy) String() string {
	var parts []string
	if p.Threshold > 0 {
		parts = append(parts, "threshold:"+strconv.Itoa(p.Threshold))
	}
	if len(p.Milestones) > 0 {
		parts = append(parts, "milestones:"+strings.Join(p.Milestones, "|"))
	}
	return strings.Join(parts, ",")
}

// rule returns the decision rule p describes; p must be valid.
func (p Policy) rule() policy.Policy { return policy.Of(int64(p.Threshold), p.Milestones) }

// ParsePolicy parses a policy as flags and env vars write it:
// comma-separated "threshold:N" and "milestones:A|B|C" terms, e.g.
// "threshold:100,milestones:OrderPaid|OrderShipped". Errors match
// ErrInvalidOption and name the term at fault.
func ParsePolicy(spec string) (Policy, error) {
	var p Policy
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return p, invalid("empty policy: want threshold:N and/or milestones:A|B")
	}
	seen := map[string]bool{}
	for term := range strings.SplitSeq(spec, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(term), ":")
		key = strings.ToLower(strings.TrimSpace(key))
		val = strings.TrimSpace(val)
		if !ok || val == "" {
			return Policy{}, invalid("policy term %q: want threshold:N or milestones:A|B", term)
		}
		if seen[key] {
			return Policy{}, invalid("policy %q sets %s twice", spec, key)
		}
		seen[key] = true
		switch key {
		case "threshold":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > maxThreshold {
				return Policy{}, invalid("policy threshold %q: want a whole number from 1 to %d", val, maxThreshold)
			}
			p.Threshold = n
		case "milestones":
			for m := range strings.SplitSeq(val, "|") {
				m = strings.TrimSpace(m)
				if m == "" {
					return Policy{}, invalid("policy milestones %q: empty event type", val)
				}
				p.Milestones = append(p.Milestones, m)
			}
		default:
			return Policy{}, invalid("policy term %q: unknown key %q (want threshold or milestones)", term, key)
		}
	}
	return p, p.Validate()
}
