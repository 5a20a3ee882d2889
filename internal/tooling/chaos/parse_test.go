package chaos

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const loadOutput = `load: 200 aggregates (30% orders), 300 saves/s, for 2m45s; store postgres (postgres://postgres@127.0.0.1:5432/x), bus nats://127.0.0.1:4222
     1s     300 saves/s      532 events/s  total 300 saves  conflicts 0  errors 0  notices published 298 dropped 0
     2s     301 saves/s      540 events/s  total 601 saves  conflicts 0  errors 0  notices published 600 dropped 1
done: 7479 saves (13041 events) in 24.966s = 300 saves/s; 2 conflicts, 3 errors
`

func TestParseLoadOutput(t *testing.T) {
	s, err := ParseLoadOutput(loadOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := LoadSummary{Saves: 7479, Events: 13041, Elapsed: 24966 * time.Millisecond, Conflicts: 2, Errors: 3,
		NoticesPublished: 600, NoticesDropped: 1, HaveProgress: true, ProgressLines: 2, LastProgressSeconds: 2}
	if s != want {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
	// The current generator ends its summary with the final publisher counts.
	final := strings.Replace(loadOutput, "3 errors\n", "3 errors; notices published 7479, dropped 0\n", 1)
	if s, err := ParseLoadOutput(final); err != nil || s.NoticesPublished != 7479 || s.NoticesDropped != 0 || s.Saves != 7479 {
		t.Errorf("summary with final counts: %+v, %v", s, err)
	}
	if _, err := ParseLoadOutput(strings.Replace(loadOutput, "done:", "gone:", 1)); !errors.Is(err, ErrNoSummary) {
		t.Errorf("without a done line: %v, want ErrNoSummary", err)
	}
}

const verifyOutput = `Order: checked 5 aggregates
  ok            2
  no_snapshot   1
  stale         0
  mismatch      1
  undecodable   1
  mismatch 0b6f1a3e-6c4e-4d57-9e57-6f2f0c0e0a01 at v40: state differs
  undecodable 0b6f1a3e-6c4e-4d57-9e57-6f2f0c0e0a02 at v20: bad json
`

func TestParseVerifyOutput(t *testing.T) {
	v, err := ParseVerifyOutput(verifyOutput)
	if err != nil {
		t.Fatal(err)
	}
	if v.Type != "Order" || v.Checked != 5 || v.ByStatus["ok"] != 2 || v.Bad() != 2 || len(v.Problems) != 2 {
		t.Errorf("got %+v", v)
	}
	for name, out := range map[string]string{
		"no header":      strings.Replace(verifyOutput, "checked", "looked at", 1),
		"missing status": strings.Replace(verifyOutput, "  stale         0\n", "", 1),
		"counts differ":  strings.Replace(verifyOutput, "checked 5", "checked 6", 1),
	} {
		if _, err := ParseVerifyOutput(out); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseWorkerLog(t *testing.T) {
	log := `=== evsnap-chaos: worker-1 start #1 at 2026-01-01T00:00:00Z
{"time":"t","level":"INFO","msg":"snapshotter starting","backend":"postgres"}
{"time":"t","level":"INFO","msg":"reconciliation sweep caught up aggregates whose notices were lost or not yet handled","snapshotted":3}
{"time":"t","level":"INFO","msg":"reconciliation sweep caught up aggregates whose notices were lost or not yet handled","snapshotted":4}
{"time":"t","level":"WARN","msg":"notices unavailable; retrying","error":"x"}
{"time":"t","level":"WARN","msg":"drain timed out; cancelling in-flight work (unacked notices are redelivered)"}
{"time":"t","level":"WARN","msg":"PostgreSQL unreachable at start-up; starting anyway, the store connects when it can"}
{"time":"t","level":"ERROR","msg":"boom \"quoted\""}
{"time":"t","level":"INFO","msg":"snapshotter stopped cleanly"}
snapshotter: nats: connect to nats://127.0.0.1:1: nats: no servers available for connection
`
	st := ParseWorkerLog(log)
	if st.Swept != 7 || st.Warnings != 3 || st.Errors != 2 || st.DrainTimeouts != 1 || st.StartsWithoutPG != 1 || st.Starts != 1 || st.Stopped != 1 {
		t.Errorf("got %+v", st)
	}
	if st.Samples[`boom \"quoted\"`] != 1 {
		t.Errorf("samples %v", st.Samples)
	}
}

func TestLastLine(t *testing.T) {
	var l lastLine
	for _, chunk := range []string{"one\ntw", "o\nthr", "ee"} {
		_, _ = l.Write([]byte(chunk))
	}
	if got := l.String(); got != "two" {
		t.Errorf("got %q, want the last complete line %q", got, "two")
	}
}

func TestParseLoads(t *testing.T) {
	got, err := ParseLoads(strings.NewReader("1765000000000000001 Account 2c95ba31-17f5-4a25-873c-9851291b9bdf 17 snapshot\n\n" +
		"1765000000000000002 Account 2c95ba31-17f5-4a25-873c-9851291b9bdf 18 replay\n"))
	if err != nil || len(got) != 2 || !got[0].FromSnapshot || got[1].FromSnapshot || got[1].Version != 18 ||
		got[0].At.UnixNano() != 1765000000000000001 || got[0].ID != "2c95ba31-17f5-4a25-873c-9851291b9bdf" {
		t.Fatalf("ParseLoads = %+v, %v", got, err)
	}
	for _, bad := range []string{"1 Account id 3", "1 Account id 3 maybe", "x Account id 3 replay", "1 Account id v3 replay"} {
		if _, err := ParseLoads(strings.NewReader(bad + "\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseLoads(%q) = %v, want an error naming line 1", bad, err)
		}
	}
}

// The rollback phase's settings are checked: skipped with 0, else it
// needs a time after the rollback and a rate.
func TestRollbackConfig(t *testing.T) {
	c := DefaultConfig(true)
	c.RepoDir = "."
	for name, mut := range map[string]func(*Config){
		"no time after": func(c *Config) { c.RollbackAfter = 0 },
		"no rate":       func(c *Config) { c.RollbackRate = 0 },
		"negative":      func(c *Config) { c.RollbackSideBySide = -time.Second },
	} {
		cc := c
		mut(&cc)
		if err := cc.Validate(); err == nil || !strings.Contains(err.Error(), "rollback") {
			t.Errorf("%s: %v, want an error about the rollback phase", name, err)
		}
	}
	c.RollbackSideBySide, c.RollbackAfter, c.RollbackRate = 0, 0, 0
	if err := c.Validate(); err != nil {
		t.Errorf("rollback phase skipped: %v", err)
	}
}
