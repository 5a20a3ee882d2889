package eventsource_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
)

func TestParsePolicy(t *testing.T) {
	good := map[string]eventsource.Policy{
		"threshold:100":                                    {Threshold: 100},
		" threshold : 5 ":                                  {Threshold: 5},
		"milestones:OrderPaid|OrderShipped":                {Milestones: []string{"OrderPaid", "OrderShipped"}},
		"threshold:50,milestones:OrderShipped":             {Threshold: 50, Milestones: []string{"OrderShipped"}},
		"MILESTONES: OrderPaid | OrderShipped,threshold:1": {Threshold: 1, Milestones: []string{"OrderPaid", "OrderShipped"}},
	}
	for in, want := range good {
		got, err := eventsource.ParsePolicy(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		again, err := eventsource.ParsePolicy(got.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("round trip of %q via %q = %+v, %v", in, got.String(), again, err)
		}
	}
	bad := map[string]string{
		"":                         "empty policy",
		"threshold:0":              "from 1 to",
		"threshold:-3":             "from 1 to",
		"threshold:ten":            `"ten"`,
		"threshold":                "want threshold:N",
		"milestones:":              "want threshold:N",
		"milestones:A||B":          "empty event type",
		"every:10":                 `unknown key "every"`,
		"threshold:1,threshold:2":  "twice",
		"threshold:99999999999999": "from 1 to",
	}
	for in, want := range bad {
		_, err := eventsource.ParsePolicy(in)
		if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePolicy(%q) error = %v; want eventsource.ErrInvalidOption mentioning %q", in, err, want)
		}
	}
}
