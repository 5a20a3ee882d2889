package natsnotice_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/natsnotice"
)

// decodeStdlib is Decode as it was before the hand-written decoder:
// encoding/json's Unmarshal, then Validate. The tests hold Decode to it.
// It reports whether encoding/json accepted the JSON, so that a
// Validate error can be compared word for word.
func decodeStdlib(data []byte) (n natsnotice.Notice, jsonOK bool, err error) {
	if len(data) == 0 {
		return n, false, fmt.Errorf("%w: empty message", natsnotice.ErrMalformed)
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return natsnotice.Notice{}, false, fmt.Errorf("%w: %v", natsnotice.ErrMalformed, err)
	}
	if err := n.Validate(); err != nil {
		return natsnotice.Notice{}, true, err
	}
	n.CommittedAt = n.CommittedAt.UTC()
	return n, true, nil
}

// benchNotices are the notices BenchmarkDecode reads: what Notify writes
// for a typical save, a commit time with a zone offset, and the most event
// types a notice lists.
func benchNotices(tb testing.TB) []struct {
	name string
	data []byte
} {
	tb.Helper()
	enc := func(n natsnotice.Notice) []byte {
		data, err := n.Encode()
		if err != nil {
			tb.Fatal(err)
		}
		return data
	}
	typical := natsnotice.FromAppended(appended("Account", testID, 41, 43, "MoneyDeposited", "MoneyWithdrawn", "AccountFrozen"))
	offset := typical
	offset.CommittedAt = offset.CommittedAt.In(time.FixedZone("", -5*3600-30*60))
	read := typical
	read.FirstVersion, read.EventTypes, read.Reason = 1, []string{}, natsnotice.ReasonRead
	many := typical
	many.EventTypes = nil
	for i := range natsnotice.MaxEventTypes {
		many.EventTypes = append(many.EventTypes, fmt.Sprintf("SomethingHappened%02d", i))
	}
	return []struct {
		name string
		data []byte
	}{
		{"typical", enc(typical)},
		{"time-offset", enc(offset)},
		{"64-types", enc(many)},
		{"read", enc(read)},
	}
}

