package snapshotter

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/otel/metric"
)

// batcher runs concurrent calls of one kind together: the worker's
// snapshot writes (groupCommit), its decision reads and its tail reads,
// each one round trip per batch instead of one per call.
//
// It has no timer and no goroutine of its own. A call that finds no batch
// in flight leads: it runs at once, taking whatever else is queued. Calls
// that arrive while a batch is in flight queue, and the first of them
// leads the next batch as soon as the current one returns. Under light
// load a call runs alone and without delay; under load the batches grow by
// themselves, up to max.
//
// A batch runs under its leader's context. The worker gives every notice
// it handles the same context, so that is the context of every call in it
// (a sweep's calls may share a batch with notices': if the sweep's context
// ends first, those notices fail with its error and are redelivered).
type batcher[In, Out any] struct {
	max int
	// run settles every call of the batch: it sets each one's out and err.
	// A call it leaves alone fails with errBatchIncomplete.
	run   func(ctx context.Context, batch []*call[In, Out])
	sizes metric.Int64Histogram // nil: not recorded
	attrs metric.MeasurementOption

	mu      sync.Mutex
	queue   []*call[In, Out]
	running bool
}

// call is one caller's part of a batch.
type call[In, Out any] struct {
	in  In
	out Out
	err error
	// done receives true when a batch has settled this call, or false
	// when the call must lead the next batch.
	done chan bool
}

// errBatchIncomplete is what the calls of a batch get when it panicked or
// did not settle them.
var errBatchIncomplete = errors.New("snapshotter: the batched store call did not complete")

func newBatcher[In, Out any](max int, sizes metric.Int64Histogram, attrs metric.MeasurementOption, run func(context.Context, []*call[In, Out])) *batcher[In, Out] {
	return &batcher[In, Out]{max: max, run: run, sizes: sizes, attrs: attrs}
}

// do queues in, runs it (leading a batch or waiting for the one that
// takes it) and returns its result.
func (b *batcher[In, Out]) do(ctx context.Context, in In) (Out, error) {
	c := &call[In, Out]{in: in, done: make(chan bool, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	lead := !b.running
	b.running = true
	b.mu.Unlock()
	if !lead && <-c.done {
		return c.out, c.err
	}
	// A leader is always at the head of the queue: the first batch's
	// leader found it empty, and later leaders are promoted from its head.
	b.lead(ctx)
	return c.out, c.err
}

// pending returns how many calls wait for a batch.
func (b *batcher[In, Out]) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// lead takes up to max calls from the head of the queue, runs them and
// settles them, after handing the lead to the next queued call (if any).
func (b *batcher[In, Out]) lead(ctx context.Context) {
	b.mu.Lock()
	n := min(len(b.queue), b.max)
	batch := b.queue[:n:n]
	b.queue = append([]*call[In, Out](nil), b.queue[n:]...)
	b.mu.Unlock()

	defer func() {
		// Hand over even if run panicked, or the queue would stall.
		b.mu.Lock()
		var next *call[In, Out]
		if len(b.queue) > 0 {
			next = b.queue[0]
		} else {
			b.running = false
		}
		b.mu.Unlock()
		if next != nil {
			next.done <- false
		}
		for _, c := range batch[1:] {
			c.done <- true
		}
	}()
	if b.sizes != nil {
		if b.attrs != nil {
			b.sizes.Record(ctx, int64(n), b.attrs)
		} else {
			b.sizes.Record(ctx, int64(n))
		}
	}
	for _, c := range batch {
		c.err = errBatchIncomplete // until run says otherwise
	}
	b.run(ctx, batch)
}
