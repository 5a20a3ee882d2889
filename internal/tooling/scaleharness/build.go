package scaleharness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The dataset. Aggregate i (0-based) of type Account has the id
// md5('evsnap-scale-'||i)::uuid. Its stream is AccountOpened followed by
// MoneyDeposited{amount: 1} events, so its state at version v is
// {open, owner "scale", balance v-1, v-1 transactions}; event ids are
// derived from (i, version), so a snapshot can name the event at its
// version. How far each aggregate is behind is spread this way:
//
//   - 1 in 1,000 is long: 150–300 events, and either a snapshot at v1 or
//     none (at least the threshold of 100 behind: what the sweep finds);
//   - 1 in 20 of the rest has no snapshot (1–9 events: not due);
//   - the rest have 1–9 events and a snapshot 0–3 behind the head.
//
// That is about 5.2 events per aggregate: 52 million events at 10 million
// aggregates.
const (
	longEvery      = 1000
	noSnapshotMod  = 20
	bytesPerAgg    = 1700 // measured on a built dataset, with indexes, rounded up
	dataThreshold  = 100
	scaleTypeName  = "Account"
	scaleOwnerName = "scale"
)

// headSQL is the head version of aggregate i (a bigint expression).
const headSQL = `CASE WHEN i % 1000 = 7 THEN 150 + (i * 7919) % 151 ELSE 1 + (i * 2654435761) % 9 END`

// snapSQL is the version of aggregate i's snapshot, or 0 for none, given
// its head h.
const snapSQL = `CASE WHEN i % 1000 = 7 THEN (CASE WHEN i % 2000 = 7 THEN 1 ELSE 0 END)
	WHEN i % 20 = 3 THEN 0
	ELSE GREATEST(1, h - i % 4) END`

// grow adds aggregates [from, to) to the tables in schema, chunk by chunk,
// reporting progress, and returns how many events it wrote.
func grow(ctx context.Context, pool *pgxpool.Pool, schema string, from, to int64, progress func(string)) (int64, error) {
	const chunk = 250_000
	start := time.Now()
	var events int64
	for lo := from; lo < to; lo += chunk {
		hi := min(lo+chunk, to)
		n, err := growChunk(ctx, pool, schema, lo, hi)
		if err != nil {
			return events, fmt.Errorf("aggregates %d-%d: %w", lo, hi, err)
		}
		events += n
		done := hi - from
		el := time.Since(start)
		eta := time.Duration(float64(el) / float64(done) * float64(to-hi))
		progress(fmt.Sprintf("built %d of %d aggregates (%.0f/s, %s left)", hi, to, float64(done)/el.Seconds(), eta.Round(time.Second)))
	}
	return events, nil
}

func growChunk(ctx context.Context, pool *pgxpool.Pool, schema string, lo, hi int64) (int64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
		return 0, err
	}
	stmts := []string{
		fmt.Sprintf(`CREATE TEMP TABLE scale_chunk ON COMMIT DROP AS
			SELECT i, md5('evsnap-scale-' || i)::uuid AS id, h, %s AS s
			FROM (SELECT i, %s AS h FROM generate_series($1::bigint, $2::bigint - 1) AS i) AS g`, snapSQL, headSQL),
		fmt.Sprintf(`INSERT INTO %s.streams (aggregate_type, aggregate_id, version)
			SELECT '%s', id, h FROM scale_chunk`, schema, scaleTypeName),
		fmt.Sprintf(`INSERT INTO %s.events (event_id, aggregate_type, aggregate_id, version, event_type, payload, occurred_at)
			SELECT md5('evsnap-scale-e' || c.i || '/' || v)::uuid, '%s', c.id, v,
			       CASE WHEN v = 1 THEN 'AccountOpened' ELSE 'MoneyDeposited' END,
			       CASE WHEN v = 1 THEN '{"owner_name":"%s","initial_balance":0}'::jsonb ELSE '{"amount":1}'::jsonb END,
			       now()
			FROM scale_chunk AS c, generate_series(1, c.h) AS v`, schema, scaleTypeName, scaleOwnerName),
		fmt.Sprintf(`INSERT INTO %s.snapshots (aggregate_id, aggregate_type, version, schema_version, event_id, state, created_at)
			SELECT id, '%s', s, 1, md5('evsnap-scale-e' || i || '/' || s)::uuid,
			       jsonb_build_object('open', true, 'owner_name', '%s', 'balance', s - 1, 'transaction_count', s - 1),
			       now()
			FROM scale_chunk WHERE s > 0`, schema, scaleTypeName, scaleOwnerName),
	}
	for i, q := range stmts {
		var args []any
		if i == 0 {
			args = []any{lo, hi}
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return 0, err
		}
	}
	var events int64
	if err := tx.QueryRow(ctx, `SELECT sum(h)::bigint FROM scale_chunk`).Scan(&events); err != nil {
		return 0, err
	}
	return events, tx.Commit(ctx)
}

