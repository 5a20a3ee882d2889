-- 0003: one snapshot row per aggregate and schema version. The primary key
-- becomes (aggregate_id, aggregate_type, schema_version), so a store keeps
-- the latest snapshot of each schema version still in use (the current
-- one and the previous, by default) and an application rolled back to the
-- previous schema version loads from its own snapshots. See
-- docs/decisions/0028-snapshot-per-schema-version.md.
--
-- SQLite cannot change a primary key in place, so the table is rebuilt in
-- this migration's transaction: every snapshot is copied as it is (each
-- aggregate has one today, so it becomes the row of its schema version).

CREATE TABLE "{{.Snapshots}}_0003" (
    aggregate_id   TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    event_id       TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (json_valid(state)),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (aggregate_id, aggregate_type, schema_version)
) STRICT;

INSERT INTO "{{.Snapshots}}_0003"
    (aggregate_id, aggregate_type, version, schema_version, event_id, state, created_at)
SELECT aggregate_id, aggregate_type, version, schema_version, event_id, state, created_at
FROM "{{.Snapshots}}";

DROP TABLE "{{.Snapshots}}";

ALTER TABLE "{{.Snapshots}}_0003" RENAME TO "{{.Snapshots}}";

CREATE INDEX "{{.Snapshots}}_type_schema_idx"
    ON "{{.Snapshots}}" (aggregate_type, schema_version);
