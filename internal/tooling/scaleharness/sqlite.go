package scaleharness

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
)

// SQLiteOps are the operations measured on SQLite: the sweep's, as on
// PostgreSQL.
var SQLiteOps = []string{"sweep", "sweep-changes", "sweep-full", "sweep-listing", "stats", "stats-exact", "verify-sample"}

// SQLiteReport is the SQLite part of a run: one size.
type SQLiteReport struct {
	Size, Events int64
	BuiltIn      time.Duration
	// FileBytes is the database file's size.
	FileBytes int64
	Results   []Result
}

// sqliteID is aggregate i's id on SQLite: ids ascend with i, so the
// build appends to every B-tree instead of inserting at random.
func sqliteID(i int64, salt uint64) uuid.UUID {
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[:8], uint64(i)+1)
	binary.BigEndian.PutUint64(id[8:], salt)
	return id
}

// RunSQLite builds size aggregates with the PostgreSQL dataset's spread
// in a SQLite file under dir (removed at the end) and measures the
// sweep's operations there.
func RunSQLite(ctx context.Context, size int64, dir string, progress func(string)) (*SQLiteReport, error) {
	rep := &SQLiteReport{Size: size}
	dir, err := os.MkdirTemp(dir, "evsnap-scale-sqlite-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "evsnap.db")
	t0 := time.Now()
	store, err := sqlitestore.Open(ctx, path, sqlitestore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return nil, err
	}
	if rep.Events, err = buildSQLite(ctx, path, size, progress); err != nil {
		return nil, fmt.Errorf("build the SQLite dataset: %w", err)
	}
	rep.BuiltIn = time.Since(t0)
	if st, err := os.Stat(path); err == nil {
		rep.FileBytes = st.Size()
	}

	reg := exampledomain.NewRegistry()
	w, err := snapshotter.New(snapshotter.Config{Store: store, Stream: "x", Consumer: sweepName, SubjectPrefix: "x", BatchSize: 1, Concurrency: 1, WriteBatch: 1, ReadBatch: 1,
		AckWait: time.Second, MaxDeliveries: 1, MaxSnapshotBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler), SweepRate: 1e6, SweepBatch: 1000},
		snapshotter.For[exampledomain.Account](reg, eventsource.Policy{Threshold: dataThreshold}))
	if err != nil {
		return nil, err
	}
	defer w.Close(context.WithoutCancel(ctx))
	raw, err := sql.Open(sqlitestore.DriverName, path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, err
	}
	defer raw.Close()

	for _, op := range SQLiteOps {
		progress(fmt.Sprintf("measuring %s on SQLite at %d aggregates", op, size))
		var err error
		run := adminOp(ctx, op, w)
		if run == nil {
			run, err = sweepOp(ctx, op, store, w, func() (eventsource.ChangePosition, int, error) {
				return touch(ctx, store, func(ids []uuid.UUID) error {
					tx, err := raw.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					defer tx.Rollback() //nolint:errcheck // a no-op after Commit
					for _, id := range ids {
						// The trigger of migration 0004 moves the stream, as it
						// moves an older binary's append.
						if _, err := tx.ExecContext(ctx, `UPDATE streams SET version = version WHERE aggregate_type = ?1 AND aggregate_id = ?2`, scaleTypeName, id.String()); err != nil {
							return err
						}
					}
					return tx.Commit()
				}, func() uuid.UUID { return sqliteID(mrand.Int64N(size), sqliteSalt) }, 1000)
			}, progress)
		}
		if err != nil {
			return rep, fmt.Errorf("%s on SQLite: %w", op, err)
		}
		r, err := timeRuns(run)
		if err != nil {
			return rep, fmt.Errorf("%s on SQLite: %w", op, err)
		}
		r.Op, r.Size = op, size
		progress(fmt.Sprintf("  %s: %.2f ms", op, r.WallMS))
		rep.Results = append(rep.Results, r)
	}
	return rep, nil
}

// adminOp returns what to time for the admin operations (stats,
// stats-exact, verify-sample), nil for the others.
func adminOp(ctx context.Context, op string, w *snapshotter.Worker) func() error {
	switch op {
	case "stats", "stats-exact":
		return func() error {
			_, err := w.Stats(ctx, scaleTypeName, snapshotter.StatsOptions{Stalest: 10, Exact: op == "stats-exact"})
			return err
		}
	case "verify-sample":
		return func() error {
			rep, err := w.Verify(ctx, scaleTypeName, 100)
			if err == nil && rep.Checked != 100 {
				err = fmt.Errorf("verify checked %d, not 100", rep.Checked)
			}
			return err
		}
	}
	return nil
}

