package sqlitestore

import (
	"strconv"
	"strings"
)

// queries holds every statement the store runs, with the configured table
// names (validated identifiers, quoted) substituted once at construction.
type queries struct {
	bumpStream    string
	insertEvent   string
	streamVersion string
	readEvents    string
	eventIDExists string
	maxVersion    string

	trimSnapshots  string
	saveSnapshot   string
	getSnapshot    string
	getSnapshots   string
	deleteSnapshot string
	deleteStale    string
	deleteByType   string
	deleteByTypeLt string

	listByID       string
	listMostBehind string

	// The sweep's (see sweep.go): a stream moved to the end of its
	// type's change order, a page in change or id order, the marks.
	moveStream    string
	scanChanges   string
	scanByID      string
	getSweepMark  string
	insertMark    string
	updateMark    string
	deleteMarks   string
	deleteMarksLt string
}

// scan is a ScanAggregates page (one statement, one read transaction):
// ?1 type, ?2 schema version, ?3 min behind, ?4 and ?5 the position to
// start after (change seq, id; in id order the id), ?6 the page size.
// Rows: the aggregates of the page at least ?3 behind (id, head,
// snapshot version, change seq, 0), then a tail row (the last id
// examined, how many were examined, the type's highest change seq, the
// last change seq, 1). A stream whose head is below ?3 cannot be that
// far behind: its snapshot is not looked up.
func scan(where, last string) string {
	return `WITH page AS MATERIALIZED (
	SELECT aggregate_id, version, change_seq FROM {streams} WHERE ` + where + ` LIMIT ?6
)
SELECT p.aggregate_id, p.version, COALESCE(n.version, 0), COALESCE(p.change_seq, 0), 0
FROM page AS p
LEFT JOIN {snapshots} AS n ON p.version >= ?3 AND n.aggregate_id = p.aggregate_id AND n.aggregate_type = ?1 AND n.schema_version = ?2
WHERE MAX(p.version - COALESCE(n.version, 0), 0) >= ?3
UNION ALL
SELECT l.aggregate_id, (SELECT COUNT(*) FROM page),
	(SELECT COALESCE(MAX(change_seq), 0) FROM {streams} WHERE aggregate_type = ?1 AND change_seq IS NOT NULL),
	COALESCE(l.change_seq, 0), 1
FROM (SELECT 1) AS one LEFT JOIN (SELECT aggregate_id, change_seq FROM page ORDER BY ` + last + ` LIMIT 1) AS l ON 1`
}

