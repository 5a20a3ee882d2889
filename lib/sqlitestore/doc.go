// Package sqlitestore is the SQLite backend of evsnap: an
// [eventsource.Store] (events, snapshots and aggregate listings) on one
// SQLite database, through modernc.org/sqlite (pure Go, no cgo). A batch
// of snapshots is saved in one transaction (one commit) and read with one
// query; a load's snapshot and first events are read in one read
// transaction.
//
//	s, err := sqlitestore.Open(ctx, "./data/evsnap.db")
//	if err != nil { ... }
//	defer s.Close()
//	if err := s.Migrate(ctx); err != nil { ... }
//	repo, err := eventsource.NewRepository[Account](s, reg)
//
// # Files and memory
//
// [Open] takes a file path (its directory must exist; the file is created)
// or ":memory:". A file database is put in WAL mode, so reads never wait for
// a write and a write never waits for reads. Every connection to a plain
// ":memory:" database is a separate, empty database, so an in-memory store
// keeps exactly one connection that every call shares; the data lives as
// long as the Store. Use it for tests and throwaway runs.
//
// [New] wraps a *sql.DB the caller opened and manages.
//
// # Concurrency
//
// A file store writes through a single connection and reads through a pool
// of read-only connections (see [WithReadConns]). Writers in one process
// queue for the write connection in database/sql, so they never meet
// SQLITE_BUSY ("database is locked"), however many goroutines write. Write
// transactions begin with BEGIN IMMEDIATE: they take SQLite's write lock
// before reading anything, so a transaction never has to upgrade a stale
// read snapshot, which WAL refuses at once. Another process, or another
// Store on the same file, contends for the write lock through SQLite's busy
// handler, which retries for up to the busy timeout ([WithBusyTimeout],
// default 5s) before an error says the database stayed locked.
//
// Reads fetch events a window at a time and hold no connection while the
// caller iterates, so a caller may call the store inside a ReadEvents loop,
// even on the single connection of an in-memory store.
//
// # Durability
//
// By default ([SyncFull]) every commit syncs the write-ahead log: an append
// that returned is on disk, as with PostgreSQL's default
// synchronous_commit=on. [WithSynchronous]([SyncNormal]) skips that sync for
// several times the write throughput; the database stays consistent, but an
// OS crash or power loss can roll back the last commits. The decision record
// docs/decisions/0008-sqlitestore-concurrency-and-durability.md has the
// measurements.
//
// # Migrations
//
// Nothing is created implicitly. [Store.Migrate] applies the numbered SQL
// migrations embedded in the package (templated only with validated table
// names) with github.com/pressly/goose/v3, each in its own transaction,
// and records them in a migrations table (default "evsnap_migrations") in
// goose's layout plus a scope column naming the store's tables, so it is
// idempotent and two stores with different table names can share a file.
// Migrators in several processes are safe: a migration checks inside its
// write transaction that no other one recorded it meanwhile. A migrations
// table in the layout of the releases before goose is rebuilt in goose's,
// records kept, by the first Migrate of this release. Using a store before
// Migrate returns an error matching [ErrNotMigrated].
//
// # Schema
//
// The logical schema is the PostgreSQL backend's, in SQLite types: ids are
// canonical lowercase UUID strings (TEXT, ordered like the UUIDs' bytes),
// JSON is TEXT guarded by CHECK (json_valid(...)), times are INTEGER
// microseconds since the Unix epoch (UTC, exact to the microsecond). Tables
// are STRICT. Index names derive from their table's name.
//
//   - events: position INTEGER PRIMARY KEY AUTOINCREMENT (global order),
//     event_id (unique), aggregate_type, aggregate_id, version (unique per
//     aggregate: the index reads walk in version order), event_type,
//     payload, metadata (JSON of [eventsource.Metadata]), occurred_at.
//   - streams: (aggregate_type, aggregate_id) primary key and the head
//     version, maintained in the append transaction. It makes
//     StreamVersion one lookup and lets ListAggregates list a type's
//     aggregates without reading events. Since migration 4 (decision 37)
//     it also keeps change_seq, the stream's place in its type's change
//     order (one past the type's highest, taken in the append's write
//     transaction: SQLite commits one at a time, so this is commit
//     order; triggers set it for the appends of older binaries), with a
//     partial (aggregate_type, change_seq, aggregate_id) index: the Store
//     is an [eventsource.SweepStore], whose scans walk that index (or the
//     primary key, in id order) one page per statement. DeleteSnapshot
//     and DeleteStaleSnapshot move the stream when they remove a
//     snapshot.
//   - streams_sweep_marks: the reconciliation sweep's marks, one per
//     sweeper, aggregate type and schema version; DeleteSnapshotsByType
//     removes those of the schema versions it prunes.
//   - snapshots: the tutorial's table, primary key (aggregate_id,
//     aggregate_type, schema_version): a row per aggregate and kept schema
//     version ([WithKeptSchemaVersions], 2 by default; decision 28), with
//     an (aggregate_type, schema_version) index for
//     DeleteSnapshotsByType, and event_id, the id of the stream's event at
//     the snapshot's version, which ties it to its history (see
//     [eventsource.Snapshot]). A save is one write transaction of two
//     statements: a DELETE of the aggregate's rows out of the kept window
//     and the upsert, which never moves a row backwards; a load reads only
//     its schema version's row. DeleteStaleSnapshot is one DELETE that
//     compares version, schema_version and event_id, so it never removes a
//     snapshot written since. Migration 2 added event_id, filled from the
//     events table; it drops the snapshots whose event the store does not
//     have (ahead of their stream after a restore, or of a stream that is
//     gone), which the next due save or the snapshotter's sweep rebuilds.
//     Migration 3 rebuilt the table with the schema version in its key,
//     each snapshot as the row of its schema version.
//
// [Store.CountAggregates] ([eventsource.AggregateCounter]) always counts
// exactly, a walk of the streams key (0.1 to 0.3 s per million aggregates
// of the type); [Store.PruneSnapshots] ([eventsource.SnapshotPruner])
// deletes a type's old snapshots one short write transaction per batch of
// aggregate ids, walking the snapshots' primary key.
//
// Table names are configurable ([WithEventsTable], [WithSnapshotsTable],
// [WithStreamsTable], [WithMigrationsTable]).
//
// # Tracing
//
// Every operation starts an OpenTelemetry span named "sqlitestore.<Method>"
// from the provider given with [WithTracerProvider] (the global one by
// default). The package uses the OpenTelemetry API only.
package sqlitestore
