package natsnotice_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/nats-io/nats.go/jetstream"
)

func TestDefaultStreamConfig(t *testing.T) {
	c := natsnotice.DefaultStreamConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	js := c.JetStreamConfig()
	if js.Name != "EVSNAP_APPENDED" || len(js.Subjects) != 1 || js.Subjects[0] != "evsnap.appended.>" ||
		js.Retention != jetstream.WorkQueuePolicy || js.Storage != jetstream.FileStorage ||
		js.Duplicates != 2*time.Minute || js.Replicas != 1 || js.Discard != jetstream.DiscardOld {
		t.Fatalf("default stream config %+v", js)
	}
}

func TestStreamConfigValidate(t *testing.T) {
	cases := map[string]func(*natsnotice.StreamConfig){
		"empty name":       func(c *natsnotice.StreamConfig) { c.Name = "" },
		"dotted name":      func(c *natsnotice.StreamConfig) { c.Name = "A.B" },
		"spaced name":      func(c *natsnotice.StreamConfig) { c.Name = "A B" },
		"wildcard prefix":  func(c *natsnotice.StreamConfig) { c.SubjectPrefix = "evsnap.>" },
		"replicas 0":       func(c *natsnotice.StreamConfig) { c.Replicas = 0 },
		"replicas 6":       func(c *natsnotice.StreamConfig) { c.Replicas = 6 },
		"no duplicates":    func(c *natsnotice.StreamConfig) { c.Duplicates = 0 },
		"negative max age": func(c *natsnotice.StreamConfig) { c.MaxAge = -time.Second },
		"window > max age": func(c *natsnotice.StreamConfig) { c.MaxAge = time.Minute },
		"max bytes 0":      func(c *natsnotice.StreamConfig) { c.MaxBytes = 0 },
		"max bytes -2":     func(c *natsnotice.StreamConfig) { c.MaxBytes = -2 },
		"bad storage":      func(c *natsnotice.StreamConfig) { c.Storage = 7 },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			c := natsnotice.DefaultStreamConfig()
			mut(&c)
			err := c.Validate()
			if !errors.Is(err, natsnotice.ErrInvalidOption) {
				t.Fatalf("Validate = %v, want ErrInvalidOption", err)
			}
			// EnsureStream refuses it before any I/O (js is nil here).
			if _, err := natsnotice.EnsureStream(t.Context(), nil, c); !errors.Is(err, natsnotice.ErrInvalidOption) {
				t.Fatalf("EnsureStream = %v, want ErrInvalidOption", err)
			}
		})
	}
	c := natsnotice.DefaultStreamConfig()
	c.MaxAge, c.MaxBytes = 0, -1 // unlimited is fine
	if err := c.Validate(); err != nil {
		t.Fatalf("unlimited: %v", err)
	}
}

// TestEnsureStream: creating twice is idempotent, and an update changes the
// duplicate window and limits; a change the server refuses names the
// stream.
func TestEnsureStream(t *testing.T) {
	e := newEnv(t) // has run EnsureStream once
	ctx := ctxTimeout(t, 20*time.Second)
	s, err := natsnotice.EnsureStream(ctx, e.js, e.cfg)
	if err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	info := s.CachedInfo()
	if info.Config.Retention != jetstream.WorkQueuePolicy || info.Config.Duplicates != natsnotice.DefaultDuplicates ||
		info.Config.Subjects[0] != e.cfg.SubjectPrefix+".>" || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("stream config %+v", info.Config)
	}

	// A notice published before the update survives it.
	p := e.publisher()
	if err := p.Notify(ctx, appended("Account", testID, 1, 1)); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	upd := e.cfg
	upd.Duplicates = 30 * time.Second
	upd.MaxAge = time.Hour
	upd.MaxBytes = 32 << 20
	s, err = natsnotice.EnsureStream(ctx, e.js, upd)
	if err != nil {
		t.Fatalf("EnsureStream update: %v", err)
	}
	info, err = s.Info(ctx)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.Config.Duplicates != 30*time.Second || info.Config.MaxAge != time.Hour || info.Config.MaxBytes != 32<<20 {
		t.Fatalf("after update: duplicates %s, max age %s, max bytes %d", info.Config.Duplicates, info.Config.MaxAge, info.Config.MaxBytes)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages after the update, want 1", info.State.Msgs)
	}

	// Storage cannot change; the error says which stream.
	mem := upd
	mem.Storage = jetstream.MemoryStorage
	if _, err := natsnotice.EnsureStream(ctx, e.js, mem); err == nil || !strings.Contains(err.Error(), e.cfg.Name) {
		t.Fatalf("changing storage: %v, want an error naming %s", err, e.cfg.Name)
	}
	// A single server cannot hold 3 replicas; again the error names the stream.
	r3 := upd
	r3.Replicas = 3
	if _, err := natsnotice.EnsureStream(ctx, e.js, r3); err == nil || !strings.Contains(err.Error(), e.cfg.Name) {
		t.Fatalf("3 replicas on one server: %v, want an error naming %s", err, e.cfg.Name)
	}
}
