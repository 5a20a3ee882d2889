-- evsnap pgstore migration 3: a snapshot records the id of its stream's
-- event at its version (event_id), which ties it to the history it was
-- built from: a load uses it only if the stream's event at that version
-- has that id. See docs/decisions/0017-snapshots-tied-to-history.md.
--
-- Each snapshot takes the id of its aggregate's event at its version (one
-- lookup on the events' stream_version_key per snapshot). A snapshot whose
-- event this store does not have (ahead of its stream after a restore, of
-- a stream that is gone, or kept here while the events live in another
-- store) cannot be tied to any history and is deleted: the next due save,
-- or the snapshotter's sweep, writes a new one. event_id is not indexed,
-- so upserts stay HOT updates (see migration 1).
ALTER TABLE {{.Snapshots}} ADD COLUMN event_id uuid;

UPDATE {{.Snapshots}} AS s SET event_id = e.event_id
FROM {{.Events}} AS e
WHERE e.aggregate_type = s.aggregate_type AND e.aggregate_id = s.aggregate_id AND e.version = s.version;

DELETE FROM {{.Snapshots}} WHERE event_id IS NULL;

ALTER TABLE {{.Snapshots}} ALTER COLUMN event_id SET NOT NULL;
