package exampleapp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
)

// deadlineStore commits the first Append and then holds its answer for
// hold, longer than the load's --duration, so the load's deadline passes
// while that save is in flight. If the save's context ends meanwhile, the
// Append returns its error although the events are committed, as a
// driver does whose context is cancelled just after the commit.
type deadlineStore struct {
	eventsource.Store
	hold    time.Duration
	first   atomic.Bool
	firstID uuid.UUID // the aggregate of the held Append
}

func (s *deadlineStore) Append(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) (eventsource.AppendResult, error) {
	res, err := s.Store.Append(context.WithoutCancel(ctx), typ, id, expected, events)
	if err != nil || !s.first.CompareAndSwap(false, true) {
		return res, err
	}
	s.firstID = id
	t := time.NewTimer(s.hold)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-t.C:
		return res, nil
	}
}

// sqliteLoad opens a load's infrastructure on SQLite in a directory of the
// test's (closed when it ends) and names a record file there.
func sqliteLoad(t *testing.T) (Config, *infra, string) {
	t.Helper()
	dir := t.TempDir()
	c := Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)}
	in, err := openInfra(context.Background(), c, storeopen.DefaultSQLiteFile, false, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return c, in, filepath.Join(dir, "saves.txt")
}

// A save that commits as --duration expires is counted, recorded and
// announced: the store's head equals what --record holds, and the stream
// has the notice of the head.
func TestLoadFinishesTheSaveInFlightAtItsDeadline(t *testing.T) {
	ctx := context.Background()
	c, in, rec := sqliteLoad(t)
	// One account, one event per save: the head is the number of saves.
	lc := LoadConfig{Config: c, Aggregates: 1, Rate: 100, Duration: time.Second, MaxEvents: 1, Concurrency: 1, Record: rec}
	store := &deadlineStore{Store: in.store.Store, hold: lc.Duration + 100*time.Millisecond} // the Append starts after the deadline is set
	var out, errOut bytes.Buffer
	if err := generateLoad(ctx, lc, in, store, &out, &errOut); err != nil {
		t.Fatalf("load: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	if !store.first.Load() {
		t.Fatal("no save was made")
	}
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	if s := strings.TrimSpace(string(data)); s != "" {
		lines = strings.Split(s, "\n")
	}
	id := store.firstID
	var recordedLast int64
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != exampledomain.AccountType || f[1] != id.String() {
			t.Fatalf("bad record line %q", l)
		}
		recordedLast, _ = strconv.ParseInt(f[3], 10, 64)
	}
	head, err := in.store.StreamVersion(ctx, exampledomain.AccountType, id)
	if err != nil {
		t.Fatal(err)
	}
	if head != int64(len(lines)) || head != recordedLast {
		t.Fatalf("store head %d, %d saves recorded (the last at v%d)\nstdout:\n%s", head, len(lines), recordedLast, out.String())
	}
	stream, err := in.js.Stream(ctx, natsnotice.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, natsnotice.Subject(natsnotice.DefaultSubjectPrefix, exampledomain.AccountType, id))
	if err != nil {
		t.Fatalf("no notice for %s in the stream: %v", id, err)
	}
	n, err := natsnotice.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if n.LastVersion != head {
		t.Fatalf("the stream's last notice is for v%d, the head is v%d", n.LastVersion, head)
	}
}

// lostAnswerStore fails the second Append after committing it (the
// connection lost after the commit) and the third before committing it.
type lostAnswerStore struct {
	eventsource.Store
	n atomic.Int64
}

var errLostAnswer = errors.New("conn closed\nwhile reading the answer")

func (s *lostAnswerStore) Append(ctx context.Context, typ string, id uuid.UUID, expected eventsource.ExpectedVersion, events []eventsource.NewEvent) (eventsource.AppendResult, error) {
	switch s.n.Add(1) {
	case 2:
		_, err := s.Store.Append(ctx, typ, id, expected, events)
		return eventsource.AppendResult{}, errors.Join(err, errLostAnswer)
	case 3:
		return eventsource.AppendResult{}, errLostAnswer
	}
	return s.Store.Append(ctx, typ, id, expected, events)
}

