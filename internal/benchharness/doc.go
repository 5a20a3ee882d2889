// Package benchharness is evsnap's benchmark harness: the program behind
// `make bench` that measures the library end to end on every backend and
// writes docs/benchmarks.md with a load-time chart.
//
// # What it measures
//
// For memstore, SQLite (a file in a temporary directory) and PostgreSQL (a
// fresh schema, dropped afterwards):
//
//  1. Load time of the tutorial's Account at 100 to 100,000 events without
//     a snapshot, with one at the head (threshold 100) and with one 50
//     events behind; the speed-up and the replay cost per event. On
//     PostgreSQL also the floor of a load (the same SQL through raw pgx,
//     in one pgx.Batch and as two queries), the fetch + scan + decode floor
//     of a full replay, and the plan of a 100,000-event read.
//  2. Save latency p50 and p99 per snapshot mode (none, sync, background,
//     external) with one aggregate per goroutine.
//  3. The snapshotter worker: notices/s and snapshots/s with one and two
//     replicas draining a backlog, and commit-to-snapshot lag under a
//     steady load.
//  4. The worker's floor: pgbench running the worker's own SQL at the
//     worker's concurrency.
//  5. Peak heap growth while loading the largest aggregate without a
//     snapshot, beside what holding its decoded events would cost.
//
// Every figure is the median of [Config.Runs] repeated runs. Nothing is
// estimated: a backend or tool that is not available is reported as
// skipped.
//
// # Use
//
//	go run ./internal/benchharness/cmd/evsnap-bench            # full, about 6 minutes on 2 cores
//	go run ./internal/benchharness/cmd/evsnap-bench --quick    # under a minute
//
// [Run] does the work and returns a [Report]; [Report.Markdown] and
// [Report.LoadChartSVG] render it. The pure parts ([Median], [Percentile],
// [Table], [Chart]) are tested without services.
package benchharness
