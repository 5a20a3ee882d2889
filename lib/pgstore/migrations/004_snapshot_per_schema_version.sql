-- +goose NO TRANSACTION
-- evsnap pgstore migration 4: one snapshot row per aggregate and schema
-- version. The primary key becomes (aggregate_id, aggregate_type,
-- schema_version), so the store keeps the latest snapshot of each schema
-- version still in use (the current one and the previous, by default) and
-- an application rolled back to the previous schema version loads from its
-- own snapshots. See docs/decisions/0028-snapshot-per-schema-version.md.
--
-- Every existing row stays as it is: it is the row of its schema version.
-- Nothing is rewritten, and the table stays readable and writable while
-- the new key's index is built: it is built CONCURRENTLY (so this
-- migration runs outside a transaction, statement by statement), and only
-- the last statement, which swaps the primary key for it without a table
-- rewrite or a scan, takes the table's lock, for a moment. A build that
-- failed half way leaves an invalid index behind, which a second run
-- drops first; every statement is safe to run again. The key keeps
-- aggregate_id first, as before, so a lookup of one aggregate's snapshot
-- walks the same index path (decision 14); its rows stay HOT-updatable,
-- since an upsert never changes schema_version.
--
-- A binary of an earlier release still running against the migrated table
-- reads its snapshots as before, but its upserts name the old key (ON
-- CONFLICT (aggregate_id, aggregate_type)) and fail: its repositories log
-- and count those failures and never fail a save, and its workers retry
-- and then terminate the notices. Migrate, then replace such binaries.
DROP INDEX CONCURRENTLY IF EXISTS {{.Schema}}.{{.Snapshots.Derived "pkey_0004"}};

CREATE UNIQUE INDEX CONCURRENTLY {{.Snapshots.Derived "pkey_0004"}}
    ON {{.Snapshots}} (aggregate_id, aggregate_type, schema_version);

ALTER TABLE {{.Snapshots}}
    DROP CONSTRAINT {{.Snapshots.Derived "pkey"}},
    ADD CONSTRAINT {{.Snapshots.Derived "pkey"}} PRIMARY KEY USING INDEX {{.Snapshots.Derived "pkey_0004"}};