// sqliteSalt is the low half of every SQLite aggregate id.
const sqliteSalt = 0x9e3779b97f4a7c15

// buildSQLite writes the dataset with plain inserts in id order, in
// transactions of 50,000 aggregates, through a connection of its own
// with the journal and syncs off (a file being built, removed if the
// build fails). Every stream gets a change position, as appends since
// migration 0004 give them.
func buildSQLite(ctx context.Context, path string, size int64, progress func(string)) (int64, error) {
	db, err := sql.Open(sqlitestore.DriverName, path+"?_pragma=journal_mode(wal)&_pragma=synchronous(off)&_pragma=cache_size(-1000000)&_pragma=busy_timeout(10000)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	const chunk = 50_000
	var events int64
	start := time.Now()
	for lo := int64(0); lo < size; lo += chunk {
		hi := min(lo+chunk, size)
		n, err := buildSQLiteChunk(ctx, db, lo, hi)
		if err != nil {
			return events, err
		}
		events += n
		el := time.Since(start)
		progress(fmt.Sprintf("SQLite: built %d of %d aggregates (%.0f/s, %s left)", hi, size, float64(hi)/el.Seconds(),
			time.Duration(float64(el)/float64(hi)*float64(size-hi)).Round(time.Second)))
	}
	_, err = db.ExecContext(ctx, "ANALYZE")
	return events, err
}

func buildSQLiteChunk(ctx context.Context, db *sql.DB, lo, hi int64) (int64, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	stream, err := tx.PrepareContext(ctx, `INSERT INTO streams (aggregate_type, aggregate_id, version, change_seq) VALUES (?1, ?2, ?3, ?4)`)
	if err != nil {
		return 0, err
	}
	event, err := tx.PrepareContext(ctx, `INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, payload, occurred_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)`)
	if err != nil {
		return 0, err
	}
	snapshot, err := tx.PrepareContext(ctx, `INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, event_id, state, created_at) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)`)
	if err != nil {
		return 0, err
	}
	now := time.Now().UnixMicro()
	var events int64
	for i := lo; i < hi; i++ {
		id := sqliteID(i, sqliteSalt).String()
		h, s := headOf(i), 0
		switch {
		case i%longEvery == 7:
			if i%2000 == 7 {
				s = 1
			}
		case i%noSnapshotMod == 3:
		default:
			s = max(1, int(h)-int(i%4))
		}
		if _, err := stream.ExecContext(ctx, scaleTypeName, id, h, i+1); err != nil {
			return 0, err
		}
		for v := int64(1); v <= h; v++ {
			typ, payload := "MoneyDeposited", `{"amount":1}`
			if v == 1 {
				typ, payload = "AccountOpened", `{"owner_name":"`+scaleOwnerName+`","initial_balance":0}`
			}
			if _, err := event.ExecContext(ctx, sqliteID(i*512+v, 1).String(), scaleTypeName, id, v, typ, payload, now); err != nil {
				return 0, err
			}
		}
		events += h
		if s > 0 {
			state := fmt.Sprintf(`{"open":true,"owner_name":%q,"balance":%d,"transaction_count":%d}`, scaleOwnerName, s-1, s-1)
			if _, err := snapshot.ExecContext(ctx, id, scaleTypeName, s, sqliteID(i*512+int64(s), 1).String(), state, now); err != nil {
				return 0, err
			}
		}
	}
	return events, tx.Commit()
}

// headOf is aggregate i's head version, as headSQL computes it.
func headOf(i int64) int64 {
	if i%longEvery == 7 {
		return 150 + (i*7919)%151
	}
	return 1 + (i*2654435761)%9
}

// timeRuns times run: once, then up to 5 runs or 20 s in all, and
// returns the median (one run when the first takes over 2 s).
func timeRuns(run func() error) (Result, error) {
	var r Result
	var times []float64
	for deadline := time.Now().Add(20 * time.Second); len(times) < 5 && (len(times) == 0 || time.Now().Before(deadline)); {
		t0 := time.Now()
		if err := run(); err != nil {
			return r, err
		}
		times = append(times, float64(time.Since(t0).Microseconds())/1000)
		if times[0] > 2000 {
			break
		}
	}
	r.WallMS = median(times)
	return r, nil
}
