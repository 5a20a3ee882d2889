package pgstore

import (
	"strconv"
)

// queries holds the store's SQL, built once from the quoted table names.
type queries struct {
	// appendExact, appendNoStream and appendAny advance the stream row and
	// insert the events in one statement (one round trip, one implicit
	// transaction). They return the new head version and the time, or no
	// row when the expected version did not hold.
	appendExact, appendNoStream, appendAny string
	streamVersion                          string
	storedEventID                          string
	readEvents                             string
	loadSnapshotAndEvents                  string

	getSnapshots string

	saveSnapshot, saveSnapshots, getSnapshot, deleteSnapshot string
	deleteStaleSnapshot                                      string
	deleteSnapshotsByType, deleteSnapshotsBelow              string

	listByID, listMostBehind string
	// listByIDOf and listMostBehindOf list against the snapshot of one
	// schema version ($2 > 0): a plain join, which the planner may run as
	// a hash join, where the lateral newest-row lookup is one index probe
	// per aggregate.
	listByIDOf, listMostBehindOf string
}

func buildQueries(s *Store) queries {
	ev, st, sn := s.events.String(), s.streams.String(), s.snapshots.String()

	// $1 aggregate type, $2 aggregate id, $3 number of events, $4..$8 the
	// events' columns as arrays, $9 (exact only) the expected version.
	insertEvents := `,
ins AS (
	INSERT INTO ` + ev + ` (event_id, aggregate_type, aggregate_id, version, event_type, payload, metadata, occurred_at)
	SELECT e.event_id, $1, $2, head.version - $3 + e.ord, e.event_type, e.payload, e.metadata, e.occurred_at
	FROM head, unnest($4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[], $8::timestamptz[])
		WITH ORDINALITY AS e(event_id, event_type, payload, metadata, occurred_at, ord)
)
SELECT version, clock_timestamp() FROM head`

	var q queries
	q.appendExact = `WITH head AS (
	UPDATE ` + st + ` SET version = version + $3::bigint
	WHERE aggregate_type = $1::text AND aggregate_id = $2::uuid AND version = $9::bigint
	RETURNING version
)` + insertEvents
	q.appendNoStream = `WITH head AS (
	INSERT INTO ` + st + ` (aggregate_type, aggregate_id, version) VALUES ($1::text, $2::uuid, $3::bigint)
	ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
	RETURNING version
)` + insertEvents
	q.appendAny = `WITH head AS (
	INSERT INTO ` + st + ` AS s (aggregate_type, aggregate_id, version) VALUES ($1::text, $2::uuid, $3::bigint)
	ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = s.version + excluded.version
	RETURNING version
)` + insertEvents

	q.streamVersion = `SELECT version FROM ` + st + ` WHERE aggregate_type = $1 AND aggregate_id = $2`

	// The first of a refused append's event ids ($1, in append order)
	// that is already stored: what a unique violation on the event id
	// does not say when the server hides its detail.
	q.storedEventID = `SELECT a.id FROM unnest($1::uuid[]) WITH ORDINALITY AS a(id, ord)
WHERE EXISTS (SELECT 1 FROM ` + ev + ` e WHERE e.event_id = a.id)
ORDER BY a.ord LIMIT 1`

	// The LIMIT is a constant so the planner knows a page is small and
	// walks the (aggregate_type, aggregate_id, version) index in order
	// instead of bitmap-scanning a long stream and sorting it.
	q.readEvents = `SELECT event_id, version, event_type, payload, metadata, occurred_at FROM ` + ev + `
WHERE aggregate_type = $1 AND aggregate_id = $2 AND version > $3
ORDER BY version
LIMIT ` + strconv.Itoa(s.cfg.readPageSize)

	// A load in one statement: the snapshot of schema version $3 (read
	// once, by primary key, into a CTE) and the first page of events from
	// its version (or from the start), as one result. Its rows have the
	// events' columns and a seventh, the schema version, set only on the
	// snapshot's row (whose event_type and metadata are NULL; its payload
	// column holds the state, its occurred_at the created_at). One
	// statement sees one snapshot of the database, so the events always
	// start where the snapshot returned says; and it costs the client one
	// query's protocol messages where a pgx.Batch of two cost twice as
	// many, plus the pipeline's own allocations.
	q.loadSnapshotAndEvents = `WITH snap AS MATERIALIZED (
	SELECT event_id, version, state, created_at, schema_version FROM ` + sn + `
	WHERE aggregate_id = $2 AND aggregate_type = $1 AND schema_version = $3
)
SELECT event_id, version, NULL::text, state, NULL::jsonb, created_at, schema_version FROM snap
UNION ALL
(SELECT event_id, version, event_type, payload, metadata, occurred_at, NULL::int FROM ` + ev + `
WHERE aggregate_type = $1 AND aggregate_id = $2 AND version >= coalesce((SELECT version FROM snap), 1)
ORDER BY version
LIMIT ` + strconv.Itoa(s.cfg.readPageSize) + `)`

	// A batch of saves, as one statement over arrays (the caller has
	// resolved the batch with storekit.ResolveSnapshotBatch, so no row of
	// it is out of the window another puts up): stored reads, for each
	// row, its aggregate's newest and oldest stored schema versions (one
	// walk of the aggregate's primary-key entries); trim deletes the
	// aggregate's rows that the newer of the given and the stored schema
	// version puts out of the kept window (scanning for them only when the
	// oldest is out: most saves find one row, or rows all kept, and delete
	// nothing); the insert writes the given rows the stored newest keeps,
	// each over its own schema's row only when
	// eventsource.Snapshot.Supersedes says so (ON CONFLICT ... WHERE).
	// trim and the insert never touch the same row: one takes schema
	// versions at most the window's top minus kept, the other above.
	// RETURNING names the rows written. The input goes in primary-key
	// order (the caller sorts a batch), so concurrent batches lock rows in
	// one order and cannot deadlock.
	kept := strconv.Itoa(s.cfg.kept)
	q.saveSnapshots = `WITH input AS (
	SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::int[], $5::jsonb[], $6::timestamptz[], $7::uuid[])
		WITH ORDINALITY AS u(aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id, ord)
),
stored AS (
	SELECT i.*, x.newest, x.oldest, greatest(i.schema_version, x.newest) AS window_top
	FROM input i CROSS JOIN LATERAL (SELECT max(schema_version) AS newest, min(schema_version) AS oldest FROM ` + sn + ` x
		WHERE x.aggregate_id = i.aggregate_id AND x.aggregate_type = i.aggregate_type) x
),
trim AS (
	DELETE FROM ` + sn + ` d USING stored t
	WHERE t.oldest <= t.window_top - ` + kept + `
		AND d.aggregate_id = t.aggregate_id AND d.aggregate_type = t.aggregate_type AND d.schema_version <= t.window_top - ` + kept + `
)
INSERT INTO ` + sn + ` AS s (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
SELECT aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id FROM stored
WHERE schema_version > coalesce(newest, 0) - ` + kept + `
ORDER BY ord
ON CONFLICT (aggregate_id, aggregate_type, schema_version) DO UPDATE
SET version = excluded.version, state = excluded.state, created_at = excluded.created_at, event_id = excluded.event_id
WHERE excluded.version >= s.version
RETURNING aggregate_id, aggregate_type, schema_version`

	// One snapshot: the same steps for one row.
	q.saveSnapshot = `WITH newest AS (
	SELECT greatest($4::int, max(schema_version)) AS schema_version, min(schema_version) AS oldest
	FROM ` + sn + ` WHERE aggregate_id = $1::uuid AND aggregate_type = $2::text
),
trim AS (
	DELETE FROM ` + sn + ` d USING newest n
	WHERE n.oldest <= n.schema_version - ` + kept + `
		AND d.aggregate_id = $1::uuid AND d.aggregate_type = $2::text AND d.schema_version <= n.schema_version - ` + kept + `
)
INSERT INTO ` + sn + ` AS s (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
SELECT $1::uuid, $2::text, $3::bigint, $4::int, $5::jsonb, $6::timestamptz, $7::uuid FROM newest n WHERE $4::int > n.schema_version - ` + kept + `
ON CONFLICT (aggregate_id, aggregate_type, schema_version) DO UPDATE
SET version = excluded.version, state = excluded.state, created_at = excluded.created_at, event_id = excluded.event_id
WHERE excluded.version >= s.version
RETURNING aggregate_id, aggregate_type, schema_version`
	q.getSnapshots = `SELECT aggregate_id, version, schema_version, state, created_at, event_id FROM ` + sn + `
WHERE aggregate_type = $1 AND schema_version = $3 AND aggregate_id = ANY($2::uuid[])`
	q.getSnapshot = `SELECT version, schema_version, state, created_at, event_id FROM ` + sn + `
WHERE aggregate_id = $1 AND aggregate_type = $2 AND schema_version = $3`
	// A removal of snapshots moves the aggregate's stream to the end of
	// the change order in the same statement (the sweep must see an
	// aggregate that fell behind without an append; see
	// eventsource.SweepStore): the stream's row is updated only when a
	// snapshot was removed.
	moved := func(del string) string {
		return `WITH d AS (` + del + ` RETURNING 1),
m AS (UPDATE ` + st + ` SET change_xid = pg_current_xact_id()
	WHERE aggregate_type = $2 AND aggregate_id = $1 AND EXISTS (SELECT 1 FROM d))
SELECT count(*) FROM d`
	}
	q.deleteSnapshot = moved(`DELETE FROM ` + sn + ` WHERE aggregate_id = $1 AND aggregate_type = $2`)
	// DeleteStaleSnapshot's compare-and-delete: one statement, by primary
	// key, so the comparison and the delete are atomic.
	q.deleteStaleSnapshot = moved(`DELETE FROM ` + sn + ` WHERE aggregate_id = $1 AND aggregate_type = $2 AND schema_version = $4
	AND version = $3 AND event_id = $5`)
	// A bulk delete removes the sweep marks of the schema versions whose
	// snapshots it removes, in the same statement (see
	// eventsource.SweepStore): their sweeps start over with a full pass.
	q.deleteSnapshotsByType = `WITH m AS (DELETE FROM ` + s.marks.String() + ` WHERE aggregate_type = $1)
DELETE FROM ` + sn + ` WHERE aggregate_type = $1`
	q.deleteSnapshotsBelow = `WITH m AS (DELETE FROM ` + s.marks.String() + ` WHERE aggregate_type = $1 AND schema_version < $2)
DELETE FROM ` + sn + ` WHERE aggregate_type = $1 AND schema_version < $2`

	// The lister reads the streams table (one row per aggregate) and, for
	// each aggregate, the snapshot of schema version $2 or (0) of the
	// newest schema version it has: a primary-key lookup, or a backward
	// step on the primary key from (id, type). It never touches the
	// events. $1 type, $2 schema version, $3 min behind, $4 after id
	// (ByID), then the limit.
	listCols := `SELECT st.aggregate_id, st.version, coalesce(sn.version, 0), coalesce(sn.schema_version, 0),
	greatest(st.version - coalesce(sn.version, 0), 0) AS behind
FROM ` + st + ` st
LEFT JOIN LATERAL (
	SELECT x.version, x.schema_version FROM ` + sn + ` x
	WHERE x.aggregate_id = st.aggregate_id AND x.aggregate_type = st.aggregate_type AND ($2::int = 0 OR x.schema_version = $2::int)
	ORDER BY x.schema_version DESC
	LIMIT 1
) sn ON true
WHERE st.aggregate_type = $1 AND greatest(st.version - coalesce(sn.version, 0), 0) >= $3`
	q.listByID = listCols + ` AND st.aggregate_id > $4
ORDER BY st.aggregate_id
LIMIT $5`
	q.listMostBehind = listCols + `
ORDER BY behind DESC, st.aggregate_id
LIMIT $4`
	// Of one schema version. ByID also bounds the snapshots' side by the
	// page's start, so a merge join starts there rather than at the
	// table's first row (every page would read all the rows before it).
	listOf := func(extraJoin string) string {
		return `SELECT st.aggregate_id, st.version, coalesce(sn.version, 0), coalesce(sn.schema_version, 0),
	greatest(st.version - coalesce(sn.version, 0), 0) AS behind
FROM ` + st + ` st
LEFT JOIN ` + sn + ` sn ON sn.aggregate_id = st.aggregate_id AND sn.aggregate_type = st.aggregate_type AND sn.schema_version = $2::int` + extraJoin + `
WHERE st.aggregate_type = $1 AND greatest(st.version - coalesce(sn.version, 0), 0) >= $3`
	}
	q.listByIDOf = listOf(` AND sn.aggregate_id > $4`) + ` AND st.aggregate_id > $4
ORDER BY st.aggregate_id
LIMIT $5`
	q.listMostBehindOf = listOf("") + `
ORDER BY behind DESC, st.aggregate_id
LIMIT $4`
	return q
}

