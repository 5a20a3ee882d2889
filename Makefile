# evsnap — see README.md. Every target works on a machine with only Go.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
TESTFLAGS   ?=
BENCHFLAGS  ?=
BIN         ?= bin

.PHONY: all build test demo bench bench-quick lint fmt fmt-check vet clean

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

## bench: the load benchmarks (go test -bench); BENCHFLAGS passes extra flags
bench:
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
