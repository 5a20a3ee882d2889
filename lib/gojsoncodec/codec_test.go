package gojsoncodec_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/gojsoncodec"
)

var samples = []eventsource.Event{
	exampledomain.AccountOpened{OwnerName: "Ada ☃ \"quoted\" <tag>", InitialBalance: 12.5},
	exampledomain.MoneyDeposited{Amount: 1e-7},
	exampledomain.MoneyWithdrawn{Amount: 123456789.125},
	exampledomain.ItemAdded{SKU: "sku-1", Quantity: 3, Price: 9.99},
	exampledomain.OrderShipped{Carrier: ""},
}

// The codec must write what encoding/json writes, so processes with either
// codec can share a store, and read what encoding/json wrote.
func TestCompatibleWithEncodingJSON(t *testing.T) {
	std, fast := eventsource.NewRegistry(), eventsource.NewRegistry(eventsource.WithCodec(gojsoncodec.Codec{}))
	for _, r := range []*eventsource.Registry{std, fast} {
		eventsource.MustRegister[exampledomain.AccountOpened](r)
		eventsource.MustRegister[exampledomain.MoneyDeposited](r)
		eventsource.MustRegister[exampledomain.MoneyWithdrawn](r)
		eventsource.MustRegister[exampledomain.ItemAdded](r)
		eventsource.MustRegister[exampledomain.OrderShipped](r)
	}
	for _, e := range samples {
		a, err := std.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		b, err := fast.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(a, b) {
			t.Errorf("%T: encoding/json wrote %s, go-json wrote %s", e, a, b)
		}
		if back, err := fast.Decode(e.EventType(), a); err != nil || back != e {
			t.Errorf("%T: go-json read encoding/json's %s as %v (%v)", e, a, back, err)
		}
		if back, err := std.Decode(e.EventType(), b); err != nil || back != e {
			t.Errorf("%T: encoding/json read go-json's %s as %v (%v)", e, b, back, err)
		}
	}
	state := exampledomain.OrderState{Customer: "c", Status: "paid", Items: map[string]int{"b": 2, "a": 1}, Lines: 2, Total: 3.5}
	a, _ := json.Marshal(state)
	b, _ := gojsoncodec.Codec{}.Marshal(state)
	if !bytes.Equal(a, b) {
		t.Errorf("state: encoding/json wrote %s, go-json wrote %s", a, b)
	}
}

func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

func BenchmarkDecodeEvent(b *testing.B) {
	payload := []byte(`{"owner_name":"Performance Test Account","initial_balance":1000}`)
	for _, c := range []struct {
		name  string
		codec eventsource.Codec
	}{{"encoding-json", eventsource.NewRegistry().Codec()}, {"go-json", gojsoncodec.Codec{}}} {
		b.Run(c.name, func(b *testing.B) {
			reg := eventsource.NewRegistry(eventsource.WithCodec(c.codec))
			eventsource.MustRegister[exampledomain.AccountOpened](reg)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := reg.Decode(exampledomain.TypeAccountOpened, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Malformed input never panics: it is an error.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{`{"owner_name":"Ada","initial_balance":1}`, `{"\`, `{"08e":7,"transacti\`, `[1,2`, `null`, ``, `{"items":{"a":1}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var st exampledomain.OrderState
		err := gojsoncodec.Codec{}.Unmarshal(data, &st)
		var want exampledomain.OrderState
		if stdErr := json.Unmarshal(data, &want); (err == nil) != (stdErr == nil) && json.Valid(data) {
			t.Logf("go-json and encoding/json disagree on %q: %v vs %v", data, err, stdErr)
		}
	})
}
