package chaos

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LoadSummary is what example-app load printed: its closing "done:" line
// and the publisher counts of its last progress line.
type LoadSummary struct {
	Saves, Events       int64
	Elapsed             time.Duration
	Conflicts, Errors   int64
	NoticesPublished    int64
	NoticesDropped      int64
	HaveProgress        bool // a progress line was seen
	ProgressLines       int
	LastProgressSeconds int64
}

var (
	// done: 123 saves (456 events) in 1.5s = 82 saves/s; 0 conflicts, 0 errors[; notices published 123, dropped 0]
	loadDoneRE = regexp.MustCompile(`^done: (\d+) saves \((\d+) events\) in (\S+) = \d+ saves/s; (\d+) conflicts, (\d+) errors(?:; notices published (\d+), dropped (\d+))?$`)
	//      3s     200 saves/s  ...  notices published 600 dropped 0
	loadProgressRE = regexp.MustCompile(`^\s*(\d+)s\s.*\bnotices published (\d+) dropped (\d+)\s*$`)
)

// ErrNoSummary: the load generator's output has no "done:" line (it was
// killed, or its output format changed).
var ErrNoSummary = errors.New("no \"done:\" summary line in the load generator's output")

// ParseLoadOutput reads example-app load's standard output.
func ParseLoadOutput(out string) (LoadSummary, error) {
	var s LoadSummary
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if m := loadProgressRE.FindStringSubmatch(line); m != nil {
			s.HaveProgress = true
			s.ProgressLines++
			s.LastProgressSeconds, _ = strconv.ParseInt(m[1], 10, 64)
			s.NoticesPublished, _ = strconv.ParseInt(m[2], 10, 64)
			s.NoticesDropped, _ = strconv.ParseInt(m[3], 10, 64)
			continue
		}
		m := loadDoneRE.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		d, err := time.ParseDuration(m[3])
		if err != nil {
			return s, fmt.Errorf("load summary %q: duration: %w", line, err)
		}
		s.Saves, _ = strconv.ParseInt(m[1], 10, 64)
		s.Events, _ = strconv.ParseInt(m[2], 10, 64)
		s.Elapsed = d
		s.Conflicts, _ = strconv.ParseInt(m[4], 10, 64)
		s.Errors, _ = strconv.ParseInt(m[5], 10, 64)
		if m[6] != "" { // the final publisher counts, after a flush
			s.NoticesPublished, _ = strconv.ParseInt(m[6], 10, 64)
			s.NoticesDropped, _ = strconv.ParseInt(m[7], 10, 64)
		}
		found = true
	}
	if !found {
		return s, ErrNoSummary
	}
	return s, nil
}

// VerifyCounts is what `snapshotter verify` printed for one type.
type VerifyCounts struct {
	Type     string
	Checked  int
	ByStatus map[string]int
	// Problems are its per-aggregate problem lines.
	Problems []string
}

// Bad counts the mismatched and undecodable snapshots.
func (v VerifyCounts) Bad() int { return v.ByStatus["mismatch"] + v.ByStatus["undecodable"] }

var (
	verifyHeadRE   = regexp.MustCompile(`^(\S+): checked (\d+) aggregates$`)
	verifyStatusRE = regexp.MustCompile(`^\s+([a-z_]+)\s+(\d+)$`)
	verifyProblem  = regexp.MustCompile(`^\s+(mismatch|undecodable) \S+ at v\d+: `)
)

// verifyStatuses are the statuses snapshotter verify prints a count for.
var verifyStatuses = []string{"ok", "no_snapshot", "stale", "mismatch", "undecodable"}

// ParseVerifyOutput reads the standard output of `snapshotter verify`. It
// insists on the header and a count for every status, so a changed format
// fails loudly instead of passing silently.
func ParseVerifyOutput(out string) (VerifyCounts, error) {
	v := VerifyCounts{ByStatus: map[string]int{}}
	head := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if m := verifyHeadRE.FindStringSubmatch(line); m != nil {
			v.Type = m[1]
			v.Checked, _ = strconv.Atoi(m[2])
			head = true
			continue
		}
		if verifyProblem.MatchString(line) {
			v.Problems = append(v.Problems, strings.TrimSpace(line))
			continue
		}
		if m := verifyStatusRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[2])
			v.ByStatus[m[1]] = n
		}
	}
	if !head {
		return v, fmt.Errorf("verify output has no \"<Type>: checked N aggregates\" line: %q", out)
	}
	sum := 0
	for _, st := range verifyStatuses {
		n, ok := v.ByStatus[st]
		if !ok {
			return v, fmt.Errorf("verify output has no count for status %q: %q", st, out)
		}
		sum += n
	}
	if sum != v.Checked {
		return v, fmt.Errorf("verify output: statuses add up to %d, but it checked %d: %q", sum, v.Checked, out)
	}
	return v, nil
}

