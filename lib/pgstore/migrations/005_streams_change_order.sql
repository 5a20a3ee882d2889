-- +goose NO TRANSACTION
-- evsnap pgstore migration 5: the streams table keeps its rows in change
-- order, and the snapshotter's reconciliation sweep keeps its marks in a
-- table beside it, so a sweep pass examines the aggregates whose streams
-- changed since the last pass instead of every aggregate. See
-- docs/decisions/0037-sweep-costs-what-changed.md.
--
-- change_xid is the id of the transaction that last appended to the
-- stream (or removed one of its snapshots): pg_current_xact_id(), set by
-- a trigger on every insert and update of a stream row, so appends of
-- binaries older than this migration, still running while it is rolled
-- out, move their streams too, and this release's appends, which leave
-- the column to the trigger, run on a schema not migrated yet. A sweep
-- reads the streams whose change_xid is below the xmin of its statement's
-- snapshot, where the order is final (transactions commit out of the order
-- of their ids; every transaction below xmin has ended). Rows stored
-- before this migration keep a NULL change_xid: they are examined by the
-- first full pass each sweep makes (it has no mark yet), and leave NULL at
-- their next append.
--
-- Safe on a large table in use: adding a nullable column without a
-- default changes only the catalog (a moment's lock, no rewrite); the
-- index is built CONCURRENTLY (so this migration runs outside a
-- transaction, statement by statement), and being partial on the NULLs
-- every existing row has, it starts empty. Every statement can run again
-- after a failure.
--
-- From here on an append changes an indexed column, so its update of the
-- stream row is no longer HOT (decision 37 weighs it).
ALTER TABLE {{.Streams}} ADD COLUMN IF NOT EXISTS change_xid xid8;

CREATE OR REPLACE FUNCTION {{.Schema}}.{{.Streams.Derived "change_xid"}}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.change_xid := pg_current_xact_id(); RETURN NEW; END $$;

DROP TRIGGER IF EXISTS {{.Streams.Derived "change_xid"}} ON {{.Streams}};

CREATE TRIGGER {{.Streams.Derived "change_xid"}} BEFORE INSERT OR UPDATE ON {{.Streams}}
    FOR EACH ROW EXECUTE FUNCTION {{.Schema}}.{{.Streams.Derived "change_xid"}}();

-- An invalid index a failed build left behind is dropped (a moment's
-- lock). On an empty table (a new deployment) the index is built at once:
-- CREATE INDEX CONCURRENTLY waits for every transaction older than it in
-- the database to end, which on a busy server is long for an empty table.
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('{{.Schema}}.{{.Streams.Derived "change_idx"}}') AND NOT indisvalid) THEN DROP INDEX {{.Schema}}.{{.Streams.Derived "change_idx"}}; END IF; IF NOT EXISTS (SELECT 1 FROM {{.Streams}}) THEN CREATE INDEX IF NOT EXISTS {{.Streams.Derived "change_idx"}} ON {{.Streams}} (aggregate_type, change_xid, aggregate_id) WHERE change_xid IS NOT NULL; END IF; END $$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS {{.Streams.Derived "change_idx"}}
    ON {{.Streams}} (aggregate_type, change_xid, aggregate_id) WHERE change_xid IS NOT NULL;

-- The sweep's marks: one per sweeper (the snapshotter's consumer name),
-- aggregate type and schema version. origin is the system identifier of
-- the cluster that wrote the mark: transaction ids mean nothing on
-- another cluster (the data restored there from a dump), where the mark
-- is ignored and the sweep starts over with a full pass.
CREATE TABLE IF NOT EXISTS {{.SweepMarks}} (
    aggregate_type text    NOT NULL,
    schema_version integer NOT NULL,
    name           text    NOT NULL,
    generation     bigint  NOT NULL,
    origin         bigint  NOT NULL,
    threshold      bigint  NOT NULL,
    changes        boolean NOT NULL,
    full_after     uuid    NOT NULL,
    after_seq      bigint  NOT NULL,
    after_id       uuid    NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {{.SweepMarks.Derived "pkey"}} PRIMARY KEY (aggregate_type, schema_version, name)
);
