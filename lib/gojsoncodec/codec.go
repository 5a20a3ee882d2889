// Package gojsoncodec is an eventsource.Codec backed by
// github.com/goccy/go-json, a drop-in replacement for encoding/json that
// decodes event payloads several times faster. Replay from a SQL store
// spends about half its time decoding, so this codec roughly halves
// full-replay time (see docs/benchmarks.md).
//
//	reg := eventsource.NewRegistry(eventsource.WithCodec(gojsoncodec.Codec{}))
//
// It writes JSON that encoding/json reads back to the same values (the
// bytes may differ in number formatting, e.g. 1e-07 for 1e-7), and reads
// what encoding/json writes, so processes with either codec can share a
// store.
package gojsoncodec

import (
	gojson "github.com/goccy/go-json"

	"github.com/evsnap/evsnap/lib/eventsource"
)

// Codec implements eventsource.Codec with goccy/go-json.
type Codec struct{}

var _ eventsource.Codec = Codec{}

// Marshal implements eventsource.Codec.
func (Codec) Marshal(v any) ([]byte, error) { return gojson.Marshal(v) }

// Unmarshal implements eventsource.Codec.
func (Codec) Unmarshal(data []byte, v any) error { return gojson.Unmarshal(data, v) }