// WorkerLogStats summarises a worker's JSON log.
type WorkerLogStats struct {
	Lines, Warnings, Errors int
	// Swept is the sum of "snapshotted" over the sweep's catch-up lines.
	Swept int64
	// DrainTimeouts counts "drain timed out" warnings.
	DrainTimeouts int
	// StartsWithoutPG counts starts that found PostgreSQL unreachable
	// (and ran on; run used to exit 1 then).
	StartsWithoutPG int
	// Starts counts "snapshotter starting" lines; Stopped counts
	// "snapshotter stopped cleanly".
	Starts, Stopped int
	// Samples keeps the first warning and error messages, with counts.
	Samples map[string]int
}

var (
	levelRE = regexp.MustCompile(`"level":"([A-Z]+)"`)
	msgRE   = regexp.MustCompile(`"msg":"((?:[^"\\]|\\.)*)"`)
	sweptRE = regexp.MustCompile(`"snapshotted":(\d+)`)
)

// ParseWorkerLog reads a worker's log (slog JSON lines; other lines, such
// as the suite's own markers and panics, count as lines only, except that
// a line starting with "panic:" or "fatal error:" counts as an error).
func ParseWorkerLog(log string) WorkerLogStats {
	st := WorkerLogStats{Samples: map[string]int{}}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		st.Lines++
		if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") || strings.HasPrefix(line, "snapshotter:") {
			st.Errors++
			st.sample(line)
			continue
		}
		lm := levelRE.FindStringSubmatch(line)
		mm := msgRE.FindStringSubmatch(line)
		if lm == nil || mm == nil {
			continue
		}
		msg := mm[1]
		switch {
		case strings.HasPrefix(msg, "reconciliation sweep caught up"):
			if m := sweptRE.FindStringSubmatch(line); m != nil {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				st.Swept += n
			}
		case strings.HasPrefix(msg, "drain timed out"):
			st.DrainTimeouts++
		case strings.HasPrefix(msg, "PostgreSQL unreachable at start-up"):
			st.StartsWithoutPG++
		case msg == "snapshotter starting":
			st.Starts++
		case msg == "snapshotter stopped cleanly":
			st.Stopped++
		}
		switch lm[1] {
		case "WARN":
			st.Warnings++
			st.sample(msg)
		case "ERROR":
			st.Errors++
			st.sample(msg)
		}
	}
	return st
}

func (st *WorkerLogStats) sample(msg string) {
	if _, ok := st.Samples[msg]; ok || len(st.Samples) < 20 {
		st.Samples[msg]++
	}
}

// lastLine is an io.Writer that remembers the last complete line written.
type lastLine struct {
	mu      sync.Mutex
	partial []byte
	last    string
}

func (l *lastLine) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	if i := bytes.LastIndexByte(l.partial, '\n'); i >= 0 {
		lines := bytes.Split(l.partial[:i], []byte("\n"))
		l.last = string(lines[len(lines)-1])
		l.partial = append(l.partial[:0], l.partial[i+1:]...)
	}
	return len(b), nil
}

func (l *lastLine) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// LoadRecord is one line of example-app load's --record-loads file: an
// Account load, when it started, and whether it read a snapshot or
// replayed every event.
type LoadRecord struct {
	At           time.Time
	Type, ID     string
	Version      int64
	FromSnapshot bool
}

// ParseLoads reads a --record-loads file: "unix-nanos Type id version
// snapshot|replay" lines. Anything else is an error naming the line.
func ParseLoads(r io.Reader) ([]LoadRecord, error) {
	var out []LoadRecord
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 5 || (f[4] != "snapshot" && f[4] != "replay") {
			return out, fmt.Errorf("loads line %d %q: want unix-nanos Type id version snapshot|replay", n, line)
		}
		ns, err1 := strconv.ParseInt(f[0], 10, 64)
		v, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			return out, fmt.Errorf("loads line %d %q: time and version must be whole numbers", n, line)
		}
		out = append(out, LoadRecord{At: time.Unix(0, ns), Type: f[1], ID: f[2], Version: v, FromSnapshot: f[4] == "snapshot"})
	}
	return out, sc.Err()
}

// readLoads reads a --record-loads file; a file that was never written
// (a load that saved nothing yet) holds no loads.
func readLoads(path string) ([]LoadRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseLoads(f)
}
