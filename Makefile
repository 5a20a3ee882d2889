# evsnap — see README.md. Every target works on a machine with only Go.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
TESTFLAGS   ?=
BENCHFLAGS  ?=
BIN         ?= bin

.PHONY: all build test demo bench bench-quick bench-go lint fmt fmt-check vet clean

all: build test

## build: compile both binaries into ./bin
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## test: gofmt check, go vet, then every test with the race detector
test: fmt-check vet
	$(GO) test -race $(TESTFLAGS) ./...

## demo: the tutorial end to end on the embedded default (embedded NATS, SQLite under ./data)
demo:
	$(GO) run ./cmd/example-app

## bench: the benchmark harness: measures every backend and writes docs/benchmarks.md and its charts (10-15 minutes on 2 cores); BENCHFLAGS passes flags (--peer-hallgren DIR: the peer step, beside a checkout of hallgren/eventsourcing)
bench:
	$(GO) run ./internal/tooling/benchharness/cmd/evsnap-bench --out docs/benchmarks.md $(BENCHFLAGS)

## scale: the store-scale harness (not in CI; about 25 minutes and 20 GB at its largest size): builds 100k, 1M and 10M aggregates in a PostgreSQL schema of its own with bulk SQL and measures the sweep (a pass, a pass after 1,000 changes, a full pass, the listing before decision 37), stats (estimated and --exact), verify --sample, a batched prune, a load and a save (of random aggregates, and of the same 20 over and over, with what a load reads and the indexes' depth) at each, with each statement's longest call, then the sweep, stats and verify on a SQLite file of 1M aggregates (docs/benchmarks-store-scale.md); SCALEFLAGS passes flags (--sizes, --keep, --max-op-time, --sqlite-size)
.PHONY: scale
scale:
	$(GO) run ./internal/tooling/scaleharness/cmd/evsnap-scale $(SCALEFLAGS)

## bench-quick: the harness's quick form (about two minutes); prints the tables, writes no file
bench-quick:
	$(GO) run ./internal/tooling/benchharness/cmd/evsnap-bench --quick --out ''

## bench-go: the Go benchmarks (go test -bench); BENCHFLAGS passes extra flags
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHFLAGS) ./...

## lint: gofmt, go vet and staticcheck (pinned)
lint: fmt-check vet
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w .

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN) data

## chaos: the chaos suite on real processes, full form (several minutes; needs PostgreSQL's server binaries for a cluster of its own, builds the pinned nats-server once, see docs/chaos.md); CHAOSFLAGS passes extra flags (--cluster: on a 3-node NATS cluster)
.PHONY: chaos chaos-short
chaos:
	$(GO) run ./internal/tooling/chaos/cmd/evsnap-chaos $(CHAOSFLAGS)

## chaos-short: the chaos suite's short form for CI, on one nats-server and then on a 3-node cluster (about a minute each, at least one fault of each kind)
chaos-short:
	$(GO) run ./internal/tooling/chaos/cmd/evsnap-chaos --short $(CHAOSFLAGS)
	$(GO) run ./internal/tooling/chaos/cmd/evsnap-chaos --short --cluster $(CHAOSFLAGS)

## rules-test: the Prometheus alerting and recording rules (deploy/prometheus) through promtool's unit tests (needs promtool: Debian's prometheus package)
.PHONY: rules-test
rules-test:
	promtool check rules deploy/prometheus/evsnap-rules.yml
	promtool test rules deploy/prometheus/evsnap-rules.test.yml

## compose-smoke: docker-compose.yml and Dockerfile run for real (root; engine in its own network namespace, stand-in base images, no registry); see deploy/README.md
.PHONY: compose-smoke
compose-smoke:
	bash deploy/compose/smoke.sh
