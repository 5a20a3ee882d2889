package natsnotice_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

var testID = uuid.MustParse("0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10")

// TestFromAppendedDistinctEventTypes: a save of five events of three types
// lists the three types once each, in order of first appearance.
func TestFromAppendedDistinctEventTypes(t *testing.T) {
	n := natsnotice.FromAppended(appended("Account", testID, 3, 7,
		"AccountOpened", "MoneyDeposited", "MoneyDeposited", "MoneyWithdrawn", "MoneyDeposited"))
	want := []string{"AccountOpened", "MoneyDeposited", "MoneyWithdrawn"}
	if !slices.Equal(n.EventTypes, want) || n.Truncated {
		t.Fatalf("EventTypes = %v (truncated %v), want %v", n.EventTypes, n.Truncated, want)
	}
	if n.Version != natsnotice.FormatVersion || n.FirstVersion != 3 || n.LastVersion != 7 {
		t.Fatalf("notice = %+v", n)
	}
	if got := n.MsgID(); got != "Account/"+testID.String()+"/7" {
		t.Fatalf("MsgID = %q", got)
	}
}

func TestFromAppendedTruncates(t *testing.T) {
	var types []string
	for i := range natsnotice.MaxEventTypes + 5 {
		types = append(types, "E"+strconv.Itoa(i))
	}
	n := natsnotice.FromAppended(appended("Account", testID, 1, int64(len(types)), types...))
	if len(n.EventTypes) != natsnotice.MaxEventTypes || !n.Truncated {
		t.Fatalf("%d event types, truncated %v; want %d, true", len(n.EventTypes), n.Truncated, natsnotice.MaxEventTypes)
	}
	if _, err := n.Encode(); err != nil {
		t.Fatalf("Encode: %v", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	n := natsnotice.FromAppended(appended("Order", testID, 1, 2, "OrderPlaced", "OrderShipped"))
	data, err := n.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := natsnotice.Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !reflect.DeepEqual(got, n) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, n)
	}
	// The documented example decodes (docs/notice-format.md).
	doc := `{"v":1,"aggregate_type":"Order","aggregate_id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10",` +
		`"first_version":1,"last_version":2,"event_types":["OrderPlaced","OrderShipped"],` +
		`"committed_at":"2026-11-25T17:00:00.123456789Z"}`
	if !bytes.Equal(data, []byte(doc)) {
		t.Fatalf("encoded\n%s\nwant\n%s", data, doc)
	}
}

// A load's request travels as a notice with reason "read": the body says
// so (the documented example), and its message id differs from the
// append notice of the same version, which JetStream would otherwise
// take it for a duplicate of.
func TestReadNotice(t *testing.T) {
	n := natsnotice.Notice{
		Version: natsnotice.FormatVersion, AggregateType: "Order", AggregateID: testID,
		FirstVersion: 201, LastVersion: 480, EventTypes: []string{},
		CommittedAt: time.Date(2026, 11, 25, 17, 0, 0, 123456789, time.UTC), Reason: natsnotice.ReasonRead,
	}
	data, err := n.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	doc := `{"v":1,"aggregate_type":"Order","aggregate_id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10",` +
		`"first_version":201,"last_version":480,"event_types":[],` +
		`"committed_at":"2026-11-25T17:00:00.123456789Z","reason":"read"}`
	if !bytes.Equal(data, []byte(doc)) {
		t.Fatalf("encoded\n%s\nwant (docs/notice-format.md)\n%s", data, doc)
	}
	got, err := natsnotice.Decode(data)
	if err != nil || !reflect.DeepEqual(got, n) {
		t.Fatalf("Decode = %+v, %v; want %+v", got, err, n)
	}
	appendNotice := natsnotice.FromAppended(appended("Order", testID, 480, 480))
	if got, want := n.MsgID(), "Order/0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10/480/read"; got != want || appendNotice.MsgID() == got {
		t.Fatalf("read notice MsgID = %q, want %q (the append notice's is %q)", got, want, appendNotice.MsgID())
	}
	n.Reason = "re.ad"
	if _, err := n.Encode(); !errors.Is(err, natsnotice.ErrMalformed) || !strings.Contains(err.Error(), `reason "re.ad"`) {
		t.Fatalf("Encode with a reason that is not a token = %v, want ErrMalformed naming it", err)
	}
}