// Failed saves are recorded too, with the versions they tried to append,
// the time and the error on one line: a failed save may have committed,
// and whoever checks the store must know which versions are in doubt.
func TestLoadRecordsFailedSaves(t *testing.T) {
	ctx := context.Background()
	c, in, rec := sqliteLoad(t)
	lc := LoadConfig{Config: c, Aggregates: 1, Rate: 50, Duration: 300 * time.Millisecond, MaxEvents: 1, Concurrency: 1, Record: rec}
	store := &lostAnswerStore{Store: in.store.Store}
	var out, errOut bytes.Buffer
	before := time.Now().UTC()
	err := generateLoad(ctx, lc, in, store, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "2 saves failed") {
		t.Fatalf("load: %v, want 2 saves failed\nstdout:\n%s", err, out.String())
	}
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 4 {
		t.Fatalf("record has %d lines, want a save, two failures and more saves:\n%s", len(lines), data)
	}
	// v1 saved; v2 committed but failed; v3 failed before committing;
	// the next save appends v3 again (it loads v2 as the head).
	want := []struct {
		first, last int64
		failed      bool
	}{{1, 1, false}, {2, 2, true}, {3, 3, true}, {3, 3, false}}
	for i, w := range want {
		f := strings.Fields(lines[i])
		if len(f) < 4 || f[0] != exampledomain.AccountType || f[2] != strconv.FormatInt(w.first, 10) || f[3] != strconv.FormatInt(w.last, 10) {
			t.Fatalf("line %d %q: want Account <id> %d %d", i+1, lines[i], w.first, w.last)
		}
		if !w.failed {
			if len(f) != 4 {
				t.Errorf("line %d %q: a successful save has 4 fields", i+1, lines[i])
			}
			continue
		}
		if len(f) < 7 || f[4] != "failed" {
			t.Fatalf("line %d %q: want failed, a time and the error", i+1, lines[i])
		}
		at, err := time.Parse(time.RFC3339Nano, f[5])
		if err != nil || at.Before(before) || at.After(time.Now()) {
			t.Errorf("line %d: time %q (%v) is not the time of the failure", i+1, f[5], err)
		}
		if msg := strings.Join(f[6:], " "); !strings.Contains(msg, "conn closed while reading the answer") {
			t.Errorf("line %d: error %q, want the store's error on one line", i+1, msg)
		}
	}
	if !strings.Contains(out.String(), "2 errors") {
		t.Errorf("summary does not count 2 errors:\n%s", out.String())
	}
}

// Two loads with one --id-seed, v1 and v2 of the Account one after the
// other, save the same aggregates; --record-loads has a line per Account
// load, and v2's loads of aggregates v1 saved find v1's events.
func TestLoadsWithOneSeedShareAggregates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)}
	in, err := openInfra(ctx, c, storeopen.DefaultSQLiteFile, false, true)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	ids := map[int][]string{}
	for _, schema := range []int{1, 2} {
		rec, loads := filepath.Join(dir, "saves"+strconv.Itoa(schema)), filepath.Join(dir, "loads"+strconv.Itoa(schema))
		lc := LoadConfig{Config: c, Aggregates: 3, Rate: 200, Duration: 500 * time.Millisecond, MaxEvents: 2, Concurrency: 1,
			Record: rec, RecordLoads: loads, IDSeed: 42, AccountSchema: schema}
		var out, errOut bytes.Buffer
		if err := generateLoad(ctx, lc, in, in.store.Store, &out, &errOut); err != nil {
			t.Fatalf("load of schema %d: %v\n%s%s", schema, err, out.String(), errOut.String())
		}
		if !strings.Contains(out.String(), "Account schema version "+strconv.Itoa(schema)) {
			t.Fatalf("load output does not name schema %d:\n%s", schema, out.String())
		}
		data, err := os.ReadFile(loads)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(line)
			if len(f) != 5 || f[1] != exampledomain.AccountType || (f[4] != "snapshot" && f[4] != "replay") {
				t.Fatalf("--record-loads line %q: want unix-nanos Account id version snapshot|replay", line)
			}
			if _, err := strconv.ParseInt(f[0], 10, 64); err != nil {
				t.Fatalf("--record-loads line %q: time: %v", line, err)
			}
			if v, err := strconv.Atoi(f[3]); err != nil || v < 1 {
				t.Fatalf("--record-loads line %q: version", line)
			}
			if !slices.Contains(ids[schema], f[2]) {
				ids[schema] = append(ids[schema], f[2])
			}
		}
	}
	slices.Sort(ids[1])
	slices.Sort(ids[2])
	if len(ids[1]) != 3 || !slices.Equal(ids[1], ids[2]) {
		t.Fatalf("aggregates loaded by v1 %v and by v2 %v: want the same 3", ids[1], ids[2])
	}
	a, b := aggregateID(42, 1), aggregateID(42, 1)
	r1, r2 := aggregateID(0, 1), aggregateID(0, 1)
	if a != b || a == aggregateID(43, 1) || a == aggregateID(42, 2) || r1 == r2 {
		t.Fatal("aggregateID: want the same id for one seed and slot, another for another seed or slot, random for seed 0")
	}
}
