package chaos

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Save is one line of the load generator's --record file: a save it saw
// succeed, which appended versions First to Last of one aggregate.
type Save struct {
	Type        string
	ID          string // canonical lower-case UUID
	First, Last int64
}

// FailedSave is a line of the record file for a save that returned an
// error: it tried to append versions First to Last (0 and 0 when it failed
// before, loading the aggregate), and may have committed them anyway (a
// connection lost after the commit).
type FailedSave struct {
	Save
	// At is when the save returned its error.
	At time.Time
	// Err is the error.
	Err string
}

// StreamKey names one aggregate's stream.
type StreamKey struct {
	Type, ID string
}

// String renders the key as "Type id".
func (k StreamKey) String() string { return k.Type + " " + k.ID }

// ParseRecord reads a record file: one "Type id first last" line per
// successful save, and one "Type id first last failed <time> <error>"
// line per failed save (example-app load --record). Blank lines are
// skipped; anything else that does not parse is an error naming the line,
// since a record that cannot be read cannot prove anything.
func ParseRecord(r io.Reader) ([]Save, []FailedSave, error) {
	var saves []Save
	var failed []FailedSave
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		s, f, err := parseRecordLine(line)
		switch {
		case err != nil:
			return saves, failed, fmt.Errorf("record line %d %q: %w", n, line, err)
		case f != nil:
			failed = append(failed, *f)
		default:
			saves = append(saves, s)
		}
	}
	if err := sc.Err(); err != nil {
		return saves, failed, fmt.Errorf("read record: %w", err)
	}
	return saves, failed, nil
}

// parseRecordLine returns a successful save, or a failed one.
func parseRecordLine(line string) (Save, *FailedSave, error) {
	f := strings.Fields(line)
	failed := len(f) > 4 && f[4] == "failed"
	switch {
	case failed && len(f) < 6:
		return Save{}, nil, fmt.Errorf("a failed save wants 6 or more fields (type id first last failed time [error]), got %d", len(f))
	case !failed && len(f) != 4:
		return Save{}, nil, fmt.Errorf("want 4 fields (type id first last), got %d", len(f))
	}
	id, err := uuid.Parse(f[1])
	if err != nil {
		return Save{}, nil, fmt.Errorf("aggregate id: %w", err)
	}
	first, err1 := strconv.ParseInt(f[2], 10, 64)
	last, err2 := strconv.ParseInt(f[3], 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		return Save{}, nil, fmt.Errorf("versions %q %q are not whole numbers", f[2], f[3])
	case failed && first == 0 && last == 0: // failed before it appended
	case first < 1 || last < first:
		return Save{}, nil, fmt.Errorf("version range %d..%d is empty or starts below 1", first, last)
	}
	s := Save{Type: f[0], ID: id.String(), First: first, Last: last}
	if !failed {
		return s, nil, nil
	}
	at, err := time.Parse(time.RFC3339Nano, f[5])
	if err != nil {
		return Save{}, nil, fmt.Errorf("time of the failure: %w", err)
	}
	return Save{}, &FailedSave{Save: s, At: at, Err: strings.Join(f[6:], " ")}, nil
}

// StoredStream is what the event store holds for one aggregate: the
// versions of its events (in any order, duplicates included) and the head
// version of its streams row (0 when there is no streams row).
type StoredStream struct {
	Versions []int64
	Head     int64
}

// EventReport compares the saves the load generator recorded with the
// event store.
type EventReport struct {
	// RecordedSaves and RecordedEvents count the record file's successful
	// saves; FailedSaves its failed ones.
	RecordedSaves, RecordedEvents, FailedSaves int64
	// Streams and StoredEvents count the store.
	Streams      int
	StoredEvents int64

	// Lost counts recorded events that are not in the store. Must be 0.
	Lost int64
	// RecordedTwice counts versions claimed by two recorded saves of one
	// aggregate: two saves both saw the same version succeed. Must be 0.
	RecordedTwice int64
	// Duplicates counts versions stored more than once. Must be 0.
	Duplicates int64
	// Gaps counts versions missing below a stream's highest version. Must be 0.
	Gaps int64
	// HeadMismatches counts streams whose streams-table head differs from
	// their highest event version. Must be 0.
	HeadMismatches int

	// InFlight counts stored events after the last recorded version of
	// their stream: saves that committed but whose result the generator
	// never saw (in flight when it stopped). InFlightStreams counts their
	// streams; it is at most the generator's concurrency.
	InFlight        int64
	InFlightStreams int
	// InDoubt counts stored events that no successful save covers but a
	// failed one tried to append: saves that committed although they
	// returned an error (the answer to the commit was lost), wherever
	// they are in the stream. InDoubtSaves counts those saves.
	InDoubt      int64
	InDoubtSaves int
	// InDoubtExamples describes the first of those saves, one line each.
	InDoubtExamples []string
	// Unaccounted counts stored events that no recorded save covers but
	// that lie below a recorded one: a committed save the generator did
	// not count as a success, nor as a failure, in the middle of a run.
	// Must be 0.
	Unaccounted int64

	// Problems describes the first problems found, one line each.
	Problems []string
}

// maxProblems bounds the problem lines a report keeps.
const maxProblems = 30

func (r *EventReport) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// OK reports whether the store holds every recorded save exactly once,
// with contiguous versions.
func (r *EventReport) OK() bool {
	return r.Lost == 0 && r.RecordedTwice == 0 && r.Duplicates == 0 && r.Gaps == 0 &&
		r.HeadMismatches == 0 && r.Unaccounted == 0
}