// growUnindexed grows the dataset as grow does with the tables' unique
// indexes (primary keys and unique constraints, but the events' position
// key, which is appended in order) dropped, and recreates them after:
// inserting tens of millions of random uuids into B-trees is several
// times slower than building the indexes at the end.
func growUnindexed(ctx context.Context, pool *pgxpool.Pool, schema string, from, to int64, progress func(string)) (int64, error) {
	rows, err := pool.Query(ctx, `
		SELECT c.relname, i.relname, con.conname, pg_get_constraintdef(con.oid), pg_get_indexdef(i.oid)
		FROM pg_index x
		JOIN pg_class i ON i.oid = x.indexrelid
		JOIN pg_class c ON c.oid = x.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_constraint con ON con.conindid = i.oid AND con.conrelid = c.oid
		WHERE n.nspname = $1 AND c.relname IN ('streams', 'snapshots', 'events')
		  AND NOT (c.relname = 'events' AND x.indisprimary)`, schema)
	if err != nil {
		return 0, err
	}
	type index struct{ table, name, constraint, condef, indexdef string }
	var idx []index
	for rows.Next() {
		var ix index
		var con, condef *string
		if err := rows.Scan(&ix.table, &ix.name, &con, &condef, &ix.indexdef); err != nil {
			rows.Close()
			return 0, err
		}
		if con != nil {
			ix.constraint, ix.condef = *con, *condef
		}
		idx = append(idx, ix)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for _, ix := range idx {
		q := fmt.Sprintf("DROP INDEX %s.%s", schema, ix.name)
		if ix.constraint != "" {
			q = fmt.Sprintf("ALTER TABLE %s.%s DROP CONSTRAINT %s", schema, ix.table, ix.constraint)
		}
		if _, err := pool.Exec(ctx, q); err != nil {
			return 0, fmt.Errorf("%s: %w", q, err)
		}
	}
	n, gerr := grow(ctx, pool, schema, from, to, progress)
	// Recreate them even after a failed grow, so a kept schema is whole.
	conn, err := pool.Acquire(context.WithoutCancel(ctx))
	if err != nil {
		return n, errors.Join(gerr, err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET maintenance_work_mem = '1GB'"); err != nil {
		return n, errors.Join(gerr, err)
	}
	for _, ix := range idx {
		t0 := time.Now()
		q := ix.indexdef
		if ix.constraint != "" {
			q = fmt.Sprintf("ALTER TABLE %s.%s ADD CONSTRAINT %s %s", schema, ix.table, ix.constraint, ix.condef)
		}
		if _, err := conn.Exec(context.WithoutCancel(ctx), q); err != nil {
			return n, errors.Join(gerr, fmt.Errorf("%s: %w", q, err))
		}
		progress(fmt.Sprintf("rebuilt index %s in %v", ix.name, time.Since(t0).Round(time.Millisecond)))
	}
	return n, gerr
}
