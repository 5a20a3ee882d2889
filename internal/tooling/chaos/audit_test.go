package chaos

import (
	"strings"
	"testing"
)

func ins(seq int64, id string, v int64, schema int, md5 string) AuditRow {
	return AuditRow{Seq: seq, Op: "I", Type: "Account", ID: id, Version: v, SchemaVersion: schema, OldVersion: -1, OldSchemaVersion: -1, StateMD5: md5, Writer: "w"}
}

func upd(seq int64, id string, oldV int64, oldSchema int, v int64, schema int, md5 string) AuditRow {
	return AuditRow{Seq: seq, Op: "U", Type: "Account", ID: id, Version: v, SchemaVersion: schema, OldVersion: oldV, OldSchemaVersion: oldSchema, StateMD5: md5, Writer: "w"}
}

func del(seq int64, id string, v int64, schema int) AuditRow {
	return AuditRow{Seq: seq, Op: "D", Type: "Account", ID: id, Version: v, SchemaVersion: schema, OldVersion: v, OldSchemaVersion: schema}
}

func TestCheckAuditClean(t *testing.T) {
	rows := []AuditRow{
		ins(1, idA, 20, 1, "a20"),
		ins(2, idB, 20, 1, "b20"),
		upd(3, idA, 20, 1, 40, 1, "a40"),
		upd(4, idA, 40, 1, 40, 1, "a40"), // a racing worker rewrites the same version
		ins(5, idA, 41, 2, "a41"),        // v2 of the app: a row of its own
		upd(6, idA, 40, 1, 45, 1, "a45"), // v1 goes on in its row, below v2's version
		ins(7, idB, 5, 2, "b5"),          // and v2 writes its row below v1's
	}
	r := CheckAudit(rows)
	if len(r.Regressions) != 0 || len(r.Divergences) != 0 || len(r.Discontinuities) != 0 {
		t.Fatalf("regressions %v divergences %v discontinuities %v", r.Regressions, r.Divergences, r.Discontinuities)
	}
	if r.Writes != 7 || r.Rows != 4 || r.Rewrites != 1 || r.Deletes != 0 {
		t.Errorf("counts: %+v", r)
	}
}

func TestCheckAuditRegressions(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows []AuditRow
		want string
	}{
		{"version backwards", []AuditRow{ins(1, idA, 40, 1, "x"), upd(2, idA, 40, 1, 20, 1, "y")}, "version went from 40 back to 20"},
		{"one row of two", []AuditRow{ins(1, idA, 40, 2, "x"), ins(2, idA, 30, 1, "y"), upd(3, idA, 40, 2, 35, 2, "z")}, "version went from 40 back to 35"},
		{
			// Sorted by Seq, not by slice order: v60 was written after v80.
			"order is by seq", []AuditRow{upd(7, idA, 80, 1, 60, 1, "y"), ins(3, idA, 80, 1, "x")},
			"version went from 80 back to 60",
		},
		{
			// A delete does not reset the sequence.
			"lower insert after a delete", []AuditRow{ins(1, idA, 40, 1, "x"), del(2, idA, 40, 1), ins(3, idA, 20, 1, "y")},
			"version went from 40 back to 20",
		},
		{
			// The trigger's OLD values catch an update that went backwards
			// even when the earlier write is missing from the audit.
			"update from a higher row", []AuditRow{upd(5, idA, 50, 1, 45, 1, "y")},
			"update replaced v50 with v45",
		},
		{"update moves a row to another schema", []AuditRow{upd(5, idA, 50, 2, 55, 1, "y")}, "update moved the row of schema 2 to schema 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckAudit(tc.rows)
			if len(r.Regressions) == 0 {
				t.Fatalf("no regression found in %+v", tc.rows)
			}
			if got := r.Regressions[0].String(); !strings.Contains(got, tc.want) || !strings.Contains(got, idA) {
				t.Errorf("regression %q, want it to name %s and say %q", got, idA, tc.want)
			}
		})
	}
}

func TestCheckAuditDivergence(t *testing.T) {
	r := CheckAudit([]AuditRow{ins(1, idA, 20, 1, "one"), upd(2, idA, 20, 1, 20, 1, "two")})
	if len(r.Regressions) != 0 {
		t.Errorf("regressions: %v", r.Regressions)
	}
	if len(r.Divergences) != 1 || !strings.Contains(r.Divergences[0].String(), "one") {
		t.Fatalf("divergences: %v", r.Divergences)
	}
}

func TestLastWrites(t *testing.T) {
	rows := []AuditRow{
		upd(4, idA, 20, 1, 40, 1, "a40"),
		ins(1, idA, 20, 1, "a20"),
		ins(2, idB, 20, 1, "b20"),
		del(3, idB, 20, 1),
	}
	got := LastWrites(rows)
	if len(got) != 1 {
		t.Fatalf("got %v, want only %s (the other was deleted last)", got, idA)
	}
	if a := got[RowKey{"Account", idA, 1}]; a.Seq != 4 || a.Version != 40 {
		t.Errorf("last write of %s: %+v", idA, a)
	}
}

func TestCheckAuditDiscontinuities(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows []AuditRow
		want string
	}{
		{"update skips a write", []AuditRow{ins(1, idA, 20, 1, "x"), upd(2, idA, 30, 1, 40, 1, "y")}, "replaced v30 schema 1, but the last audited write was v20"},
		{"update without insert", []AuditRow{upd(2, idA, 20, 1, 40, 1, "y")}, "never saw inserted"},
		{"insert over a row", []AuditRow{ins(1, idA, 20, 1, "x"), ins(2, idA, 40, 1, "y")}, "insert over an existing row"},
		{"delete of nothing", []AuditRow{del(1, idA, 20, 1)}, "delete of a row the audit never saw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckAudit(tc.rows)
			if len(r.Discontinuities) != 1 || !strings.Contains(r.Discontinuities[0], tc.want) {
				t.Fatalf("discontinuities %q, want one saying %q", r.Discontinuities, tc.want)
			}
		})
	}
	// Insert, delete, insert again is continuous.
	if r := CheckAudit([]AuditRow{ins(1, idA, 20, 1, "x"), del(2, idA, 20, 1), ins(3, idA, 40, 1, "y")}); len(r.Discontinuities) != 0 {
		t.Errorf("discontinuities %q", r.Discontinuities)
	}
}