// Statements is the SQL a [Store] runs to read and write snapshots and to
// read events, rendered with its table names: for EXPLAIN, for pgbench
// scripts that measure the database's floor under the store, and for
// review. Changing the strings changes nothing the store does.
type Statements struct {
	// ReadEvents reads one page of a stream: $1 aggregate type, $2
	// aggregate id, $3 the version to read after.
	ReadEvents string
	// GetSnapshot reads one snapshot (version, schema version, state,
	// created at, event id): $1 aggregate id, $2 aggregate type, $3
	// schema version.
	GetSnapshot string
	// GetSnapshots reads many: $1 aggregate type, $2 aggregate ids
	// (uuid[]), $3 schema version.
	GetSnapshots string
	// SaveSnapshot upserts one snapshot and applies the kept schema
	// versions: $1 aggregate id, $2 aggregate type, $3 version, $4
	// schema version, $5 state, $6 created at, $7 the id of the event at
	// the version. It returns the row it wrote, if any.
	SaveSnapshot string
	// SaveSnapshots upserts many: $1..$7 arrays of SaveSnapshot's
	// arguments, in primary-key order (aggregate id, type, schema
	// version).
	SaveSnapshots string
}

// Statements returns the store's SQL.
func (s *Store) Statements() Statements {
	return Statements{
		ReadEvents:    s.q.readEvents,
		GetSnapshot:   s.q.getSnapshot,
		GetSnapshots:  s.q.getSnapshots,
		SaveSnapshot:  s.q.saveSnapshot,
		SaveSnapshots: s.q.saveSnapshots,
	}
}
