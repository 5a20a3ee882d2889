// Package pgstore is the PostgreSQL backend of evsnap: an
// [eventsource.Store] (events, snapshots and aggregate listings in one
// database) on a pgx/v5 connection pool.
//
//	store, err := pgstore.Open(ctx, "postgres://app@db:5432/app?sslmode=verify-full")
//	if err != nil { ... }          // names the DSN, password masked
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil { ... }  // once per deployment
//	repo, err := eventsource.NewRepository[Account](store, reg)
//
// [New] wraps a pool the program already has; neither New nor [Open]
// creates anything in the database.
//
// # Tables
//
// Three tables in one schema ("public" unless [WithSchema]), their names
// set with [WithEventsTable], [WithStreamsTable] and [WithSnapshotsTable]:
//
//   - events (position bigint identity PK, event_id uuid UNIQUE,
//     aggregate_type text, aggregate_id uuid, version bigint, event_type
//     text, payload jsonb, metadata jsonb, occurred_at timestamptz;
//     UNIQUE (aggregate_type, aggregate_id, version)): the append-only log.
//     position is the order of insertion, which is not quite the order of
//     commit.
//   - streams (aggregate_type text, aggregate_id uuid, version bigint;
//     PK (aggregate_type, aggregate_id)): each aggregate's head version,
//     written in the same statement as its events.
//   - snapshots (aggregate_id uuid, aggregate_type varchar(255), version
//     bigint, schema_version integer, state jsonb, created_at timestamptz,
//     event_id uuid; PK (aggregate_id, aggregate_type, schema_version)):
//     the tutorial's table, with a row per aggregate and kept schema
//     version (migration 4, decision 28; one row per aggregate before),
//     without the tutorial's (aggregate_type, schema_version) index, which
//     migration 2 drops: before the table had statistics the planner took
//     it for lookups of one aggregate.
//     event_id (migration 3) is the id of the stream's event at the
//     snapshot's version, which ties the snapshot to its history (see
//     [eventsource.Snapshot]). Migration 3 fills it from the events table
//     and deletes the snapshots whose event is not there (ahead of their
//     stream after a restore, or of a stream that is gone): they are
//     rebuilt by the next due save or the snapshotter's sweep. A
//     deployment that keeps only its snapshots in this store, and its
//     events elsewhere, loses every snapshot to that migration.
//
// Index and constraint names are derived from the table names (for example
// "snapshots_pkey"), so two stores with different table names can
// share a schema without an index of one silently standing in for the
// other's. Names are validated ([a-z_][a-z0-9_]*, table names at most 44
// characters so derived names fit PostgreSQL's 63) and quoted with
// pgx.Identifier; no SQL is built from anything else.
//
// # Migrations
//
// The schema is created by numbered SQL files embedded in the binary
// (migrations/001_create_tables.sql, ...), rendered with the store's quoted
// names and applied by github.com/pressly/goose/v3 (its Provider, no
// global state). [Store.Migrate] applies the ones not yet applied, each in
// its own transaction (a file that starts with goose's "-- +goose NO
// TRANSACTION" runs outside one, a statement at a time: migration 4 builds
// the snapshots table's new key CONCURRENTLY, so the table stays in use
// while it migrates), while goose holds a session-level advisory lock on
// a key derived from the schema name, so replicas that start together are
// safe: one applies, the others wait and find nothing to do. Each is
// recorded in the migrations table ("evsnap_migrations",
// [WithMigrationsTable]) in goose's layout (id, version_id, is_applied,
// tstamp) plus a tables column naming the store's tables, so stores with
// different tables share it; running Migrate again is a no-op. A
// migrations table in the layout of the releases before goose (tables,
// version, name, applied_at) is converted in place, keeping its records
// and grants, by the first Migrate of this release. The snapshotter's
// migrate command calls it; [Store.PendingMigrations] and
// [Store.CheckMigrated] report without changing anything, in either
// layout. An operation on a store whose tables are missing fails with an
// error matching [ErrNotMigrated] that says to run Migrate.
//
// # Appending and reading
//
// [Store.Append] is a single statement, one round trip: a common table
// expression advances the stream row (a conditional UPDATE for an expected
// version N > 0, INSERT ... ON CONFLICT DO NOTHING for NoStream, an upsert
// for AnyVersion) and inserts the events from arrays (unnest) at the
// versions after it. Concurrent appenders queue on the stream row's lock;
// when the expected version does not hold, nothing is inserted and the
// *eventsource.ConflictError carries the version read afresh. For saves of
// 10 events it costs the same as a pipelined pgx.Batch (BEGIN, UPDATE,
// INSERT, COMMIT) and about 40% less than COPY in a transaction
// (BenchmarkAppendStrategies), and it needs no client-side transaction or
// branching on the UPDATE's result. An
// event id that is already stored is an *eventsource.DuplicateEventIDError
// (the unique violation translated, the id looked up afresh), and a payload
// that is not JSON an error matching eventsource.ErrInvalidArgument.
// AppendResult.CommittedAt is the server's
// clock at the end of the statement, in UTC.
//
// [Store.ReadEvents] streams rows in version order, a page of
// [DefaultReadPageSize] events per query ([WithReadPageSize]), each page
// continuing from the last version read. The bound on a page is what keeps
// PostgreSQL on the (aggregate_type, aggregate_id, version) index: for an
// unbounded read of a long stream whose rows are scattered among other
// aggregates' it prefers a bitmap scan and a sort, which spills to disk at
// the default work_mem. Payloads come back as stored (jsonb's normalised
// text); decoding them is the caller's (RecordedEvent.Event is nil).
//
// [Store.LoadSnapshotAndEvents] reads what a repository's load needs in
// one statement, one round trip: the snapshot (a primary-key lookup) and
// the first page of events from its version, as one result (decision
// 36). One statement sees the database at one moment, so the events
// always start where the snapshot returned says.
//
// [Store.GetSnapshots] reads many
// snapshots with one primary-key lookup of an array of ids; the
// snapshotter worker uses it for the decision reads of the notices it
// handles at the same time. [Store.Statements] returns the store's SQL,
// for EXPLAIN and pgbench.
//
// # Snapshots
//
// [Store.SaveSnapshot] is one statement: common table expressions find
// the aggregate's newest schema version (stored or given) and delete its
// rows out of the kept schema versions ([WithKeptSchemaVersions], 2 by
// default), and an INSERT ... ON CONFLICT (aggregate_id, aggregate_type,
// schema_version) DO UPDATE ... WHERE excluded.version >= version, which is
// [eventsource.Snapshot.Supersedes] done atomically by the server, writes
// the snapshot unless a kept newer schema version refuses it: racing
// writers never move a row backwards. [Store.SaveSnapshots] is the same
// statement over arrays. A load reads only the row of its schema version,
// by primary key. [Store.DeleteStaleSnapshot], which a load calls on a
// snapshot not tied to its stream's history, is one DELETE by primary key
// that also compares version and event_id, so it never removes a snapshot
// written since.
//
// Snapshot rows are rewritten all the time, and PostgreSQL never
// overwrites a row: every upsert leaves a dead row version behind.
// The table is created with fillfactor 50, so each page keeps room for new
// versions of its rows. An upsert changes no indexed column (schema_version
// only on a schema bump), so the update is then HOT (no index entries) and
// the dead versions are pruned from the page without VACUUM. Its
// autovacuum settings (autovacuum_vacuum_scale_factor 0.02, threshold 200,
// and the same for its TOAST table, which holds states over about 2 KB and
// is never updated HOT) clean the rest up early. 200,000 upserts on 2,000
// rows of 1 KB left the table within 12% of its starting size with 99.8%
// of updates HOT, where PostgreSQL's defaults grew it 37-fold
// (BenchmarkSnapshotChurn). The streams table, rewritten on every append,
// gets fillfactor 80 and the same autovacuum settings.
//
// # Counting and pruning at scale
//
// [Store.CountAggregates] ([eventsource.AggregateCounter]) counts up to
// 10,000 aggregates of a type exactly and otherwise answers with the
// planner's estimate of the type's rows in the streams table, which costs
// planning only. [Store.PruneSnapshots] ([eventsource.SnapshotPruner])
// deletes a type's old snapshots one batch of aggregate ids at a time,
// each batch one statement bounded by its size on the snapshots' primary
// key (see docs/decisions/0038-admin-commands-at-scale.md).
//
// # Listing aggregates
//
// [Store.ListAggregates] reads the streams table joined to each
// aggregate's snapshot of ListOptions.SchemaVersion (or of its newest
// schema version) by primary key, never the events:
//
//	SELECT st.aggregate_id, st.version, coalesce(sn.version, 0), coalesce(sn.schema_version, 0)
//	FROM streams st LEFT JOIN LATERAL (
//	  SELECT version, schema_version FROM snapshots x
//	  WHERE x.aggregate_id = st.aggregate_id AND x.aggregate_type = st.aggregate_type
//	    AND ($schema = 0 OR x.schema_version = $schema)
//	  ORDER BY x.schema_version DESC LIMIT 1) sn ON true
//	WHERE st.aggregate_type = $1 AND greatest(st.version - coalesce(sn.version, 0), 0) >= $min_behind
//	  AND st.aggregate_id > $after_id ORDER BY st.aggregate_id LIMIT $n
//
// In id order it pages through the streams primary key a thousand
// aggregates per query and holds no query open while the caller works; the
// most-behind order computes every aggregate's lag and sorts, costing
// O(aggregates of the type).
//
// # The sweep's change order
//
// The Store is an [eventsource.SweepStore] (migration 5, decision 37):
// every insert or update of a stream row sets its change_xid to the id
// of the writing transaction (pg_current_xact_id(), by a trigger, so the
// appends of older binaries move their streams too), and a partial index
// (aggregate_type, change_xid, aggregate_id) holds the rows in that
// order. [Store.ScanAggregates] reads one page in one statement: the
// streams after a position, up to the xmin of the statement's own
// snapshot (transactions commit out of the order of their ids; every one
// below xmin has ended, so no later commit lands before the page's end),
// each joined to its snapshot by primary key. A scan in id order walks
// the primary key instead. The page size is a constant in the SQL, so a
// generic plan stays an index walk. [Store.DeleteSnapshot] and
// [Store.DeleteStaleSnapshot] move the stream in the same statement when
// they remove a snapshot, and [Store.DeleteSnapshotsByType] removes the
// sweep marks of the schema versions it prunes. The marks live in
// streams_sweep_marks, stamped with the cluster's system identifier: a
// mark restored into another cluster is ignored. A write transaction
// left open anywhere on the server holds xmin, and so the sweep's passes
// in change order, back (nothing is lost; they catch up once it ends).
//
// # Privileges
//
// Migrate needs CREATE on the database when the schema does not exist yet,
// and CREATE on the schema. The role an application runs as needs only:
//
//	GRANT USAGE ON SCHEMA evsnap TO app;
//	GRANT SELECT, INSERT ON evsnap.events TO app;
//	GRANT SELECT, INSERT, UPDATE ON evsnap.streams TO app;
//	GRANT SELECT, INSERT, UPDATE, DELETE ON evsnap.snapshots TO app;
//	GRANT SELECT, INSERT, UPDATE, DELETE ON evsnap.streams_sweep_marks TO app;
//	GRANT SELECT ON evsnap.evsnap_migrations TO app;  -- for CheckMigrated
//
// (DELETE on snapshots: a save removes the aggregate's rows of schema
// versions the store no longer keeps, and a load removes a stale one.
// The sweep marks are the snapshotter's, but DeleteSnapshotsByType
// removes the marks of the schema versions it removes, and the
// conformance suite this grant list is checked with reads and writes
// them.)
//
// (The events position is an identity column; it needs no grant on its
// sequence.)
//
// # Telemetry
//
// Every operation has a client span (pgstore.Append, pgstore.ReadEvents,
// pgstore.StreamVersion, pgstore.SaveSnapshot,
// pgstore.SaveSnapshots, pgstore.GetSnapshot, pgstore.GetSnapshots,
// pgstore.DeleteSnapshot, pgstore.DeleteStaleSnapshot,
// pgstore.DeleteSnapshotsByType, pgstore.LoadSnapshotAndEvents,
// pgstore.ListAggregates, pgstore.CountAggregates,
// pgstore.PruneSnapshots, pgstore.ScanAggregates, pgstore.GetSweepMark,
// pgstore.PutSweepMark, pgstore.Migrate)
// from the tracer provider of [WithTracerProvider], with the aggregate's
// type and id as attributes. The store logs the migrations it applies to the
// [WithLogger] logger and never logs or returns a password: see
// [RedactDSN].
package pgstore
