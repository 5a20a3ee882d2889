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
	"errors"
	"fmt"

	"github.com/evsnap/evsnap/internal/jsonvalid"
	"github.com/evsnap/evsnap/lib/eventsource"
	gojson "github.com/goccy/go-json"
)

// Codec implements eventsource.Codec with goccy/go-json.
type Codec struct{}

var _ eventsource.Codec = Codec{}

// Marshal implements eventsource.Codec.
func (Codec) Marshal(v any) ([]byte, error) { return gojson.Marshal(v) }

// Unmarshal implements eventsource.Codec. go-json can panic on some
// malformed inputs (the fuzz target FuzzLoadWithSnapshotState found an
// index out of range in v0.10.5), so input that is not valid JSON is
// refused first, by a validator that agrees with encoding/json's
// (internal/jsonvalid), and a panic that gets through anyway is turned
// into an error.
func (Codec) Unmarshal(data []byte, v any) (err error) {
	if !jsonvalid.Valid(data) {
		return errInvalidJSON
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gojsoncodec: decoder panic: %v", r)
		}
	}()
	return gojson.Unmarshal(data, v)
}

var errInvalidJSON = errors.New("gojsoncodec: input is not valid JSON")