// decodeRejectCases are messages Decode must refuse, by what is wrong.
func decodeRejectCases() map[string][]byte {
	good := func(mut func(m map[string]any)) []byte {
		m := map[string]any{
			"v": 1, "aggregate_type": "Order", "aggregate_id": testID.String(),
			"first_version": 1, "last_version": 2, "event_types": []string{"OrderPlaced"},
			"committed_at": "2026-11-25T17:00:00Z",
		}
		mut(m)
		b, _ := json.Marshal(m)
		return b
	}
	return map[string][]byte{
		"empty":                 {},
		"not json":              []byte("hello"),
		"array":                 []byte("[1,2]"),
		"newer version":         good(func(m map[string]any) { m["v"] = natsnotice.FormatVersion + 1 }),
		"no version":            good(func(m map[string]any) { delete(m, "v") }),
		"bad type":              good(func(m map[string]any) { m["aggregate_type"] = "Or.der" }),
		"nil id":                good(func(m map[string]any) { m["aggregate_id"] = uuid.Nil.String() }),
		"bad id":                good(func(m map[string]any) { m["aggregate_id"] = "nope" }),
		"version 0":             good(func(m map[string]any) { m["first_version"] = 0 }),
		"last before first":     good(func(m map[string]any) { m["last_version"] = 0 }),
		"empty event type":      good(func(m map[string]any) { m["event_types"] = []string{""} }),
		"time as number":        good(func(m map[string]any) { m["committed_at"] = 5 }),
		"time beyond year 9999": good(func(m map[string]any) { m["committed_at"] = "9999-12-31T23:30:00-05:00" }),
		"float version":         good(func(m map[string]any) { m["first_version"] = 1.5 }),
		"reason not a token":    good(func(m map[string]any) { m["reason"] = "re ad" }),
		"reason not a string":   good(func(m map[string]any) { m["reason"] = true }),
		"trailing data":         append(good(func(map[string]any) {}), '}'),
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, data := range decodeRejectCases() {
		t.Run(name, func(t *testing.T) {
			if _, err := natsnotice.Decode(data); !errors.Is(err, natsnotice.ErrMalformed) {
				t.Fatalf("Decode(%s) = %v, want ErrMalformed", data, err)
			}
		})
	}
	// Unknown fields are accepted: additive changes keep version 1.
	data, _ := json.Marshal(map[string]any{
		"v": 1, "aggregate_type": "Order", "aggregate_id": testID.String(),
		"first_version": 1, "last_version": 2, "event_types": []string{"OrderPlaced"},
		"committed_at": "2026-11-25T17:00:00Z", "new_field": true,
	})
	if _, err := natsnotice.Decode(data); err != nil {
		t.Fatalf("unknown field: %v", err)
	}
}

// Every error Decode returns names the package once: no chain repeats
// the "natsnotice: " prefix (as "natsnotice: malformed notice:
// natsnotice: invalid aggregate type" did), and a bad aggregate type still
// matches both sentinels.
func TestDecodeErrorsSayThePrefixOnce(t *testing.T) {
	for name, data := range decodeRejectCases() {
		_, err := natsnotice.Decode(data)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if n := strings.Count(err.Error(), "natsnotice: "); n != 1 {
			t.Errorf("%s: %q names the package %d times", name, err, n)
		}
	}
	data, _ := natsnotice.Notice{Version: 1, AggregateType: "Order", AggregateID: testID, FirstVersion: 1, LastVersion: 1, CommittedAt: time.Now()}.Encode()
	data = bytes.Replace(data, []byte(`"Order"`), []byte(`"a.b"`), 1)
	_, err := natsnotice.Decode(data)
	if !errors.Is(err, natsnotice.ErrMalformed) || !errors.Is(err, natsnotice.ErrInvalidAggregateType) {
		t.Fatalf("Decode of a bad aggregate type = %v, want ErrMalformed and ErrInvalidAggregateType", err)
	}
	if want := `natsnotice: malformed notice: invalid aggregate type "a.b": it must be one NATS subject token`; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Decode of a bad aggregate type = %q, want it to start with %q", err, want)
	}
}

