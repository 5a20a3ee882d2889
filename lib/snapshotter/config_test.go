package snapshotter

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
)

func TestParsePolicies(t *testing.T) {
	got, err := ParsePolicies("Account=threshold:100; Order=threshold:50,milestones:OrderPaid|OrderShipped;")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]eventsource.Policy{
		"Account": {Threshold: 100},
		"Order":   {Threshold: 50, Milestones: []string{"OrderPaid", "OrderShipped"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	if s := formatPolicies(got); s != "Account=threshold:100;Order=threshold:50,milestones:OrderPaid|OrderShipped" {
		t.Fatalf("formatPolicies = %q", s)
	}
	for in, want := range map[string]string{
		"Account":      "want Type=",
		"=threshold:1": "want Type=",
		"Account=threshold:1;Account=threshold:2": "given twice",
		"Order=threshold:x":                       "policy for Order",
	} {
		if _, err := ParsePolicies(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePolicies(%q) error = %v, want mention of %q", in, err, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base := DefaultConfig()
	if err := base.Validate(); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Fatalf("config without stores: %v", err)
	}
	cases := map[string]func(*Config){
		"batch size":     func(c *Config) { c.BatchSize = 0 },
		"concurrency":    func(c *Config) { c.Concurrency = 5000 },
		"write batch":    func(c *Config) { c.WriteBatch = 0 },
		"read batch":     func(c *Config) { c.ReadBatch = 1001 },
		"ack wait":       func(c *Config) { c.AckWait = time.Millisecond },
		"max deliveries": func(c *Config) { c.MaxDeliveries = 0 },
		"stream name":    func(c *Config) { c.Stream = "a.b" },
		"consumer name":  func(c *Config) { c.Consumer = "" },
		"subject prefix": func(c *Config) { c.SubjectPrefix = "evsnap.>" },
		"sweep rate":     func(c *Config) { c.SweepRate = 0 },
		"linger":         func(c *Config) { c.Linger = time.Hour },
	}
	for want, mutate := range cases {
		c := validConfig()
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate() = %v", want, err)
		}
	}
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

func FuzzParsePolicies(f *testing.F) {
	for _, s := range []string{
		"Account=threshold:100",
		"Account=threshold:100;Order=threshold:50,milestones:OrderPaid|OrderShipped",
		"Order=milestones:OrderShipped",
		"=", ";;", "A=threshold:", "A=threshold:1,threshold:1", "A=x:y", "A=threshold:-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePolicies(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not match ErrInvalidConfig", err)
			}
			return
		}
		for typ, p := range ps {
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted an invalid policy for %q: %v", typ, err)
			}
		}
		again, err := ParsePolicies(formatPolicies(ps))
		if err != nil || !reflect.DeepEqual(again, ps) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", s, again, err, ps)
		}
	})
}

func validConfig() Config {
	c := DefaultConfig()
	c.Store = memstore.New()
	return c
}