// CheckEvents compares the recorded saves with the stored streams: every
// version a successful save recorded must be stored exactly once and
// claimed by one save, every stream must hold versions 1..head without
// gaps or duplicates and agree with its streams row, and stored events no
// successful save recorded must be either ones a failed save tried to
// append (in doubt: committed although the save returned an error) or at
// the tail of a stream (a save in flight when the generator stopped).
func CheckEvents(saves []Save, failed []FailedSave, stored map[StreamKey]StoredStream) EventReport {
	var r EventReport
	recorded := map[StreamKey][]Save{}
	for _, s := range saves {
		k := StreamKey{s.Type, s.ID}
		recorded[k] = append(recorded[k], s)
		r.RecordedSaves++
		r.RecordedEvents += s.Last - s.First + 1
	}
	tried := map[StreamKey][]FailedSave{}
	for _, f := range failed {
		r.FailedSaves++
		if f.First > 0 {
			k := StreamKey{f.Type, f.ID}
			tried[k] = append(tried[k], f)
		}
	}
	keys := make([]StreamKey, 0, len(stored)+len(recorded))
	for k := range stored {
		keys = append(keys, k)
	}
	for k := range recorded {
		if _, ok := stored[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b StreamKey) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	r.Streams = len(stored)
	for _, k := range keys {
		checkStream(&r, k, recorded[k], tried[k], stored[k])
	}
	return r
}

func checkStream(r *EventReport, k StreamKey, saves []Save, failed []FailedSave, st StoredStream) {
	vs := slices.Clone(st.Versions)
	slices.Sort(vs)
	r.StoredEvents += int64(len(vs))
	count := map[int64]int{}
	var maxV int64
	for _, v := range vs {
		count[v]++
		maxV = max(maxV, v)
	}
	for _, v := range vs {
		if v < 1 {
			r.Gaps++ // a version below 1 can only be corruption; count it with the gaps
			r.problem("%s: stored version %d", k, v)
		}
	}
	for v, n := range count {
		if n > 1 {
			r.Duplicates += int64(n - 1)
			r.problem("%s: version %d stored %d times", k, v, n)
		}
	}
	var missing []int64
	for v := int64(1); v <= maxV; v++ {
		if count[v] == 0 {
			r.Gaps++
			if len(missing) < 5 {
				missing = append(missing, v)
			}
		}
	}
	if len(missing) > 0 {
		r.problem("%s: versions missing below v%d, e.g. %v", k, maxV, missing)
	}
	if len(vs) > 0 && st.Head != maxV {
		r.HeadMismatches++
		r.problem("%s: streams row says head v%d, events end at v%d", k, st.Head, maxV)
	}
	claimed := map[int64]int{}
	var lastRecorded int64
	for _, s := range saves {
		var lost []int64
		for v := s.First; v <= s.Last; v++ {
			claimed[v]++
			if claimed[v] == 2 {
				r.RecordedTwice++
				r.problem("%s: version %d recorded by two saves", k, v)
			}
			if count[v] == 0 {
				r.Lost++
				lost = append(lost, v)
			}
		}
		if len(lost) > 0 {
			r.problem("%s: recorded save v%d..v%d lost versions %v", k, s.First, s.Last, lost)
		}
		lastRecorded = max(lastRecorded, s.Last)
	}
	for _, f := range failed { // the failed saves that committed
		for v := f.First; v <= f.Last; v++ {
			if count[v] > 0 && claimed[v] == 0 {
				r.InDoubtSaves++
				if len(r.InDoubtExamples) < maxProblems {
					r.InDoubtExamples = append(r.InDoubtExamples, fmt.Sprintf("%s v%d..v%d failed at %s: %s",
						k, f.First, f.Last, f.At.Format("15:04:05.000"), f.Err))
				}
				break
			}
		}
	}
	var unaccounted []int64
	tail := 0
	for v := range count {
		if claimed[v] > 0 {
			continue
		}
		if slices.ContainsFunc(failed, func(f FailedSave) bool { return f.First <= v && v <= f.Last }) {
			r.InDoubt++
			continue
		}
		if v > lastRecorded {
			r.InFlight++
			tail++
			continue
		}
		r.Unaccounted++
		unaccounted = append(unaccounted, v)
	}
	if tail > 0 {
		r.InFlightStreams++
	}
	if len(unaccounted) > 0 {
		slices.Sort(unaccounted)
		r.problem("%s: stored versions %v below the last recorded v%d were never recorded as saved", k, unaccounted, lastRecorded)
	}
}

// Window is a period in which a server was down: From is when the fault
// began, To when the server accepted connections again.
type Window struct{ From, To time.Time }

// UnexplainedFailures returns the failed saves that did not fail during a
// window or within grace after its end: with PostgreSQL down a save must
// fail, and right after it is back a save may still meet a pooled
// connection that died with the old server; any other failure is a
// defect.
func UnexplainedFailures(failed []FailedSave, windows []Window, grace time.Duration) []FailedSave {
	var out []FailedSave
	for _, f := range failed {
		if !slices.ContainsFunc(windows, func(w Window) bool { return !f.At.Before(w.From) && !f.At.After(w.To.Add(grace)) }) {
			out = append(out, f)
		}
	}
	return out
}