func TestValidateAggregateType(t *testing.T) {
	for _, ok := range []string{"Account", "order_v2", "A-b"} {
		if err := natsnotice.ValidateAggregateType(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "*", ">", "ü"} {
		if err := natsnotice.ValidateAggregateType(bad); !errors.Is(err, natsnotice.ErrInvalidAggregateType) {
			t.Errorf("%q: %v, want ErrInvalidAggregateType", bad, err)
		}
	}
}

func TestParseSubject(t *testing.T) {
	s := natsnotice.Subject(natsnotice.DefaultSubjectPrefix, "Account", testID)
	typ, id, err := natsnotice.ParseSubject(natsnotice.DefaultSubjectPrefix, s)
	if err != nil || typ != "Account" || id != testID {
		t.Fatalf("ParseSubject(%q) = %q %s %v", s, typ, id, err)
	}
	if _, _, err := natsnotice.ParseSubject(natsnotice.DefaultSubjectPrefix, "other.Account."+testID.String()); !errors.Is(err, natsnotice.ErrMalformed) {
		t.Fatalf("foreign prefix: %v", err)
	}
}

func TestHeaderCarrier(t *testing.T) {
	h := nats.Header{}
	c := natsnotice.HeaderCarrier(h)
	c.Set("traceparent", "x")
	if h.Get("traceparent") != "x" {
		t.Fatalf("Set did not write the key as given: %v", h)
	}
	canon := natsnotice.HeaderCarrier(nats.Header{"Traceparent": {"y"}})
	if canon.Get("traceparent") != "y" {
		t.Fatal("Get does not fall back to a case-insensitive match")
	}
	if got := c.Keys(); !slices.Equal(got, []string{"traceparent"}) {
		t.Fatalf("Keys = %v", got)
	}
	var _ propagation.TextMapCarrier = c
}

// FuzzDecode checks that Decode never panics, that it agrees with
// encoding/json on what it accepts and what it decodes (decodeStdlib), and
// that whatever it accepts survives Encode and Decode unchanged.
func FuzzDecode(f *testing.F) {
	for _, c := range decodeCases {
		if len(c.data) < 1000 { // not the deep nesting ones
			f.Add([]byte(c.data))
		}
	}
	for _, data := range decodeRejectCases() {
		f.Add(data)
	}
	valid, _ := natsnotice.FromAppended(appended("Account", testID, 1, 3, "AccountOpened", "MoneyDeposited")).Encode()
	f.Add(valid)
	f.Add([]byte(`{"v":1,"aggregate_type":"Order","aggregate_id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10","first_version":1,"last_version":1,"event_types":[],"truncated":true,"committed_at":"0001-01-01T00:00:00Z","extra":{"a":[1,2]}}`))
	f.Add([]byte(`{"v":2,"aggregate_type":"Order"}`))
	f.Add([]byte(`{"v":1,"aggregate_type":"Order","aggregate_id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10","first_version":1,"last_version":300,"event_types":[],"committed_at":"2026-11-25T17:00:00Z","reason":"read"}`))
	f.Add([]byte(`{"v":1,"aggregate_type":"Order","aggregate_id":"{0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10}","first_version":9223372036854775807,"last_version":9223372036854775807,"event_types":["\u00ff"],"committed_at":"2026-01-01T00:00:00+14:00"}`))
	f.Add([]byte(`{"v":1,"aggregate_type":"Order","aggregate_id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10","first_version":1,"last_version":1,"committed_at":"9999-12-31T23:30:00-05:00"}`))
	f.Add([]byte(`{"v":1,"aggregate_type":"Order","aggregate_id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10","first_version":1,"last_version":1,"committed_at":"0000-01-01T00:30:00+01:00"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"v":1e400}`))
	f.Add([]byte{0xff, 0xfe, '{'})
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeAgrees(t, data)
		n, err := natsnotice.Decode(data)
		if err != nil {
			if !errors.Is(err, natsnotice.ErrMalformed) {
				t.Fatalf("Decode error %v does not match ErrMalformed", err)
			}
			return
		}
		enc, err := n.Encode()
		if err != nil {
			t.Fatalf("Decode accepted %q but Encode of the result fails: %v", data, err)
		}
		if want, _ := json.Marshal(n); !bytes.Equal(enc, want) {
			t.Fatalf("Encode\n%s\njson.Marshal\n%s", enc, want)
		}
		n2, err := natsnotice.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(n)) failed: %v\n%s", err, enc)
		}
		if !n2.CommittedAt.Equal(n.CommittedAt) {
			t.Fatalf("commit time changed: %v -> %v", n.CommittedAt, n2.CommittedAt)
		}
		n2.CommittedAt = n.CommittedAt
		if len(n.EventTypes) == 0 && len(n2.EventTypes) == 0 {
			n2.EventTypes = n.EventTypes // null and [] are the same list
		}
		if !reflect.DeepEqual(n, n2) {
			t.Fatalf("round trip changed the notice:\n%+v\n%+v", n, n2)
		}
		if n.MsgID() != n2.MsgID() {
			t.Fatalf("MsgID changed")
		}
	})
}

