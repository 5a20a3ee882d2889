-- 0001: the event, stream and snapshot tables.
--
-- Identifiers come from validated table names (^[a-z_][a-z0-9_]{0,62}$) and
-- are quoted; index names are derived from their table's name, so two stores
-- with different table names can share one database file.
--
-- Ids are canonical lowercase UUID strings (they sort like the UUID's 16
-- bytes); JSON is TEXT checked with json_valid; times are INTEGER
-- microseconds since the Unix epoch, UTC.

CREATE TABLE IF NOT EXISTS "{{.Events}}" (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_type     TEXT    NOT NULL,
    payload        TEXT    NOT NULL CHECK (json_valid(payload)),
    metadata       TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    occurred_at    INTEGER NOT NULL
) STRICT;

CREATE UNIQUE INDEX IF NOT EXISTS "{{.Events}}_event_id_key"
    ON "{{.Events}}" (event_id);

-- Reads of one stream walk this index in version order: no sort.
CREATE UNIQUE INDEX IF NOT EXISTS "{{.Events}}_stream_version_key"
    ON "{{.Events}}" (aggregate_type, aggregate_id, version);

-- One row per stream, maintained in the append transaction: the head
-- version for StreamVersion and the optimistic-concurrency check, and the
-- list of aggregates of a type for ListAggregates, without reading events.
CREATE TABLE IF NOT EXISTS "{{.Streams}}" (
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 0),
    PRIMARY KEY (aggregate_type, aggregate_id)
) STRICT, WITHOUT ROWID;

-- The tutorial's snapshot table, one row per aggregate.
CREATE TABLE IF NOT EXISTS "{{.Snapshots}}" (
    aggregate_id   TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    state          TEXT    NOT NULL CHECK (json_valid(state)),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (aggregate_id, aggregate_type)
) STRICT;

CREATE INDEX IF NOT EXISTS "{{.Snapshots}}_type_schema_idx"
    ON "{{.Snapshots}}" (aggregate_type, schema_version);
