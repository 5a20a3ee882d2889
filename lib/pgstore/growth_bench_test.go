package pgstore_test

import (
	"log/slog"
	"testing"

	"github.com/evsnap/evsnap/internal/tooling/appendgrowth"
	"github.com/evsnap/evsnap/lib/pgstore"
)

// BenchmarkAppendGrowth writes one stream of 100,000 events in saves of
// 100 (Append with the expected version, as a repository does) into a
// fresh schema per iteration, and reports the cost per event at 1,000,
// 10,000 and 100,000 events (the mean over the 1,000 events up to each),
// their ratio, and the seconds the whole stream took. "raw" does the same
// inserts through pgx into the store's own events table, one INSERT ...
// SELECT FROM unnest per save (appendgrowth.PostgresRaw), without the
// stream row: the floor under the store. Each runs with random (v4) and
// time-ordered (v7) event ids.
//
//	EVSNAP_TEST_POSTGRES_URL=... go test -run '^$' -bench AppendGrowth -benchtime 1x -count 6 ./lib/pgstore/
func BenchmarkAppendGrowth(b *testing.B) {
	pool := testPool(b)
	quietLog := pgstore.WithLogger(slog.New(slog.DiscardHandler))
	sizes := []int{1_000, 10_000, 100_000}
	for _, ids := range appendgrowth.IDs {
		b.Run("store/ids="+ids.Name, func(b *testing.B) {
			appendgrowth.Bench(b, ids.New, sizes, func(b *testing.B) appendgrowth.Writer {
				return appendgrowth.StoreWriter(newStoreOn(b, pool, quietLog))
			})
		})
		b.Run("raw/ids="+ids.Name, func(b *testing.B) {
			appendgrowth.Bench(b, ids.New, sizes, func(b *testing.B) appendgrowth.Writer {
				return appendgrowth.PostgresRaw(pool, appendgrowth.PostgresEventsTable(newStoreOn(b, pool, quietLog).Schema()))
			})
		})
	}
}