// BenchmarkDecode measures Decode, and for comparison the encoding/json
// path it replaced, on notices Notify writes.
func BenchmarkDecode(b *testing.B) {
	for _, c := range benchNotices(b) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if _, err := natsnotice.Decode(c.data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if _, _, err := decodeStdlib(c.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Parts of the notices in decodeCases.
const (
	caseID   = `"aggregate_id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10"`
	caseRest = `"first_version":1,"last_version":2,"event_types":["A"],"committed_at":"2026-11-25T17:00:00Z"`
	caseHead = `{"v":1,"aggregate_type":"Order",` + caseID + `,`
)

// caseNotice returns a valid notice with no event types, then fields:
// fields named again override the earlier ones.
func caseNotice(fields ...string) string {
	return `{"v":1,"aggregate_type":"Order",` + caseID + `,"first_version":1,"last_version":2,"committed_at":"2026-11-25T17:00:00Z"` +
		strings.Join(append([]string{""}, fields...), ",") + `}`
}

// decodeCases are messages on which Decode must agree with encoding/json,
// valid and not: the edge cases of its decoding that a notice can hit.
var decodeCases = []struct{ name, data string }{
	{"typical", caseHead + caseRest + `}`},
	{"white space", " \t\r\n{ \"v\" :\n1 ,\t\"aggregate_type\" : \"Order\" , " + caseID + " , \"first_version\" : 1 , \"last_version\" : 2 , \"event_types\" : [ \"A\" , \"B\" ] , \"committed_at\" : \"2026-11-25T17:00:00Z\" } \n"},
	{"fields in another order", `{"committed_at":"2026-11-25T17:00:00Z","event_types":["A"],"last_version":2,"first_version":1,` + caseID + `,"aggregate_type":"Order","v":1}`},
	{"no event types", caseNotice()},
	{"event types null", caseNotice(`"event_types":null`)},
	{"event types empty", caseNotice(`"event_types":[]`)},
	{"event types 64", caseNotice(`"event_types":["A"` + strings.Repeat(`,"A"`, 63) + `]`)},
	{"event types 65", caseNotice(`"event_types":["A"` + strings.Repeat(`,"A"`, 64) + `]`)},
	{"event type empty", caseNotice(`"event_types":["A",""]`)},
	{"event type null", caseNotice(`"event_types":["A",null]`)},
	{"event type number", caseNotice(`"event_types":["A",1]`)},
	{"event type array", caseNotice(`"event_types":[["A"]]`)},
	{"event types string", caseNotice(`"event_types":"A"`)},
	{"event types object", caseNotice(`"event_types":{"A":1}`)},
	{"event types trailing comma", caseNotice(`"event_types":["A",]`)},
	{"event types unclosed", caseNotice(`"event_types":["A"`)},
	{"truncated", caseNotice(`"truncated":true`)},
	{"truncated false", caseNotice(`"truncated":false`)},
	{"truncated null", caseNotice(`"truncated":true,"truncated":null`)},
	{"truncated string", caseNotice(`"truncated":"true"`)},
	{"truncated number", caseNotice(`"truncated":1`)},
	{"truncated bad literal", caseNotice(`"truncated":tru`)},
	{"reason read", caseNotice(`"reason":"read"`)},
	{"reason unknown", caseNotice(`"reason":"rebuild"`)},
	{"reason empty", caseNotice(`"reason":""`)},
	{"reason null", caseNotice(`"reason":"read"`, `"reason":null`)},
	{"reason repeated", caseNotice(`"reason":"read"`, `"reason":"other"`)},
	{"reason number", caseNotice(`"reason":1`)},
	{"reason array", caseNotice(`"reason":["read"]`)},
	{"reason not a token", caseNotice(`"reason":"re.ad"`)},
	{"reason space", caseNotice(`"reason":"re ad"`)},
	{"reason 128", caseNotice(`"reason":"` + strings.Repeat("r", 128) + `"`)},
	{"reason 129", caseNotice(`"reason":"` + strings.Repeat("r", 129) + `"`)},
	{"reason escaped", caseNotice(`"reason":"r\u0065ad"`)},
	{"reason escaped invalid UTF-8", caseNotice("\"reason\":\"\\u0041\xff\"")},
	{"reason key upper case", caseNotice(`"REASON":"read"`)},
	{"reason key folded", caseNotice(`"reaſon":"read"`)},
	{"reason with escaped aggregate type", caseNotice(`"aggregate_type":"Ord\u0065r"`, `"reason":"read"`, `"event_types":["A","\u00e9"]`)},
	{"unknown fields", caseNotice(`"x":{"a":[1,-2.5e+10,{"b":null}],"c":"\u00e9"}`, `"y":true`, `"z":[]`, `"":{}`)},
	{"unknown field bad array", caseNotice(`"x":[1,]`)},
	{"unknown field bad object", caseNotice(`"x":{"a"}`)},
	{"unknown field bad object key", caseNotice(`"x":{1:2}`)},
	{"unknown field bad number", caseNotice(`"x":01`)},
	{"unknown field bad escape", caseNotice(`"x":"\q"`)},
	{"unknown field single quote escape", caseNotice(`"x":"\'"`)},
	{"unknown field long key", caseNotice(`"` + strings.Repeat("aggregate_type", 5) + `":1`)},
	{"unknown field invalid UTF-8 key", caseNotice("\"\xff\":1")},
	{"depth 10000", caseNotice(`"x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999))},
	{"depth 10001", caseNotice(`"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000))},
	{"depth 10001 objects", caseNotice(`"x":` + strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000))},
	{"event types depth 10001", caseNotice(`"event_types":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000))},
	{"top-level depth 10001", strings.Repeat("[", 10001) + strings.Repeat("]", 10001)},
	{"trailing data", caseHead + caseRest + `}x`},
	{"trailing object", caseHead + caseRest + `}{}`},
	{"trailing space", caseHead + caseRest + "} \n"},
	{"unclosed", caseHead + caseRest},
	{"missing colon", `{"v" 1}`},
	{"missing comma", `{"v":1 "aggregate_type":"Order"}`},
	{"trailing comma", caseHead + caseRest + `,}`},
	{"byte order mark", "\xef\xbb\xbf" + caseHead + caseRest + `}`},
	{"top-level null", `null`},
	{"top-level array", `[1,2]`},
	{"top-level string", `"x"`},
	{"top-level number", `1`},
	{"top-level true", `true`},
	{"top-level empty object", `{}`},
	{"only space", " \n"},
	{"duplicate version", `{"v":2,"v":1,"aggregate_type":"Order",` + caseID + `,` + caseRest + `}`},
	{"duplicate version null", caseNotice(`"v":null`)},
	{"duplicate aggregate type", caseNotice(`"aggregate_type":"Other"`)},
	{"duplicate aggregate id null", caseNotice(`"aggregate_id":null`)},
	{"duplicate event types", caseNotice(`"event_types":["A","B"]`, `"event_types":["C"]`)},
	{"duplicate event types null element", caseNotice(`"event_types":["A","B"]`, `"event_types":["C",null]`)},
	{"duplicate event types stale element", caseNotice(`"event_types":["A","B","C"]`, `"event_types":["X"]`, `"event_types":["P","Q",null]`)},
	{"duplicate event types stale zero", caseNotice(`"event_types":["A","B","C"]`, `"event_types":["P","Q","R",null]`)},
	{"duplicate event types emptied", caseNotice(`"event_types":["A"]`, `"event_types":[]`, `"event_types":[null]`)},
	{"duplicate event types nulled", caseNotice(`"event_types":["A"]`, `"event_types":null`, `"event_types":[null]`)},
	{"duplicate event types many", caseNotice(`"event_types":[`+strings.Repeat(`"A",`, 19)+`"B"]`, `"event_types":["C"]`, `"event_types":[`+strings.Repeat(`"D",`, 19)+`null]`)},
	{"duplicate commit time null", caseNotice(`"committed_at":null`)},
	{"key upper case", `{"V":1,"AGGREGATE_TYPE":"Order","Aggregate_Id":"0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10","First_Version":1,"LAST_VERSION":2,"Event_Types":["A"],"TRUNCATED":true,"Committed_At":"2026-11-25T17:00:00Z"}`},
	{"key long s", caseNotice(`"firſt_verſion":2`, `"laſt_verſion":3`, `"event_typeſ":["ſ"]`)},
	{"key dotted I", caseNotice(`"aggregate_İd":"00000000-0000-0000-0000-000000000000"`, `"commİtted_at":1`)},
	{"key dotless i", caseNotice(`"aggregate_ıd":"00000000-0000-0000-0000-000000000000"`, `"commıtted_at":1`)},
	{"key kelvin", caseNotice(`"\u212a":1`)},
	{"key escaped", caseNotice(`"\u0076":1`, `"aggregate\u005ftype":"Escaped"`, `"\u0056":1`)},
	{"key exact then folded", caseNotice(`"V":1`, `"v":2`)},
	{"key invalid UTF-8 like v", "{\"v\xff\":1}"},
	{"string escapes", caseNotice(`"aggregate_type":"Ord\u0065r"`, `"event_types":["\"\\\/\b\f\n\r\t","\u00e9\u2028","\ud83d\ude00","\ud83d","\udc00\ud800","\ud800\u0041","\ud800\ud800\ude00"]`)},
	{"string invalid UTF-8", caseNotice("\"event_types\":[\"\xff\",\"a\xed\xa0\x80b\",\"\xe2\x82\",\"\xf4\x90\x80\x80\",\"\xef\xbf\xbd\"]")},
	{"string control character", caseNotice("\"event_types\":[\"a\tb\"]")},
	{"string bad escape", caseNotice(`"event_types":["\a"]`)},
	{"string short unicode escape", caseNotice(`"event_types":["\u12"]`)},
	{"string bad unicode escape", caseNotice(`"event_types":["\u12g4"]`)},
	{"string unclosed", caseNotice(`"event_types":["abc`)},
	{"aggregate type invalid", caseNotice(`"aggregate_type":"Or.der"`)},
	{"aggregate type number", caseNotice(`"aggregate_type":1`)},
	{"aggregate type escaped invalid UTF-8", caseNotice("\"aggregate_type\":\"\\u0041\xff\"")},
	{"version float", caseNotice(`"v":1.0`)},
	{"version exponent", caseNotice(`"v":1e0`)},
	{"version big exponent", caseNotice(`"v":1e400`)},
	{"version minus zero", caseNotice(`"v":-0`)},
	{"version string", caseNotice(`"v":"1"`)},
	{"version leading zero", caseNotice(`"v":01`)},
	{"version plus", caseNotice(`"v":+1`)},
	{"version minus", caseNotice(`"v":-`)},
	{"version dot", caseNotice(`"v":1.`)},
	{"version leading dot", caseNotice(`"v":.5`)},
	{"version bare exponent", caseNotice(`"v":1e`)},
	{"version exponent sign", caseNotice(`"v":1e+`)},
	{"version newer", caseNotice(`"v":2`)},
	{"version overflow", caseNotice(`"v":9223372036854775808`)},
	{"versions max", caseNotice(`"first_version":9223372036854775807`, `"last_version":9223372036854775807`)},
	{"version overflow", caseNotice(`"last_version":9223372036854775808`)},
	{"version min", caseNotice(`"first_version":-9223372036854775808`)},
	{"version below min", caseNotice(`"first_version":-9223372036854775809`)},
	{"version huge", caseNotice(`"last_version":123456789012345678901234567890`)},
	{"last before first", caseNotice(`"first_version":3`)},
	{"id braces", caseNotice(`"aggregate_id":"{0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10}"`)},
	{"id urn", caseNotice(`"aggregate_id":"URN:uuid:0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10"`)},
	{"id bad urn", caseNotice(`"aggregate_id":"urn:uuix:0b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10"`)},
	{"id no hyphens", caseNotice(`"aggregate_id":"0B6F2C7E4D1A4C599A396F1F7D2E8A10"`)},
	{"id escaped", caseNotice(`"aggregate_id":"\u0030b6f2c7e-4d1a-4c59-9a39-6f1f7d2e8a10"`)},
	{"id nil", caseNotice(`"aggregate_id":"00000000-0000-0000-0000-000000000000"`)},
	{"id bad", caseNotice(`"aggregate_id":"nope"`)},
	{"id number", caseNotice(`"aggregate_id":1`)},
	{"id array", caseNotice(`"aggregate_id":[11,111,44,126,77,26,76,89,154,57,111,31,125,46,138,16]`)},
	{"id object", caseNotice(`"aggregate_id":{}`)},
	{"id bool", caseNotice(`"aggregate_id":true`)},
	{"time offset", caseNotice(`"committed_at":"2026-11-25T12:00:00.123456789-05:00"`)},
	{"time offset east", caseNotice(`"committed_at":"2026-01-01T00:00:00+14:00"`)},
	{"time fraction", caseNotice(`"committed_at":"2026-11-25T17:00:00.5Z"`)},
	{"time comma fraction", caseNotice(`"committed_at":"2026-11-25T17:00:00,5Z"`)},
	{"time lower case", caseNotice(`"committed_at":"2026-11-25t17:00:00z"`)},
	{"time escaped", caseNotice(`"committed_at":"2026-11-25T17:00:00\u005a"`)},
	{"time beyond 9999", caseNotice(`"committed_at":"9999-12-31T23:30:00-05:00"`)},
	{"time before 0", caseNotice(`"committed_at":"0000-01-01T00:30:00+01:00"`)},
	{"time offset hours 24", caseNotice(`"committed_at":"2026-11-25T17:00:00+24:00"`)},
	{"time leap second", caseNotice(`"committed_at":"2026-12-31T23:59:60Z"`)},
	{"time no zone", caseNotice(`"committed_at":"2026-11-25T17:00:00"`)},
	{"time number", caseNotice(`"committed_at":5`)},
	{"time object", caseNotice(`"committed_at":{"t":1}`)},
	{"time array", caseNotice(`"committed_at":["2026-11-25T17:00:00Z"]`)},
	{"time bool", caseNotice(`"committed_at":false`)},
	{"kind error then syntax error", caseNotice(`"v":"1"`, `"x":[1,]`)},
	{"kind error then validate error", caseNotice(`"v":"1"`, `"aggregate_type":"a.b"`)},
}

// checkDecodeAgrees fails tb unless Decode accepts data exactly when
// decodeStdlib does, with the same notice, and refuses it with an error
// matching ErrMalformed: Validate's very error when encoding/json read the
// JSON.
func checkDecodeAgrees(tb testing.TB, data []byte) {
	tb.Helper()
	got, err := natsnotice.Decode(data)
	want, jsonOK, wantErr := decodeStdlib(data)
	switch {
	case err == nil && wantErr == nil:
		if !reflect.DeepEqual(got, want) {
			tb.Fatalf("Decode(%q) =\n%#v\nencoding/json:\n%#v", data, got, want)
		}
	case err != nil && wantErr != nil:
		if !errors.Is(err, natsnotice.ErrMalformed) {
			tb.Fatalf("Decode(%q) error %v does not match ErrMalformed", data, err)
		}
		if jsonOK && err.Error() != wantErr.Error() {
			tb.Fatalf("Decode(%q) error\n%v\nencoding/json + Validate:\n%v", data, err, wantErr)
		}
	case err != nil:
		tb.Fatalf("Decode(%q) refused: %v\nencoding/json accepts it:\n%#v", data, err, want)
	default:
		tb.Fatalf("Decode(%q) accepted:\n%#v\nencoding/json refuses it: %v", data, got, wantErr)
	}
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) { checkDecodeAgrees(t, []byte(c.data)) })
	}
	for _, c := range benchNotices(t) {
		t.Run("bench/"+c.name, func(t *testing.T) { checkDecodeAgrees(t, c.data) })
	}
	for name, data := range decodeRejectCases() {
		t.Run("reject/"+name, func(t *testing.T) { checkDecodeAgrees(t, data) })
	}
}

// TestDecodeAllocs: a notice in UTC costs Decode two allocations, its
// strings and its event type list, however many event types it lists.
func TestDecodeAllocs(t *testing.T) {
	for _, c := range benchNotices(t) {
		if c.name == "time-offset" {
			continue // time.Parse allocates the zone
		}
		got := testing.AllocsPerRun(100, func() {
			if _, err := natsnotice.Decode(c.data); err != nil {
				t.Fatal(err)
			}
		})
		if got > 2 {
			t.Errorf("%s: Decode allocates %v times, want at most 2", c.name, got)
		}
	}
}
