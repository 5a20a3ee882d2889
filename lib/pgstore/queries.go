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
	loadEvents                             string

	getSnapshots string

	saveSnapshot, saveSnapshots, getSnapshot, deleteSnapshot string
	deleteStaleSnapshot                                      string
	deleteSnapshotsByType, deleteSnapshotsBelow              string

	listByID, listMostBehind string
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

	// The first page of a load: the events from the snapshot's version
	// (when its schema version is $3) or from the start, found by an
	// InitPlan on the snapshots primary key, so a pgx.Batch of this and
	// getSnapshot reads a whole load in one round trip. The schema
	// version is compared in the select list, not the WHERE, so that the
	// lookup names only the primary key's columns (see migration 2).
	q.loadEvents = `SELECT event_id, version, event_type, payload, metadata, occurred_at FROM ` + ev + `
WHERE aggregate_type = $1 AND aggregate_id = $2 AND version >= coalesce(
	(SELECT CASE WHEN schema_version = $3 THEN version END FROM ` + sn + ` WHERE aggregate_id = $2 AND aggregate_type = $1), 1)
ORDER BY version
LIMIT ` + strconv.Itoa(s.cfg.readPageSize)

	// Snapshot.Supersedes, as SQL: the stored row is replaced unless the
	// new one has a lower version or an older schema version.
	q.saveSnapshot = `INSERT INTO ` + sn + ` AS s (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE
SET version = excluded.version, schema_version = excluded.schema_version, state = excluded.state, created_at = excluded.created_at,
	event_id = excluded.event_id
WHERE excluded.version >= s.version AND excluded.schema_version >= s.schema_version`
	// The batch form: the same rule for rows given as arrays, in the
	// order given (primary-key order, so concurrent batches lock rows in
	// one order and cannot deadlock). RETURNING names the rows written.
	q.saveSnapshots = `INSERT INTO ` + sn + ` AS s (aggregate_id, aggregate_type, version, schema_version, state, created_at, event_id)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::int[], $5::jsonb[], $6::timestamptz[], $7::uuid[])
ON CONFLICT (aggregate_id, aggregate_type) DO UPDATE
SET version = excluded.version, schema_version = excluded.schema_version, state = excluded.state, created_at = excluded.created_at,
	event_id = excluded.event_id
WHERE excluded.version >= s.version AND excluded.schema_version >= s.schema_version
RETURNING aggregate_id, aggregate_type`
	q.getSnapshots = `SELECT aggregate_id, version, schema_version, state, created_at, event_id FROM ` + sn + ` WHERE aggregate_type = $1 AND aggregate_id = ANY($2::uuid[])`
	q.getSnapshot = `SELECT version, schema_version, state, created_at, event_id FROM ` + sn + ` WHERE aggregate_id = $1 AND aggregate_type = $2`
	q.deleteSnapshot = `DELETE FROM ` + sn + ` WHERE aggregate_id = $1 AND aggregate_type = $2`
	// DeleteStaleSnapshot's compare-and-delete: one statement, by primary
	// key, so the comparison and the delete are atomic.
	q.deleteStaleSnapshot = `DELETE FROM ` + sn + ` WHERE aggregate_id = $1 AND aggregate_type = $2
	AND version = $3 AND schema_version = $4 AND event_id = $5`
	q.deleteSnapshotsByType = `DELETE FROM ` + sn + ` WHERE aggregate_type = $1`
	q.deleteSnapshotsBelow = `DELETE FROM ` + sn + ` WHERE aggregate_type = $1 AND schema_version < $2`

	// The lister reads the streams table (one row per aggregate) joined to
	// the snapshots by primary key; it never touches the events.
	// $1 type, $2 min behind, $3 after id (ByID), $4 limit.
	listCols := `SELECT st.aggregate_id, st.version, coalesce(sn.version, 0), coalesce(sn.schema_version, 0),
	greatest(st.version - coalesce(sn.version, 0), 0) AS behind
FROM ` + st + ` st
LEFT JOIN ` + sn + ` sn ON sn.aggregate_id = st.aggregate_id AND sn.aggregate_type = st.aggregate_type
WHERE st.aggregate_type = $1 AND greatest(st.version - coalesce(sn.version, 0), 0) >= $2`
	q.listByID = listCols + ` AND st.aggregate_id > $3
ORDER BY st.aggregate_id
LIMIT $4`
	q.listMostBehind = listCols + `
ORDER BY behind DESC, st.aggregate_id
LIMIT $3`
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
	// created at, event id): $1 aggregate id, $2 aggregate type.
	GetSnapshot string
	// GetSnapshots reads many: $1 aggregate type, $2 aggregate ids (uuid[]).
	GetSnapshots string
	// SaveSnapshot upserts one snapshot: $1 aggregate id, $2 aggregate
	// type, $3 version, $4 schema version, $5 state, $6 created at, $7
	// the id of the event at the version.
	SaveSnapshot string
	// SaveSnapshots upserts many: $1..$7 arrays of SaveSnapshot's
	// arguments, in primary-key order (aggregate id, then type).
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