func buildQueries(c *config) queries {
	r := strings.NewReplacer(
		"{events}", `"`+c.events+`"`,
		"{snapshots}", `"`+c.snapshots+`"`,
		"{streams}", `"`+c.streams+`"`,
		"{marks}", `"`+c.streams+`_sweep_marks"`,
		"{kept}", strconv.Itoa(c.kept),
	)
	const behind = `MAX(s.version - COALESCE(p.version, 0), 0)`
	// ?5 is ListOptions.SchemaVersion: its row, or (0) the row of the
	// aggregate's newest schema version, a backward step on the primary
	// key. Either way one primary-key lookup per aggregate.
	const list = `SELECT s.aggregate_id, s.version, COALESCE(p.version, 0), COALESCE(p.schema_version, 0)
FROM {streams} AS s
LEFT JOIN {snapshots} AS p ON p.aggregate_id = s.aggregate_id AND p.aggregate_type = s.aggregate_type
	AND p.schema_version = CASE WHEN ?5 > 0 THEN ?5 ELSE (
		SELECT MAX(q.schema_version) FROM {snapshots} AS q WHERE q.aggregate_id = s.aggregate_id AND q.aggregate_type = s.aggregate_type) END
WHERE s.aggregate_type = ?1 AND s.aggregate_id > ?2 AND ` + behind + ` >= ?3
ORDER BY `
	// The next change position of type ?1: one past its highest, a
	// backward step on the change index.
	const nextChange = `(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM {streams} WHERE aggregate_type = ?1 AND change_seq IS NOT NULL)`
	// The aggregate's newest stored schema version (NULL: none).
	const newest = `(SELECT MAX(schema_version) FROM {snapshots} WHERE aggregate_id = ?1 AND aggregate_type = ?2)`
	return queries{
		// The first statement of an append is a write, so even a
		// deferred transaction takes the write lock before it reads the
		// head: the check and the bump are atomic. RETURNING gives the new
		// head; the old head is new - n.
		// It also moves the stream to the end of its type's change order.
		bumpStream: r.Replace(`INSERT INTO {streams} (aggregate_type, aggregate_id, version, change_seq) VALUES (?1, ?2, ?3, ` + nextChange + `)
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = version + excluded.version, change_seq = excluded.change_seq
RETURNING version`),
		insertEvent: r.Replace(`INSERT INTO {events}
(event_id, aggregate_type, aggregate_id, version, event_type, payload, metadata, occurred_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)`),
		streamVersion: r.Replace(`SELECT version FROM {streams} WHERE aggregate_type = ?1 AND aggregate_id = ?2`),
		readEvents: r.Replace(`SELECT event_id, version, event_type, payload, metadata, occurred_at
FROM {events}
WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND version > ?3
ORDER BY version
LIMIT ?4`),
		eventIDExists: r.Replace(`SELECT EXISTS (SELECT 1 FROM {events} WHERE event_id = ?1)`),
		maxVersion:    r.Replace(`SELECT COALESCE(MAX(version), 0) FROM {events} WHERE aggregate_type = ?1 AND aggregate_id = ?2`),

		// A save is these two statements in one write transaction. The
		// first removes the aggregate's rows that s (?4) or its newest
		// stored schema version puts out of the kept window; the second
		// writes s unless a stored schema version is {kept} or more newer,
		// and then only over an older version of its own schema's row
		// (eventsource.Snapshot.Supersedes). changes() says whether it was
		// stored. (The first never changes the newest schema version the
		// second reads.) The SELECT has a WHERE, which SQLite's upsert
		// needs to parse ON CONFLICT after a SELECT.
		trimSnapshots: r.Replace(`DELETE FROM {snapshots}
WHERE aggregate_id = ?1 AND aggregate_type = ?2 AND schema_version <= MAX(?4, COALESCE(` + newest + `, 0)) - {kept}`),
		saveSnapshot: r.Replace(`INSERT INTO {snapshots} (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE ?4 > COALESCE(` + newest + `, 0) - {kept}
ON CONFLICT (aggregate_id, aggregate_type, schema_version) DO UPDATE SET
  version = excluded.version,
  event_id = excluded.event_id,
  state = excluded.state,
  created_at = excluded.created_at
WHERE excluded.version >= {snapshots}.version`),
		getSnapshot: r.Replace(`SELECT version, schema_version, state, created_at, event_id FROM {snapshots}
WHERE aggregate_id = ?1 AND aggregate_type = ?2 AND schema_version = ?3`),
		// ?2 is a JSON array of distinct ids: one statement for any
		// number of ids, with no variable limit to chunk for. CROSS JOIN
		// pins the join order: SQLite walks the array and looks each id up
		// by primary key. (Written as IN (SELECT value FROM json_each(?2)),
		// the planner, which has no statistics for json_each, scans the
		// whole table once ANALYZE says it is small.)
		getSnapshots: r.Replace(`SELECT s.aggregate_id, s.version, s.schema_version, s.state, s.created_at, s.event_id
FROM json_each(?2) AS j CROSS JOIN {snapshots} AS s
ON s.aggregate_id = j.value AND s.aggregate_type = ?1 AND s.schema_version = ?3`),
		deleteSnapshot: r.Replace(`DELETE FROM {snapshots} WHERE aggregate_id = ?1 AND aggregate_type = ?2`),
		// DeleteStaleSnapshot's compare-and-delete: one statement.
		deleteStale: r.Replace(`DELETE FROM {snapshots}
WHERE aggregate_id = ?1 AND aggregate_type = ?2 AND version = ?3 AND schema_version = ?4 AND event_id = ?5`),
		deleteByType:   r.Replace(`DELETE FROM {snapshots} WHERE aggregate_type = ?1`),
		deleteByTypeLt: r.Replace(`DELETE FROM {snapshots} WHERE aggregate_type = ?1 AND schema_version < ?2`),

		listByID:       r.Replace(list + `s.aggregate_id LIMIT ?4`),
		listMostBehind: r.Replace(list + behind + ` DESC, s.aggregate_id LIMIT ?4`),

		moveStream:  r.Replace(`UPDATE {streams} SET change_seq = ` + nextChange + ` WHERE aggregate_type = ?1 AND aggregate_id = ?2`),
		scanChanges: r.Replace(scan(`aggregate_type = ?1 AND change_seq IS NOT NULL AND (change_seq, aggregate_id) > (?4, ?5) ORDER BY change_seq, aggregate_id`, `change_seq DESC, aggregate_id DESC`)),
		scanByID:    r.Replace(scan(`aggregate_type = ?1 AND aggregate_id > ?5 ORDER BY aggregate_id`, `aggregate_id DESC`)),
		getSweepMark: r.Replace(`SELECT generation, threshold, changes, full_after, after_seq, after_id FROM {marks}
WHERE aggregate_type = ?1 AND schema_version = ?2 AND name = ?3`),
		insertMark: r.Replace(`INSERT INTO {marks} (aggregate_type, schema_version, name, generation, threshold, changes, full_after, after_seq, after_id, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING`),
		updateMark: r.Replace(`UPDATE {marks} SET generation = ?4, threshold = ?5, changes = ?6, full_after = ?7, after_seq = ?8, after_id = ?9, updated_at = ?10
WHERE aggregate_type = ?1 AND schema_version = ?2 AND name = ?3 AND generation = ?11`),
		deleteMarks:   r.Replace(`DELETE FROM {marks} WHERE aggregate_type = ?1`),
		deleteMarksLt: r.Replace(`DELETE FROM {marks} WHERE aggregate_type = ?1 AND schema_version < ?2`),
	}
}
