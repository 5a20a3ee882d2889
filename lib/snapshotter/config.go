package snapshotter

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/natsnotice"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ErrInvalidConfig matches every configuration error.
var ErrInvalidConfig = errors.New("snapshotter: invalid config")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// DefaultConsumer is the durable consumer every replica shares.
const DefaultConsumer = "snapshotter"

// Config configures a [Worker]. Start from [DefaultConfig]; [New] calls
// Validate.
type Config struct {
	// Store holds the events the worker reads and the snapshots it
	// writes (required). The reconciliation sweep, Rebuild of a whole
	// type, Stats and Verify list aggregates with its ListAggregates,
	// which a store made by eventsource.Split cannot do: on such a store
	// they fail with an error matching [ErrCannotList] (the sweep logs it
	// once and stops), and the notices are still handled.
	Store eventsource.Store

	// JetStream is where notices come from. Without it Run only sweeps;
	// the admin methods (SnapshotAggregate, Rebuild, Stats, Prune) never
	// need it.
	JetStream jetstream.JetStream
	// Stream, Consumer and SubjectPrefix locate the notices. Consumer
	// also names the reconciliation sweep's marks in the store (one per
	// aggregate type and schema version; decision 37): fleets of
	// different consumers sweep on their own.
	Stream        string
	Consumer      string
	SubjectPrefix string

	// BatchSize is how many notices one fetch takes (1-10000).
	BatchSize int
	// Concurrency is how many aggregates one replica rebuilds at once
	// (1-1024). It bounds the size of the batched snapshot writes, and it
	// can exceed the store's connections: a rebuild holds a connection only
	// while it reads.
	Concurrency int
	// WriteBatch is the most snapshots written with one SaveSnapshots
	// call (one statement, one commit) (1-1000; 1 writes each on its own).
	// Rebuilds running at once share a write; none waits for a batch to
	// fill, so a larger Concurrency gives larger batches.
	WriteBatch int
	// ReadBatch is the most aggregates whose snapshots are read with one
	// GetSnapshots call (one statement) for the policy's decision (1-1000;
	// 1 reads each on its own). Like writes, the decisions of notices handled at once
	// share a round trip and none waits for a batch to fill.
	ReadBatch int
	// Linger is how long a batch waits to fill after its first notice.
	Linger time.Duration
	// AckWait is how long JetStream waits for an ack before redelivering.
	AckWait time.Duration
	// MaxDeliveries bounds how often a notice whose handling keeps failing
	// with transient errors (a database outage) is delivered: each failure
	// is naked with a growing delay (1s, 2s, 4s ... 1m), and when the
	// MaxDeliveries-th delivery fails too the notice is terminated and
	// logged; the reconciliation sweep catches its aggregate up (1-100).
	// A notice that can never succeed (malformed, an unknown aggregate
	// type, an aggregate that does not exist, events that do not decode)
	// is terminated on its first delivery whatever this says.
	MaxDeliveries int

	// SweepInterval is the period of the reconciliation sweep that finds
	// aggregates whose snapshot is at least the threshold behind (lost
	// notices) and snapshots them. On a store that keeps its streams in
	// change order (eventsource.SweepStore) a pass examines the
	// aggregates changed since the last (see [Worker.Sweep]). 0 disables
	// it.
	SweepInterval time.Duration
	// SweepRate caps the sweep's rebuilds per second, so it can never cause
	// a load storm.
	SweepRate float64
	// SweepBatch caps how many aggregates one sweep pass rebuilds per type
	// (retries of earlier failures included).
	SweepBatch int
	// SweepLeaseTTL is how long the sweep lease outlives its holder. With
	// JetStream configured, the replicas sharing a durable consumer hold a
	// lease in the LeaseBucket key-value bucket so that one of them sweeps
	// at a time; the holder renews it every third of the TTL, and when it
	// dies another replica takes over within about 4/3 of the TTL (its
	// first pass then runs at its next sweep tick). A replica that cannot
	// reach the bucket sweeps anyway: the lease saves work, it does not
	// guard correctness. 0 turns the lease off (every replica sweeps);
	// otherwise at least 1s.
	SweepLeaseTTL time.Duration
	// LeaseBucket is the key-value bucket of the sweep lease. The key is
	// the Consumer's name and the worker's types with their schema
	// versions ("snapshotter/Account=1/Order=1"): replicas of one version
	// of the application share a lease, and two versions running side by
	// side (a rolling deploy, a rollback) each sweep their own snapshots.
	LeaseBucket string

	// MaxSnapshotBytes refuses (and reports) snapshots whose encoded state
	// is larger (default 16 MiB, as a repository's).
	MaxSnapshotBytes int

	// DrainTimeout bounds how long Run finishes in-flight work after its
	// context ends.
	DrainTimeout time.Duration

	// SummaryInterval is how often Run logs, at info, a one-line summary
	// of the work done since the last one: notices taken, acked, retried
	// and terminated, snapshots written (and by the sweep), and the
	// snapshot lag's p50 and p99. An interval without work logs nothing.
	// 0 turns the summary off.
	SummaryInterval time.Duration
	// BacklogInterval is how often Run reads the durable consumer's info
	// for the evsnap.worker.consumer.pending and .ack_pending gauges (one
	// JetStream API request per replica per interval). 0 turns the
	// sampling off.
	BacklogInterval time.Duration

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// DefaultConfig returns the defaults: stream EVSNAP_APPENDED, consumer
// "snapshotter", batches of 256, 16 aggregates at once, up to 64 snapshots
// per write and 64 aggregates per read, a 5ms linger, a 30s ack wait, 10
// deliveries (about four minutes of retries), a sweep every minute at 50
// rebuilds/s by one replica at a time (a 30s lease in EVSNAP_LEASES), a
// summary line every minute and a backlog sample every 15s.
func DefaultConfig() Config {
	return Config{
		Stream:        natsnotice.DefaultStream,
		Consumer:      DefaultConsumer,
		SubjectPrefix: natsnotice.DefaultSubjectPrefix,
		BatchSize:     256,
		Concurrency:   16,
		WriteBatch:    64,
		ReadBatch:     64,
		Linger:        5 * time.Millisecond,
		AckWait:       30 * time.Second,
		MaxDeliveries: 10,
		SweepInterval: time.Minute,
		SweepRate:     50,
		SweepBatch:    1000,
		SweepLeaseTTL: 30 * time.Second,
		LeaseBucket:   DefaultLeaseBucket,
		DrainTimeout:  20 * time.Second,

		SummaryInterval: time.Minute,
		BacklogInterval: 15 * time.Second,

		MaxSnapshotBytes: 16 << 20, // eventsource.WithMaxSnapshotBytes's default
	}
}

// Validate reports the first thing wrong with c, naming it.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return invalid("Store (the events and snapshots) is required")
	case c.Stream == "" || strings.ContainsAny(c.Stream, " .*>\t\r\n"):
		return invalid("stream name %q is empty or has a space, '.', '*' or '>'", c.Stream)
	case c.Consumer == "" || strings.ContainsAny(c.Consumer, " .*>\t\r\n"):
		return invalid("consumer name %q is empty or has a space, '.', '*' or '>'", c.Consumer)
	case c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, " *>\t\r\n") || strings.HasSuffix(c.SubjectPrefix, "."):
		return invalid("subject prefix %q is not a plain subject", c.SubjectPrefix)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return invalid("batch size %d is outside 1-10000", c.BatchSize)
	case c.Concurrency < 1 || c.Concurrency > 1024:
		return invalid("concurrency %d is outside 1-1024", c.Concurrency)
	case c.WriteBatch < 1 || c.WriteBatch > 1000:
		return invalid("write batch %d is outside 1-1000", c.WriteBatch)
	case c.ReadBatch < 1 || c.ReadBatch > 1000:
		return invalid("read batch %d is outside 1-1000", c.ReadBatch)
	case c.Linger < 0 || c.Linger > time.Second:
		return invalid("linger %v is outside 0-1s", c.Linger)
	case c.AckWait < time.Second:
		return invalid("ack wait %v is below 1s", c.AckWait)
	case c.MaxDeliveries < 1 || c.MaxDeliveries > 100:
		return invalid("max deliveries %d is outside 1-100", c.MaxDeliveries)
	case c.SweepInterval < 0:
		return invalid("sweep interval %v is negative", c.SweepInterval)
	case c.SweepInterval > 0 && c.SweepRate <= 0:
		return invalid("sweep rate %v must be positive when the sweep is on", c.SweepRate)
	case c.SweepInterval > 0 && c.SweepBatch < 1:
		return invalid("sweep batch %d must be at least 1 when the sweep is on", c.SweepBatch)
	case c.SweepLeaseTTL != 0 && c.SweepLeaseTTL < time.Second:
		return invalid("sweep lease TTL %v is below 1s (0 turns the lease off)", c.SweepLeaseTTL)
	case c.SweepLeaseTTL != 0 && !validBucketName(c.LeaseBucket):
		return invalid("lease bucket %q is not a key-value bucket name (letters, digits, '_' and '-')", c.LeaseBucket)
	case c.MaxSnapshotBytes < 1:
		return invalid("max snapshot bytes %d must be at least 1", c.MaxSnapshotBytes)
	case c.DrainTimeout < 0:
		return invalid("drain timeout %v is negative", c.DrainTimeout)
	case c.SummaryInterval < 0:
		return invalid("summary interval %v is negative", c.SummaryInterval)
	case c.BacklogInterval < 0:
		return invalid("backlog interval %v is negative", c.BacklogInterval)
	}
	return nil
}

// ParsePolicies parses per-type policies: "Type=spec" entries separated by
// ';', e.g. "Account=threshold:100;Order=threshold:50,milestones:OrderPaid|OrderShipped".
func ParsePolicies(s string) (map[string]eventsource.Policy, error) {
	out := map[string]eventsource.Policy{}
	for _, entry := range strings.Split(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		typ, spec, ok := strings.Cut(entry, "=")
		typ = strings.TrimSpace(typ)
		if !ok || typ == "" {
			return nil, invalid("policy entry %q: want Type=threshold:N,milestones:A|B", entry)
		}
		if _, dup := out[typ]; dup {
			return nil, invalid("policy for %s given twice", typ)
		}
		p, err := eventsource.ParsePolicy(spec)
		if err != nil {
			return nil, fmt.Errorf("%w: policy for %s: %w", ErrInvalidConfig, typ, err)
		}
		out[typ] = p
	}
	return out, nil
}

// String renders policies in the form ParsePolicies reads, types sorted.
func formatPolicies(m map[string]eventsource.Policy) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k].String()
	}
	return strings.Join(parts, ";")
}

// validBucketName reports whether name is a JetStream key-value bucket
// name: one or more of A-Z a-z 0-9 _ -.
func validBucketName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
