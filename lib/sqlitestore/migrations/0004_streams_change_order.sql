-- 0004: the streams table keeps its rows in change order, and the
-- snapshotter's reconciliation sweep keeps its marks in a table beside
-- it, so a sweep pass examines the aggregates whose streams changed since
-- the last pass instead of every aggregate. See
-- docs/decisions/0037-sweep-costs-what-changed.md.
--
-- change_seq is a counter per aggregate type: an append (or a removal of
-- one of the stream's snapshots) sets it to one more than the type's
-- highest, inside its write transaction. SQLite runs one write
-- transaction at a time, so the counter's order is the commit order.
-- Rows stored before this migration keep a NULL change_seq: the first
-- full pass of each sweep (it has no mark yet) examines them. Adding a
-- nullable column only rewrites the schema; the index is partial on the
-- NULLs every existing row has, so it starts empty.

ALTER TABLE "{{.Streams}}" ADD COLUMN change_seq INTEGER;

CREATE INDEX "{{.Streams}}_change_idx"
    ON "{{.Streams}}" (aggregate_type, change_seq, aggregate_id) WHERE change_seq IS NOT NULL;

-- An append of a release before this one (a rollback of the binary) does
-- not set change_seq: these triggers do it for such writes, so every
-- append moves its stream. This release's appends set it themselves, and
-- the triggers' WHEN keeps them from running.
CREATE TRIGGER "{{.Streams}}_change_on_insert" AFTER INSERT ON "{{.Streams}}"
WHEN NEW.change_seq IS NULL
BEGIN
    UPDATE "{{.Streams}}" SET change_seq = (SELECT COALESCE(MAX(change_seq), 0) + 1 FROM "{{.Streams}}"
        WHERE aggregate_type = NEW.aggregate_type AND change_seq IS NOT NULL)
    WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id;
END;

CREATE TRIGGER "{{.Streams}}_change_on_update" AFTER UPDATE OF version ON "{{.Streams}}"
WHEN NEW.change_seq IS OLD.change_seq
BEGIN
    UPDATE "{{.Streams}}" SET change_seq = (SELECT COALESCE(MAX(change_seq), 0) + 1 FROM "{{.Streams}}"
        WHERE aggregate_type = NEW.aggregate_type AND change_seq IS NOT NULL)
    WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id;
END;

-- The sweep's marks: one per sweeper (the snapshotter's consumer name),
-- aggregate type and schema version.
CREATE TABLE "{{.Streams}}_sweep_marks" (
    aggregate_type TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    name           TEXT    NOT NULL,
    generation     INTEGER NOT NULL,
    threshold      INTEGER NOT NULL,
    changes        INTEGER NOT NULL,
    full_after     TEXT    NOT NULL,
    after_seq      INTEGER NOT NULL,
    after_id       TEXT    NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, schema_version, name)
) STRICT, WITHOUT ROWID;
