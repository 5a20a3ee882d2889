package sqlitestore_test

import (
	"context"
	"testing"

	"github.com/evsnap/evsnap/internal/tooling/appendgrowth"
)

// BenchmarkAppendGrowth writes one stream of 100,000 events in saves of
// 100 (Append with the expected version, as a repository does) into a
// fresh database file per iteration, and reports the cost per event at
// 1,000, 10,000 and 100,000 events (the mean over the 1,000 events up to
// each), their ratio, and the seconds the whole stream took. "raw" does
// the same inserts straight through database/sql on a connection opened
// like the store's writer (appendgrowth.SQLiteRaw) into the store's own
// tables: the floor under the store. Each runs with random (v4) and
// time-ordered (v7) event ids.
//
//	go test -run '^$' -bench AppendGrowth -benchtime 1x -count 6 ./lib/sqlitestore/
func BenchmarkAppendGrowth(b *testing.B) {
	sizes := []int{1_000, 10_000, 100_000}
	for _, ids := range appendgrowth.IDs {
		b.Run("store/ids="+ids.Name, func(b *testing.B) {
			appendgrowth.Bench(b, ids.New, sizes, func(b *testing.B) appendgrowth.Writer {
				return appendgrowth.StoreWriter(openStore(b, tempDB(b)))
			})
		})
		b.Run("raw/ids="+ids.Name, func(b *testing.B) {
			appendgrowth.Bench(b, ids.New, sizes, func(b *testing.B) appendgrowth.Writer {
				path := tempDB(b)
				if err := openStore(b, path).Close(); err != nil {
					b.Fatal(err)
				}
				w, done, err := appendgrowth.SQLiteRaw(context.Background(), path)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = done() })
				return w
			})
		})
	}
}