// FuzzEncode checks that Encode, which writes the JSON by hand, produces
// exactly what encoding/json writes for the same notice (escapes, times
// in any zone, nil and empty lists, truncated), and that Decode reads it
// back.
func FuzzEncode(f *testing.F) {
	f.Add("MoneyDeposited", "", int64(1795539600123456789), 0, false, false, "")
	f.Add("<a&b>\"\\/\b\f\n\r\t\x00\x1f\x7f", "é\u2028\u2029\U0001F600", int64(0), 3600, true, false, "read")
	f.Add("\xff\xfe", "\xed\xa0\x80", int64(-62135596800), -18000, false, true, "<&>")
	f.Add("x", "y", int64(253402300799999999), 50400, true, true, "Other_reason-2")
	f.Fuzz(func(t *testing.T, t1, t2 string, unixNano int64, offset int, truncated, nilTypes bool, reason string) {
		n := natsnotice.Notice{
			Version: natsnotice.FormatVersion, AggregateType: "Order", AggregateID: testID,
			FirstVersion: 1, LastVersion: 2, EventTypes: []string{t1, t2}, Truncated: truncated,
			CommittedAt: time.Unix(0, unixNano).In(time.FixedZone("z", offset%(24*3600))),
			Reason:      reason,
		}
		if nilTypes {
			n.EventTypes = nil
		}
		enc, err := n.Encode()
		if n.Validate() != nil {
			if !errors.Is(err, natsnotice.ErrMalformed) {
				t.Fatalf("Encode of an invalid notice = %v, want ErrMalformed", err)
			}
			return
		}
		want, werr := json.Marshal(n)
		if werr != nil {
			if err == nil {
				t.Fatalf("json.Marshal fails (%v) but Encode wrote %s", werr, enc)
			}
			return
		}
		if err != nil {
			t.Fatalf("Encode: %v (json.Marshal wrote %s)", err, want)
		}
		if !bytes.Equal(enc, want) {
			t.Fatalf("Encode\n%s\njson.Marshal\n%s", enc, want)
		}
		if _, err := natsnotice.Decode(enc); err != nil {
			t.Fatalf("Decode(Encode(n)): %v\n%s", err, enc)
		}
	})
}

func ExampleNotice_MsgID() {
	n := natsnotice.FromAppended(appended("Account", testID, 5, 7, "MoneyDeposited"))
	fmt.Println(natsnotice.Subject(natsnotice.DefaultSubjectPrefix, n.AggregateType, n.AggregateID))
	fmt.Println(n.MsgID())
	// Output:
	// evsnap.appended.Account.0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10
	// Account/0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10/7
}
