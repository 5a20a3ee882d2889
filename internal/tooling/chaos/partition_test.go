//go:build unix

package chaos

import (
	"strings"
	"testing"
	"time"
)

// The report has a row per partition kind, with what the cuts measured,
// and says when the load's saves during a cut could not be counted.
func TestPartitionRows(t *testing.T) {
	f := Figures{Cluster: true, Cuts: []Cut{
		{Kind: PartitionAppNATS, Down: 2 * time.Second, Saved: 500, Back: time.Second},
		{Kind: PartitionAppNATS, Down: time.Second, Saved: -1, Back: 3 * time.Second},
		{Kind: PartitionNATS, Down: 7 * time.Second, Elected: 4 * time.Second, Leader: "nats-2"},
		{Kind: PartitionWorkerPG, Down: time.Second, Back: -1},
	}}
	rows := partitionRows(f)
	if len(rows) != len(partitionKinds) {
		t.Fatalf("%d rows, want one per partition kind: %v", len(rows), rows)
	}
	byName := map[string]reportRow{}
	for _, r := range rows {
		byName[r.name] = r
	}
	for name, want := range map[string]string{
		"app-NATS partitions":    "3s in all; 500 events saved during the cuts (1 cuts not counted: PostgreSQL was down); notices stored again max 3s",
		"NATS partitions":        "during 1 of them",
		"worker-PG partitions":   "again max never after",
		"worker-NATS partitions": "0s in all",
	} {
		if r, ok := byName[name]; !ok || !strings.Contains(r.note, want) {
			t.Errorf("%s: %+v, want a note with %q", name, r, want)
		}
	}
	if got := partitionSummary(f); got != "nats-partition 1, worker-nats-partition 0, worker-pg-partition 1, app-nats-partition 2" {
		t.Errorf("summary %q", got)
	}
	for c, want := range map[Cut]string{
		{Kind: PartitionWorkerNATS, At: 8800 * time.Millisecond, Down: 4 * time.Second, Target: "worker-3", Written: 2, Back: 700 * time.Millisecond}:   "   8.8s worker-nats-partition worker-3 cut off for 4s; 2 snapshot writes during the cut; writing again 700ms after the heal",
		{Kind: PartitionAppNATS, At: time.Second, Down: time.Second, Target: "the load", Saved: -1, Back: -1}:                                           "   1.0s app-nats-partition    the load cut off for 1s; the load committed ? (PostgreSQL down) events during the cut; notices stored again never after the heal",
		{Kind: PartitionNATS, At: time.Second, Down: 7 * time.Second, Target: "nats-1 (the stream leader)", Elected: 4 * time.Second, Leader: "nats-2"}: "   1.0s nats-partition        nats-1 (the stream leader) cut off for 7s; nats-2, elected by the majority, stored notices 4s after the cut began",
	} {
		if got := c.String(); got != want {
			t.Errorf("got  %q\nwant %q", got, want)
		}
	}
	f.PartitionSkipped = "network namespaces need root"
	if rows := partitionRows(f); len(rows) != 1 || !strings.Contains(rows[0].note, "need root") {
		t.Errorf("skipped: %v", rows)
	}
}
