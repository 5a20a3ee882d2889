// Package natsnotice is the producer side of evsnap's out-of-process
// snapshotting: the versioned "events appended" [Notice], the JetStream
// [Publisher] that a repository in [eventsource.ModeExternal] hands every
// committed append to, and [EnsureStream], which provisions the stream the
// snapshotter worker consumes.
//
// # The notice
//
// A [Notice] says which aggregate a save appended to (type and id), which
// versions (first and last), the distinct event types appended and when
// the store committed them. It travels as JSON ([Notice.Encode], [Decode])
// on subject <prefix>.<aggregate type>.<aggregate id> ([Subject],
// [ParseSubject]), with header Nats-Msg-Id = [Notice.MsgID]
// (<type>/<id>/<last version>) so that JetStream's duplicate window stores
// a republished notice once, and with the save's W3C trace context
// (traceparent, tracestate) in the headers ([HeaderCarrier] reads them).
// docs/notice-format.md in the repository is the public contract,
// including the versioning rules: [FormatVersion] is 1; decoders refuse
// newer versions with [ErrMalformed].
//
// A notice with [Notice.Reason] [ReasonRead] is not about an append: a
// load replayed so many events that it asks for a snapshot
// (eventsource.WithLoadTrigger; [Publisher.RequestSnapshot]). Its message
// id ends in "/read", so the duplicate window never drops it as the append
// notice of the same version. Older readers, which ignore the field, take
// it for an append of the versions the load replayed, and still act on it
// by their policy: the format stays at version 1.
//
// A notice is a hint. The worker always snapshots the aggregate's head as
// the store has it, and a reconciliation sweep finds aggregates whose
// notices were lost, so nothing depends on a notice arriving.
//
// # Publishing
//
// [NewPublisher] takes a jetstream.JetStream and options, does no I/O, and
// starts one background sender goroutine. [Publisher.Notify] validates the
// append, builds the notice and enqueues it into a bounded buffer
// ([WithBufferSize]); it never waits longer than [WithMaxEnqueueWait]
// (default: not at all). When the buffer is full (NATS down or too slow)
// it drops the notice, counts it and returns an error matching
// [ErrDropped]; the repository logs and counts that and the save still
// succeeds.
//
// The sender takes everything queued at once and publishes it with
// PublishMsgAsync, at most [WithMaxInFlight] acknowledgements outstanding.
// After each batch it lingers ([WithLinger], default 5ms) so that the
// notices of the next saves queue up without waking it one by one; a
// notice that finds it idle wakes it at once. It first merges the queued
// notices of consecutive saves of one aggregate into one ([WithCoalescing],
// on by default; docs/notice-format.md, "Coalesced notices") and only then
// encodes each message, so Notify, on the save's goroutine, only builds
// the notice and queues it, or merges it into the notice queued just
// before it (a load's request is never merged). It retries a
// failed or timed-out ([WithPublishTimeout]) publish with exponential
// backoff ([WithRetryBackoff]) for up to [WithRetryMaxElapsed], after
// which it drops, logs and counts the notice. [Publisher.Flush] waits for
// what was accepted so far; [Publisher.Close] stops accepting, flushes
// until its context ends, drops and counts the rest and waits for the
// sender. Close the repository first, then the publisher, then the NATS
// connection.
//
// # Stream
//
// [DefaultStreamConfig] describes stream EVSNAP_APPENDED: subjects
// evsnap.appended.>, work-queue retention, file storage, a 2 minute
// duplicate window, one replica, at most 24 hours and 1 GiB of notices.
// [EnsureStream] creates or updates it; `snapshotter migrate` calls it.
//
// # Telemetry
//
// Notify starts a short producer span (natsnotice.Notify) under the
// save's span and injects its context into the message, so the worker's
// span can link to it. Metrics, through the OpenTelemetry API only:
// [MetricPublished], [MetricRetried], [MetricDropped] (by reason, one of
// the Drop* constants), [MetricPublishDuration] and [MetricBuffered].
// [Publisher.Stats] returns the same counters.
package natsnotice
