package chaos

import (
	"fmt"
	"slices"
	"time"
)

// AuditRow is one snapshot row version written, as the audit trigger
// records it: Seq is the order of writes (assigned while the writer holds
// the row's lock, so it is the order in which one aggregate's row
// versions were written), Op is "I" (insert), "U" (update) or "D"
// (delete). OldVersion and OldSchemaVersion are the row's values before an
// update (-1 for an insert).
type AuditRow struct {
	Seq              int64
	Op               string
	Type, ID         string
	Version          int64
	SchemaVersion    int
	OldVersion       int64
	OldSchemaVersion int
	StateMD5         string
	TxID             int64
	Writer           string // application_name of the writing connection
	At               time.Time
}

// RowKey names one row of the snapshots table: an aggregate and a schema
// version (a store keeps a snapshot per aggregate and schema version).
type RowKey struct {
	Type, ID string
	Schema   int
}

// String renders the key as "Type id schema N".
func (k RowKey) String() string { return fmt.Sprintf("%s %s schema %d", k.Type, k.ID, k.Schema) }

// Regression is a snapshot write that moved a snapshot row backwards: a
// lower version than the one written to that row (aggregate and schema
// version) before it.
type Regression struct {
	Prev, Next AuditRow
	Reason     string
}

// String describes the regression with both writes.
func (r Regression) String() string {
	return fmt.Sprintf("%s %s: %s (seq %d v%d schema %d by %s at %s, then seq %d v%d schema %d by %s at %s)",
		r.Next.Type, r.Next.ID, r.Reason,
		r.Prev.Seq, r.Prev.Version, r.Prev.SchemaVersion, r.Prev.Writer, r.Prev.At.Format("15:04:05.000000"),
		r.Next.Seq, r.Next.Version, r.Next.SchemaVersion, r.Next.Writer, r.Next.At.Format("15:04:05.000000"))
}

// Divergence is two writes of the same row (aggregate and schema
// version) at the same version with different states. A snapshot is a function of the
// events up to its version, so one of them is wrong.
type Divergence struct {
	First, Second AuditRow
}

// String describes both writes.
func (d Divergence) String() string {
	return fmt.Sprintf("%s %s v%d schema %d: state md5 %s (seq %d by %s) then %s (seq %d by %s)",
		d.First.Type, d.First.ID, d.First.Version, d.First.SchemaVersion,
		d.First.StateMD5, d.First.Seq, d.First.Writer, d.Second.StateMD5, d.Second.Seq, d.Second.Writer)
}

// AuditReport is what [CheckAudit] found.
type AuditReport struct {
	// Writes counts inserts and updates; Deletes counts deletes.
	Writes, Deletes int
	// Rows counts the rows (aggregate and schema version) written at
	// least once.
	Rows int
	// Rewrites counts writes at the version already stored (allowed: two
	// workers racing, or a redelivered notice).
	Rewrites int
	// Regressions must be empty.
	Regressions []Regression
	// Divergences must be empty.
	Divergences []Divergence
	// Discontinuities are writes that do not follow from the audited write
	// before them: an update whose replaced values are not the previous
	// audited write's, an insert over an existing row, a delete of a
	// missing one. Must be empty: otherwise the audit missed writes or
	// their order, and the regression check proves nothing.
	Discontinuities []string
}

// CheckAudit checks the sequence of snapshot writes: per row (aggregate
// and schema version), in write order, the version never decreases
// (deletes are counted but do not reset the sequence: a snapshot deleted
// and then written at a lower version still went backwards), every update
// moved the row forwards from the values it replaced and kept its schema
// version, every write follows from the audited write before it (no write
// missing from the audit), and two writes of a row at one version wrote
// the same state.
func CheckAudit(rows []AuditRow) AuditReport {
	rows = slices.Clone(rows)
	slices.SortStableFunc(rows, func(a, b AuditRow) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	var rep AuditReport
	type stateKey struct {
		k       RowKey
		version int64
	}
	last := map[RowKey]AuditRow{}
	present := map[RowKey]bool{}
	states := map[stateKey]AuditRow{}
	gap := func(r AuditRow, format string, args ...any) {
		rep.Discontinuities = append(rep.Discontinuities, fmt.Sprintf("%s %s seq %d (%s v%d by %s): ", r.Type, r.ID, r.Seq, r.Op, r.Version, r.Writer)+fmt.Sprintf(format, args...))
	}
	for _, r := range rows {
		k := RowKey{r.Type, r.ID, r.SchemaVersion}
		prev, seen := last[k]
		switch {
		case r.Op == "I" && present[k]:
			gap(r, "insert over an existing row (last audited v%d)", prev.Version)
		case r.Op == "U" && !present[k]:
			gap(r, "update of a row the audit never saw inserted")
		case r.Op == "U" && (r.OldVersion != prev.Version || r.OldSchemaVersion != prev.SchemaVersion):
			gap(r, "replaced v%d schema %d, but the last audited write was v%d schema %d (seq %d)", r.OldVersion, r.OldSchemaVersion, prev.Version, prev.SchemaVersion, prev.Seq)
		case r.Op == "D" && !present[k]:
			gap(r, "delete of a row the audit never saw")
		}
		if r.Op == "D" {
			rep.Deletes++
			present[k] = false
			continue
		}
		present[k] = true
		rep.Writes++
		// One regression per write: against the write before it in the
		// sequence, or else against the row values the update replaced
		// (which catch a regression even if the earlier write is missing).
		var reg *Regression
		if seen {
			switch {
			case r.Version < prev.Version:
				reg = &Regression{Prev: prev, Next: r, Reason: fmt.Sprintf("version went from %d back to %d", prev.Version, r.Version)}
			case r.Version == prev.Version:
				rep.Rewrites++
			}
		} else {
			rep.Rows++
		}
		if reg == nil && r.Op == "U" && r.OldVersion >= 0 {
			old := AuditRow{Seq: r.Seq, Type: r.Type, ID: r.ID, Version: r.OldVersion, SchemaVersion: r.OldSchemaVersion, Writer: "(replaced row)", At: r.At}
			switch {
			case r.Version < r.OldVersion:
				reg = &Regression{Prev: old, Next: r, Reason: fmt.Sprintf("update replaced v%d with v%d", r.OldVersion, r.Version)}
			case r.SchemaVersion != r.OldSchemaVersion:
				reg = &Regression{Prev: old, Next: r, Reason: fmt.Sprintf("update moved the row of schema %d to schema %d", r.OldSchemaVersion, r.SchemaVersion)}
			}
		}
		if reg != nil {
			rep.Regressions = append(rep.Regressions, *reg)
		}
		last[k] = r
		sk := stateKey{k, r.Version}
		if first, ok := states[sk]; !ok {
			states[sk] = r
		} else if r.StateMD5 != first.StateMD5 {
			rep.Divergences = append(rep.Divergences, Divergence{First: first, Second: r})
		}
	}
	return rep
}

// LastWrites returns each row's (aggregate and schema version) last
// write by Seq: what the snapshots table must hold at the end. A row whose
// last write was a delete has no entry.
func LastWrites(rows []AuditRow) map[RowKey]AuditRow {
	last := map[RowKey]AuditRow{}
	for _, r := range rows {
		k := RowKey{r.Type, r.ID, r.SchemaVersion}
		if prev, ok := last[k]; !ok || r.Seq > prev.Seq {
			last[k] = r
		}
	}
	for k, r := range last {
		if r.Op == "D" {
			delete(last, k)
		}
	}
	return last
}
