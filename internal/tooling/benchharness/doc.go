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
//     in one pgx.Batch and as two queries), with the client's CPU per load,
//     the fetch + scan + decode floor of a full replay, and the plan of a
//     100,000-event read.
//  2. Save latency p50 and p99 per snapshot mode (none, sync, background,
//     external) with one aggregate per goroutine.
//  3. The snapshotter worker: notices/s and snapshots/s with one and two
//     replicas draining a backlog, with the CPU per snapshot of the
//     harness process (where the workers run), PostgreSQL and NATS, and
//     commit-to-snapshot lag under a steady load.
//  4. The worker's floor: pgbench running the worker's own SQL at the
//     worker's concurrency, with PostgreSQL's and pgbench's CPU per
//     transaction beside the worker's per snapshot.
//  5. Peak heap growth while loading the largest aggregate without a
//     snapshot, beside what holding its decoded events would cost.
//  6. Scale-out (PostgreSQL, Linux, root): 1, 2, 4 and 8 `snapshotter run`
//     processes, each in its own cgroup with a CPU quota (cgroup v1's
//     cpu.cfs_quota_us or v2's cpu.max, [DefaultScaleCPU] CPU each) and
//     GOMAXPROCS=1, draining one backlog against a nats-server of the
//     version go.mod pins (internal/tooling/natsbin, internal/tooling/natsserver) and a
//     database of their own: snapshots/s, speed-up, each replica's share,
//     the CPU of the workers, PostgreSQL and NATS, and a chart against
//     the ideal line
//     (docs/decisions/0022-scale-out-benchmark.md). Without root or a
//     CPU controller it is skipped, and the page says why.
//  7. Append cost as a stream grows (SQLite and PostgreSQL): one stream
//     of 100,000 events in saves of 100 through the store's Append and
//     through the raw driver into the store's tables, with random (v4) and
//     time-ordered (v7) event ids: the cost per event at 1,000, 10,000 and
//     100,000 events (internal/tooling/appendgrowth).
//  8. Beside a peer, with Config.PeerHallgren (--peer-hallgren DIR, a
//     checkout of github.com/hallgren/eventsourcing, which the module
//     proxy does not serve): its in-memory stores and evsnap's memstore
//     on the same load at the head and one-event save, taking turns in
//     each run. The harness builds the peer program (peers/hallgren.go.txt)
//     in a module of its own with replace directives, so evsnap's module
//     never requires the peer; without the flag the step is skipped.
//
// Every figure is the median of [Config.Runs] repeated runs (the
// scale-out step: its median run of at most three). Nothing is
// estimated: a backend or tool that is not available is reported as
// skipped.
//
// # Use
//
//	go run ./internal/tooling/benchharness/cmd/evsnap-bench            # full, about 12 minutes on 2 cores (scale-out: 3.5, append: 2)
//	go run ./internal/tooling/benchharness/cmd/evsnap-bench --quick    # about a minute
//	go run ./internal/tooling/benchharness/cmd/evsnap-bench --steps scale --scale-cpu 0.05
//	go run ./internal/tooling/benchharness/cmd/evsnap-bench --steps peer --backends memstore --peer-hallgren ../eventsourcing --out ''
//
// [Run] does the work and returns a [Report]; [Report.Markdown],
// [Report.LoadChartSVG] and [Report.ScaleChartSVG] render it. The pure
// parts ([Median], [Percentile], [Table], [Chart], the scale-out targets
// and the parsing of cgroup, /proc and /metrics files) are tested without
// services.
package benchharness
