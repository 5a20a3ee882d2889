-- 0002: a snapshot records the id of the stream's event at its version
-- (event_id), which ties it to the history it was built from: a load uses
-- it only if the stream's event at that version has that id. See
-- docs/decisions/0017-snapshots-tied-to-history.md.
--
-- SQLite cannot add a NOT NULL column without a default, so the table is
-- rebuilt: each snapshot takes the id of its aggregate's event at its
-- version. A snapshot whose event the store does not have (ahead of its
-- stream, or of a stream that is gone) cannot be tied to any history, is
-- not copied, and is rebuilt by the next due save or the snapshotter's
-- sweep.

CREATE TABLE "{{.Snapshots}}_0002" (
    aggregate_id   TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    event_id       TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (json_valid(state)),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (aggregate_id, aggregate_type)
) STRICT;

INSERT INTO "{{.Snapshots}}_0002"
    (aggregate_id, aggregate_type, version, schema_version, event_id, state, created_at)
SELECT s.aggregate_id, s.aggregate_type, s.version, s.schema_version, e.event_id, s.state, s.created_at
FROM "{{.Snapshots}}" AS s
JOIN "{{.Events}}" AS e
    ON e.aggregate_type = s.aggregate_type AND e.aggregate_id = s.aggregate_id AND e.version = s.version;

DROP TABLE "{{.Snapshots}}";

ALTER TABLE "{{.Snapshots}}_0002" RENAME TO "{{.Snapshots}}";

CREATE INDEX "{{.Snapshots}}_type_schema_idx"
    ON "{{.Snapshots}}" (aggregate_type, schema_version);
