package natsnotice

import (
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// Header names a notice message carries besides the trace context.
const (
	// HeaderMsgID is JetStream's message id header (the same string as
	// jetstream.MsgIDHeader). Its value is [Notice.MsgID], so the stream's
	// duplicate window drops a notice published twice.
	HeaderMsgID = "Nats-Msg-Id"
)

// HeaderCarrier adapts NATS message headers to an OpenTelemetry
// [propagation.TextMapCarrier].
//
// NATS headers are case-sensitive, unlike HTTP's, so do not use
// [propagation.HeaderCarrier] (an http.Header) on them: it would write
// "Traceparent" and look only for that spelling. HeaderCarrier writes keys
// exactly as the propagator gives them (W3C's lower-case "traceparent" and
// "tracestate") and, when reading, falls back to a case-insensitive match,
// so it also reads messages from producers that canonicalised the names.
//
//	ctx := propagation.TraceContext{}.Extract(ctx, natsnotice.HeaderCarrier(msg.Headers()))
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key, matched exactly, or else
// case-insensitively; "" when absent.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces the values of key with value. c must not be nil.
func (c HeaderCarrier) Set(key, value string) {
	c[key] = []string{value}
}

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
