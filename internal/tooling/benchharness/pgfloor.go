package benchharness

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgFloor runs the store's SQL through raw pgx and decodes with the
// registry's codec straight into the example domain's types (a type
// switch, no registry): what a load costs with no library around it.
type pgFloor struct {
	pool  *pgxpool.Pool
	sql   pgstore.Statements
	codec eventsource.Codec
}

func newPGFloor(s *site, codec eventsource.Codec) *pgFloor {
	return &pgFloor{pool: s.pg.Pool(), sql: s.pg.Statements(), codec: codec}
}

// decodeAccountEvent decodes one Account event.
func decodeAccountEvent(c eventsource.Codec, typ string, payload []byte) (eventsource.Event, error) {
	var err error
	switch typ {
	case exampledomain.TypeAccountOpened:
		var e exampledomain.AccountOpened
		err = c.Unmarshal(payload, &e)
		return e, err
	case exampledomain.TypeMoneyDeposited:
		var e exampledomain.MoneyDeposited
		err = c.Unmarshal(payload, &e)
		return e, err
	case exampledomain.TypeMoneyWithdrawn:
		var e exampledomain.MoneyWithdrawn
		err = c.Unmarshal(payload, &e)
		return e, err
	}
	return nil, fmt.Errorf("unknown event type %q", typ)
}

// scanEvents scans a page of events, applying those after skip to st. It
// returns how many rows it read and the last version.
func (f *pgFloor) scanEvents(rows pgx.Rows, st *exampledomain.AccountState, skip int64) (n int, last int64, err error) {
	defer rows.Close()
	var (
		id       [16]byte
		typ      string
		payload  []byte
		metadata []byte
		at       time.Time
	)
	for rows.Next() {
		if err := rows.Scan(&id, &last, &typ, &payload, &metadata, &at); err != nil {
			return n, last, err
		}
		n++
		if last <= skip {
			continue
		}
		e, err := decodeAccountEvent(f.codec, typ, payload)
		if err != nil {
			return n, last, err
		}
		*st = st.Apply(e)
	}
	return n, last, rows.Err()
}

func (f *pgFloor) scanSnapshot(row pgx.Row, st *exampledomain.AccountState) (int64, error) {
	var (
		version, schema int64
		state           []byte
		at              time.Time
		eventID         [16]byte
	)
	if err := row.Scan(&version, &schema, &state, &at, &eventID); err != nil {
		return 0, err
	}
	return version, f.codec.Unmarshal(state, st)
}

// loadBatch is the floor of a load from a snapshot at snapVersion: the
// snapshot and the events from its version on, both queries in one
// pgx.Batch (one round trip; it needs the snapshot's version in advance).
func (f *pgFloor) loadBatch(ctx context.Context, id uuid.UUID, snapVersion int64) error {
	b := &pgx.Batch{}
	b.Queue(f.sql.GetSnapshot, id, exampledomain.AccountType, int32(exampledomain.AccountSchemaVersion))
	b.Queue(f.sql.ReadEvents, exampledomain.AccountType, id, snapVersion-1)
	br := f.pool.SendBatch(ctx, b)
	var st exampledomain.AccountState
	if _, err := f.scanSnapshot(br.QueryRow(), &st); err != nil {
		_ = br.Close()
		return err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return err
	}
	if _, _, err := f.scanEvents(rows, &st, snapVersion); err != nil {
		_ = br.Close()
		return err
	}
	return br.Close()
}

// loadTwo is the floor of a load from a snapshot as two queries: the
// snapshot, then the events from its version on (two round trips, as
// Repository.Load does).
func (f *pgFloor) loadTwo(ctx context.Context, id uuid.UUID) error {
	var st exampledomain.AccountState
	v, err := f.scanSnapshot(f.pool.QueryRow(ctx, f.sql.GetSnapshot, id, exampledomain.AccountType, int32(exampledomain.AccountSchemaVersion)), &st)
	if err != nil {
		return err
	}
	rows, err := f.pool.Query(ctx, f.sql.ReadEvents, exampledomain.AccountType, id, v-1)
	if err != nil {
		return err
	}
	_, _, err = f.scanEvents(rows, &st, v)
	return err
}

// replay is the fetch + scan + decode floor of a full replay: the store's
// paged query, page after page, decoding every event.
func (f *pgFloor) replay(ctx context.Context, id uuid.UUID, want int64) error {
	var (
		st    exampledomain.AccountState
		after int64
	)
	for {
		rows, err := f.pool.Query(ctx, f.sql.ReadEvents, exampledomain.AccountType, id, after)
		if err != nil {
			return err
		}
		n, last, err := f.scanEvents(rows, &st, 0)
		if err != nil {
			return err
		}
		if n > 0 {
			after = last
		}
		if n < pgstore.DefaultReadPageSize {
			break
		}
	}
	if after != want {
		return fmt.Errorf("%w: floor replay read to v%d, want v%d", errSanity, after, want)
	}
	return nil
}

// PlanCheck is the plan PostgreSQL chose for the first page of a full
// replay of the largest aggregate (EXPLAIN ANALYZE of the store's query).
type PlanCheck struct {
	Events int
	// Top is the plan's first two lines, trimmed.
	Top string
	// Sort and Spill say whether a Sort node, or anything written to
	// disk (external sort, "Disk:"), appears in the plan.
	Sort, Spill bool
	Full        string
}

func (f *pgFloor) explain(ctx context.Context, id uuid.UUID) (PlanCheck, error) {
	rows, err := f.pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+f.sql.ReadEvents, exampledomain.AccountType, id, int64(0))
	if err != nil {
		return PlanCheck{}, fmt.Errorf("explain: %w", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return PlanCheck{}, fmt.Errorf("explain: %w", err)
	}
	var pc PlanCheck
	pc.Full = strings.Join(lines, "\n")
	var top []string
	for _, l := range lines {
		t := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "->"))
		if i := strings.Index(t, "  ("); i > 0 {
			t = t[:i]
		}
		if len(top) < 2 && !strings.HasPrefix(t, "Buffers") && !strings.HasPrefix(t, "Index Cond") && t != "" {
			top = append(top, strings.TrimSpace(t))
		}
		if strings.HasPrefix(t, "Sort") || strings.HasPrefix(t, "Incremental Sort") {
			pc.Sort = true
		}
		if strings.Contains(l, "external") || strings.Contains(l, "Disk:") || strings.Contains(l, "temp read") || strings.Contains(l, "temp written") {
			pc.Spill = true
		}
	}
	pc.Top = strings.Join(top, " → ")
	return pc, nil
}
