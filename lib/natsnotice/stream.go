package natsnotice

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream defaults (see [DefaultStreamConfig]).
const (
	// DefaultDuplicates is the stream's duplicate window: a notice
	// republished within it (same Nats-Msg-Id) is stored once.
	DefaultDuplicates = 2 * time.Minute
	// DefaultMaxAge is how long an unconsumed notice is kept. Older ones
	// are discarded: by then the snapshotter's sweep has caught their
	// aggregates.
	DefaultMaxAge = 24 * time.Hour
	// DefaultMaxBytes caps the stream's size (1 GiB, about three million
	// notices); when full, the oldest notices are discarded first.
	DefaultMaxBytes = 1 << 30
)

// StreamConfig describes the JetStream stream that holds notices. Build
// one with [DefaultStreamConfig] and change what you need; [EnsureStream]
// creates or updates the stream from it.
type StreamConfig struct {
	// Name is the stream's name (default [DefaultStream]).
	Name string
	// SubjectPrefix is the prefix notices are published under (default
	// [DefaultSubjectPrefix]); the stream captures <SubjectPrefix>.>. It
	// must match the publisher's [WithSubjectPrefix] and the worker's.
	SubjectPrefix string
	// Replicas is how many servers of a cluster keep the stream (1..5,
	// default 1; use 3 in a production cluster). It can be changed on an
	// existing stream.
	Replicas int
	// Duplicates is the duplicate window (default [DefaultDuplicates]). It
	// must be positive, at most MaxAge when MaxAge is set, and should be
	// longer than the publisher's retry max elapsed time.
	Duplicates time.Duration
	// MaxAge discards notices older than this (0: keep until consumed;
	// default [DefaultMaxAge]).
	MaxAge time.Duration
	// MaxBytes caps the stream's size; the oldest notices are discarded
	// first (-1: unlimited; default [DefaultMaxBytes]).
	MaxBytes int64
	// Storage is jetstream.FileStorage (the default) or
	// jetstream.MemoryStorage (tests, or when losing notices on a server
	// restart is acceptable). It cannot be changed on an existing stream.
	Storage jetstream.StorageType
}

// DefaultStreamConfig returns the stream the snapshotter expects: name
// EVSNAP_APPENDED, subjects evsnap.appended.>, work-queue retention (a
// notice is removed once a worker acknowledges it), file storage, a
// duplicate window of 2 minutes, one replica, notices kept at most 24
// hours and 1 GiB, discarding the oldest first.
func DefaultStreamConfig() StreamConfig {
	return StreamConfig{
		Name:          DefaultStream,
		SubjectPrefix: DefaultSubjectPrefix,
		Replicas:      1,
		Duplicates:    DefaultDuplicates,
		MaxAge:        DefaultMaxAge,
		MaxBytes:      DefaultMaxBytes,
		Storage:       jetstream.FileStorage,
	}
}

// Validate reports what is wrong with c, as an error matching
// [ErrInvalidOption] that names the stream.
func (c StreamConfig) Validate() error {
	bad := func(format string, args ...any) error {
		return invalidOption("stream %q: "+format, append([]any{c.Name}, args...)...)
	}
	if c.Name == "" || len(c.Name) > 255 || strings.ContainsAny(c.Name, " \t\r\n.*>/\\") {
		return bad("name must be 1-255 characters without whitespace, '.', '*', '>', '/' or '\\\\'")
	}
	if err := validateSubjectPrefix(c.SubjectPrefix); err != nil {
		return fmt.Errorf("stream %q: %w", c.Name, err)
	}
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return bad("replicas must be 1..5, got %d", c.Replicas)
	case c.Duplicates <= 0:
		return bad("duplicate window must be positive, got %s (notices rely on it to drop republished copies)", c.Duplicates)
	case c.MaxAge < 0:
		return bad("max age must be 0 (unlimited) or positive, got %s", c.MaxAge)
	case c.MaxAge > 0 && c.Duplicates > c.MaxAge:
		return bad("duplicate window %s exceeds max age %s", c.Duplicates, c.MaxAge)
	case c.MaxBytes == 0 || c.MaxBytes < -1:
		return bad("max bytes must be -1 (unlimited) or positive, got %d", c.MaxBytes)
	case c.Storage != jetstream.FileStorage && c.Storage != jetstream.MemoryStorage:
		return bad("unknown storage type %d", c.Storage)
	}
	return nil
}

// JetStreamConfig returns the jetstream.StreamConfig [EnsureStream] sends:
// c's settings plus work-queue retention and discard-old.
func (c StreamConfig) JetStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "evsnap \"events appended\" notices (lib/natsnotice), consumed by the snapshotter",
		Subjects:    []string{c.SubjectPrefix + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.MaxBytes,
		MaxMsgs:     -1,
		Storage:     c.Storage,
		Replicas:    c.Replicas,
		Duplicates:  c.Duplicates,
	}
}

// EnsureStream creates the notice stream described by cfg, or updates it
// to cfg when it exists (the call is idempotent). Replicas, the duplicate
// window, max age and max bytes can be changed on an existing stream;
// storage and retention cannot, and the server's refusal is returned.
// Errors name the stream; an invalid cfg matches [ErrInvalidOption] and
// nothing is sent. This is what `snapshotter migrate` runs.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("natsnotice: ensure stream: %w", err)
	}
	if js == nil {
		return nil, fmt.Errorf("natsnotice: ensure stream %s: %w: nil JetStream", cfg.Name, ErrInvalidOption)
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg.JetStreamConfig())
	if err != nil {
		return nil, fmt.Errorf("natsnotice: ensure stream %s (subjects %s.>): %w", cfg.Name, cfg.SubjectPrefix, err)
	}
	return s, nil
}
