package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	idA = "0b6f1a3e-6c4e-4d57-9e57-6f2f0c0e0a01"
	idB = "0b6f1a3e-6c4e-4d57-9e57-6f2f0c0e0a02"
)

func TestParseRecord(t *testing.T) {
	in := "Account " + idA + " 1 3\n\nOrder " + strings.ToUpper(idB) + " 1 1\n" +
		"Account " + idA + " 4 5 failed 2025-01-02T15:04:05.123456789Z save Account: conn closed\n" +
		"Order " + idB + " 0 0 failed 2025-01-02T15:04:06Z\n" +
		"Account " + idA + " 4 4\n"
	got, failed, err := ParseRecord(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	wantFailed := []FailedSave{
		{Save: Save{"Account", idA, 4, 5}, At: time.Date(2025, 1, 2, 15, 4, 5, 123456789, time.UTC), Err: "save Account: conn closed"},
		{Save: Save{"Order", idB, 0, 0}, At: time.Date(2025, 1, 2, 15, 4, 6, 0, time.UTC)},
	}
	if len(failed) != len(wantFailed) {
		t.Fatalf("failed saves %+v, want %+v", failed, wantFailed)
	}
	for i, w := range wantFailed {
		if f := failed[i]; f.Save != w.Save || !f.At.Equal(w.At) || f.Err != w.Err {
			t.Errorf("failed save %d: %+v, want %+v", i, f, w)
		}
	}
	want := []Save{{"Account", idA, 1, 3}, {"Order", idB, 1, 1}, {"Account", idA, 4, 4}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseRecordErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"too few fields", "Account " + idA + " 1\n", "line 1"},
		{"too many fields", "Account " + idA + " 1 2 3\n", "4 fields"},
		{"bad id", "Account not-a-uuid 1 2\n", "aggregate id"},
		{"bad number", "Account " + idA + " one 2\n", "whole numbers"},
		{"empty range", "Account " + idA + " 3 2\n", "empty"},
		{"zero first", "Account " + idA + " 0 2\n", "below 1"},
		{"second line", "Account " + idA + " 1 2\nAccount " + idA + "\n", "line 2"},
		{"failed without a time", "Account " + idA + " 1 2 failed\n", "6 or more fields"},
		{"failed with a bad time", "Account " + idA + " 1 2 failed yesterday oops\n", "time of the failure"},
		{"failed with an empty range", "Account " + idA + " 2 1 failed 2025-01-02T15:04:05Z x\n", "empty"},
		{"succeeded with nothing appended", "Account " + idA + " 0 0\n", "below 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseRecord(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func stream(head int64, versions ...int64) StoredStream {
	return StoredStream{Versions: versions, Head: head}
}

func TestCheckEvents(t *testing.T) {
	a := StreamKey{"Account", idA}
	b := StreamKey{"Order", idB}
	for _, tc := range []struct {
		name   string
		saves  []Save
		failed []FailedSave
		stored map[StreamKey]StoredStream
		ok     bool
		check  func(t *testing.T, r EventReport)
	}{
		{
			name:   "all stored once",
			saves:  []Save{{"Account", idA, 1, 2}, {"Account", idA, 3, 3}, {"Order", idB, 1, 1}},
			stored: map[StreamKey]StoredStream{a: stream(3, 3, 1, 2), b: stream(1, 1)},
			ok:     true,
			check: func(t *testing.T, r EventReport) {
				if r.RecordedSaves != 3 || r.RecordedEvents != 4 || r.StoredEvents != 4 || r.Streams != 2 || r.InFlight != 0 {
					t.Errorf("counts: %+v", r)
				}
			},
		},
		{
			name:   "a recorded save is missing",
			saves:  []Save{{"Account", idA, 1, 2}, {"Account", idA, 3, 4}},
			stored: map[StreamKey]StoredStream{a: stream(2, 1, 2)},
			check: func(t *testing.T, r EventReport) {
				if r.Lost != 2 {
					t.Errorf("lost %d, want 2", r.Lost)
				}
			},
		},
		{
			name:   "a whole stream is missing",
			saves:  []Save{{"Order", idB, 1, 3}},
			stored: map[StreamKey]StoredStream{},
			check: func(t *testing.T, r EventReport) {
				if r.Lost != 3 {
					t.Errorf("lost %d, want 3", r.Lost)
				}
			},
		},
		{
			name:   "two saves claim one version",
			saves:  []Save{{"Account", idA, 1, 2}, {"Account", idA, 2, 3}},
			stored: map[StreamKey]StoredStream{a: stream(3, 1, 2, 3)},
			check: func(t *testing.T, r EventReport) {
				if r.RecordedTwice != 1 {
					t.Errorf("recorded twice %d, want 1", r.RecordedTwice)
				}
			},
		},
		{
			name:   "a version stored twice",
			saves:  []Save{{"Account", idA, 1, 2}},
			stored: map[StreamKey]StoredStream{a: stream(2, 1, 2, 2)},
			check: func(t *testing.T, r EventReport) {
				if r.Duplicates != 1 {
					t.Errorf("duplicates %d, want 1", r.Duplicates)
				}
			},
		},
		{
			name:   "a gap",
			saves:  []Save{{"Account", idA, 1, 1}, {"Account", idA, 3, 3}},
			stored: map[StreamKey]StoredStream{a: stream(3, 1, 3)},
			check: func(t *testing.T, r EventReport) {
				if r.Gaps != 1 || r.Lost != 0 {
					t.Errorf("gaps %d lost %d, want 1 and 0", r.Gaps, r.Lost)
				}
			},
		},
		{
			name:   "streams row disagrees",
			saves:  []Save{{"Account", idA, 1, 2}},
			stored: map[StreamKey]StoredStream{a: stream(5, 1, 2)},
			check: func(t *testing.T, r EventReport) {
				if r.HeadMismatches != 1 {
					t.Errorf("head mismatches %d, want 1", r.HeadMismatches)
				}
			},
		},
		{
			name:   "unrecorded tail is in flight, not a failure",
			saves:  []Save{{"Account", idA, 1, 2}},
			stored: map[StreamKey]StoredStream{a: stream(4, 1, 2, 3, 4), b: stream(1, 1)},
			ok:     true,
			check: func(t *testing.T, r EventReport) {
				if r.InFlight != 3 || r.InFlightStreams != 2 || r.Unaccounted != 0 {
					t.Errorf("in flight %d in %d streams, unaccounted %d; want 3, 2, 0", r.InFlight, r.InFlightStreams, r.Unaccounted)
				}
			},
		},
		{
			name:   "a failed save that committed is in doubt, not unaccounted",
			saves:  []Save{{"Account", idA, 1, 1}, {"Account", idA, 4, 4}},
			failed: []FailedSave{{Save: Save{"Account", idA, 2, 3}}, {Save: Save{"Account", idA, 4, 5}}, {Save: Save{"Order", idB, 0, 0}}},
			stored: map[StreamKey]StoredStream{a: stream(4, 1, 2, 3, 4)},
			ok:     true,
			check: func(t *testing.T, r EventReport) {
				if r.InDoubt != 2 || r.InDoubtSaves != 1 || r.FailedSaves != 3 || r.Unaccounted != 0 || r.InFlight != 0 {
					t.Errorf("in doubt %d events of %d saves, %d failed, unaccounted %d, in flight %d; want 2, 1, 3, 0, 0",
						r.InDoubt, r.InDoubtSaves, r.FailedSaves, r.Unaccounted, r.InFlight)
				}
				if len(r.InDoubtExamples) != 1 || !strings.Contains(r.InDoubtExamples[0], "v2..v3") {
					t.Errorf("in-doubt examples %q, want the save of v2..v3", r.InDoubtExamples)
				}
			},
		},
		{
			name:   "a failed save of another aggregate explains nothing",
			saves:  []Save{{"Account", idA, 1, 1}, {"Account", idA, 3, 3}},
			failed: []FailedSave{{Save: Save{"Order", idB, 2, 2}}},
			stored: map[StreamKey]StoredStream{a: stream(3, 1, 2, 3)},
			check: func(t *testing.T, r EventReport) {
				if r.Unaccounted != 1 || r.InDoubt != 0 {
					t.Errorf("unaccounted %d in doubt %d, want 1 and 0", r.Unaccounted, r.InDoubt)
				}
			},
		},
		{
			name:   "unrecorded events below a recorded save",
			saves:  []Save{{"Account", idA, 1, 1}, {"Account", idA, 3, 3}},
			stored: map[StreamKey]StoredStream{a: stream(3, 1, 2, 3)},
			check: func(t *testing.T, r EventReport) {
				if r.Unaccounted != 1 || r.InFlight != 0 {
					t.Errorf("unaccounted %d in flight %d, want 1 and 0", r.Unaccounted, r.InFlight)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckEvents(tc.saves, tc.failed, tc.stored)
			if r.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v; report %+v", r.OK(), tc.ok, r)
			}
			if !tc.ok && len(r.Problems) == 0 {
				t.Errorf("a failing report names no problem: %+v", r)
			}
			tc.check(t, r)
		})
	}
}

func TestUnexplainedFailures(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 15, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	windows := []Window{{From: at(10), To: at(12)}, {From: at(30), To: at(31)}}
	failed := []FailedSave{{At: at(9.9)}, {At: at(10)}, {At: at(11)}, {At: at(12.5)}, {At: at(14.1)}, {At: at(30.5)}, {At: at(40)}}
	got := UnexplainedFailures(failed, windows, 2*time.Second)
	var secs []float64
	for _, f := range got {
		secs = append(secs, f.At.Sub(t0).Seconds())
	}
	if want := []float64{9.9, 14.1, 40}; !slices.Equal(secs, want) {
		t.Errorf("unexplained failures at %v s, want %v", secs, want)
	}
	if got := UnexplainedFailures(failed, nil, time.Minute); len(got) != len(failed) {
		t.Errorf("without an outage %d of %d failures explained", len(failed)-len(got), len(failed))
	}
}
