package snapshotter

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/otel/metric"
)

// batcher runs concurrent calls of one kind together: the worker's
// snapshot writes (groupCommit) and its decision reads, one round trip per
// batch instead of one per call.
//
// It has no timer and no goroutine of its own. Up to inFlight batches run
// at once. A call that finds a free slot leads: it runs at once, alone.
// Calls that arrive while every slot is taken queue; when a batch returns,
// the calls queued by then (up to max) go together as the next batch, led
// by the first of them. Under light load a call runs alone and without
// delay; under load the batches grow by themselves.
//
// A batch runs under its leader's context. The worker gives every notice
// it handles the same context, so that is the context of every call in it
// (a sweep's calls may share a batch with notices': if the sweep's context
// ends first, those notices fail with its error and are redelivered).
type batcher[In, Out any] struct {
	max int
	// inFlight is how many batches may run at once (at least 1).
	inFlight int
	// run settles every call of the batch: it sets each one's out and err.
	// A call it leaves alone fails with errBatchIncomplete.
	run   func(ctx context.Context, batch []*call[In, Out])
	sizes metric.Int64Histogram // nil: not recorded

	mu      sync.Mutex
	queue   []*call[In, Out]
	running int // batches in flight
}

// call is one caller's part of a batch.
type call[In, Out any] struct {
	in  In
	out Out
	err error
	// done receives true when a batch has settled this call, or false
	// when the call must lead the next batch, which is then in batch.
	done  chan bool
	batch []*call[In, Out]
}

// errBatchIncomplete is what the calls of a batch get when it panicked or
// did not settle them.
var errBatchIncomplete = errors.New("snapshotter: the batched store call did not complete")

func newBatcher[In, Out any](size, inFlight int, sizes metric.Int64Histogram, run func(context.Context, []*call[In, Out])) *batcher[In, Out] {
	return &batcher[In, Out]{max: size, inFlight: max(inFlight, 1), run: run, sizes: sizes}
}

// do queues in, runs it (leading a batch or waiting for the one that
// takes it) and returns its result.
func (b *batcher[In, Out]) do(ctx context.Context, in In) (Out, error) {
	c := &call[In, Out]{in: in, done: make(chan bool, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	var batch []*call[In, Out]
	if b.running < b.inFlight {
		// Calls wait only while every batch slot is taken, so the queue
		// held nothing before c: c leads a batch of itself.
		b.running++
		batch = b.takeLocked()
	}
	b.mu.Unlock()
	if batch == nil {
		if <-c.done {
			return c.out, c.err
		}
		batch = c.batch // promoted: c heads the batch it was handed
	}
	b.runBatch(ctx, batch)
	return c.out, c.err
}

// takeLocked takes up to max calls from the head of the queue. b.mu must
// be held. A batch is always taken under the lock, at the moment its
// leader is chosen, so no two leaders can take one call.
func (b *batcher[In, Out]) takeLocked() []*call[In, Out] {
	n := min(len(b.queue), b.max)
	batch := b.queue[:n:n]
	b.queue = append([]*call[In, Out](nil), b.queue[n:]...)
	return batch
}

// pending returns how many calls wait for a batch.
func (b *batcher[In, Out]) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// runBatch runs a batch led by its first call and settles it, then hands
// the slot to the next queued calls (if any) as a new batch.
func (b *batcher[In, Out]) runBatch(ctx context.Context, batch []*call[In, Out]) {
	defer func() {
		// Hand over even if run panicked, or the queue would stall.
		b.mu.Lock()
		var next []*call[In, Out]
		if len(b.queue) > 0 {
			next = b.takeLocked()
			next[0].batch = next
		} else {
			b.running--
		}
		b.mu.Unlock()
		if next != nil {
			next[0].done <- false
		}
		for _, c := range batch[1:] {
			c.done <- true
		}
	}()
	if b.sizes != nil {
		b.sizes.Record(ctx, int64(len(batch)))
	}
	for _, c := range batch {
		c.err = errBatchIncomplete // until run says otherwise
	}
	b.run(ctx, batch)
}
