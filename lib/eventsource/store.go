package eventsource

import (
	"context"
	"fmt"
	"iter"
	"math"
	"time"

	"github.com/evsnap/evsnap/internal/jsonvalid"
	"github.com/google/uuid"
)

// MaxSchemaVersion is the highest schema version (of a snapshot or an
// aggregate) that every store keeps exactly: PostgreSQL's integer column
// holds 32 bits. Schema versions run from 1 to MaxSchemaVersion; stores
// refuse others, and DeleteSnapshotsByType bounds beyond it, as errors
// matching ErrInvalidArgument. (Versions and expected versions are int64
// on every store, with no narrower range.)
const MaxSchemaVersion = math.MaxInt32

// maxAggregateTypeLen is the longest aggregate type name, in bytes, that
// every store accepts (storekit.MaxAggregateTypeLen).
const maxAggregateTypeLen = 255

// ExpectedVersion is the stream version an append expects. A non-negative
// value N means "the stream is at exactly version N"; 0 therefore means the
// stream must not exist yet. [AnyVersion] skips the check.
type ExpectedVersion int64

const (
	// AnyVersion appends whatever the stream's version is.
	AnyVersion ExpectedVersion = -1
	// NoStream appends only if the stream has no events yet.
	NoStream ExpectedVersion = 0
)

// AppendResult describes a committed append.
type AppendResult struct {
	// FirstVersion and LastVersion are the versions the appended events
	// received (LastVersion-FirstVersion+1 events).
	FirstVersion int64
	LastVersion  int64
	// CommittedAt is when the store committed the append (UTC).
	CommittedAt time.Time
}

// EventStore is an append-only store of event streams, one stream per
// aggregate (type + id): the events half of a [Store]. Implementations
// must be safe for concurrent use by many goroutines (and, for shared
// databases, many processes). Give one to [Split] to pair it with a
// [SnapshotStore] kept elsewhere.
type EventStore interface {
	// Append atomically appends events to the stream of aggregate typ/id,
	// giving them versions expected+1, expected+2, ... (or head+1, ... for
	// AnyVersion). If the stream is not at the expected version, Append
	// commits nothing and returns a *ConflictError (matching
	// ErrConcurrencyConflict) with the expected and actual versions; two
	// concurrent appends at one version therefore have exactly one winner.
	// An empty events slice, an empty typ or one longer than 255 bytes, a
	// nil id, an expected version below -1, or an event whose payload is
	// not valid JSON is an error matching ErrInvalidArgument (see
	// storekit.ValidateAppend). An event id that is already stored (in any
	// stream) or repeated within the append is a *DuplicateEventIDError,
	// which matches ErrDuplicateEventID and also ErrInvalidArgument;
	// nothing is committed then either.
	Append(ctx context.Context, typ string, id uuid.UUID, expected ExpectedVersion, events []NewEvent) (AppendResult, error)

	// ReadEvents streams the events of aggregate typ/id with a version
	// greater than after, in version order. It must not hold the whole
	// stream in memory: a store reads lazily (rows, cursor, slice window) as
	// the caller iterates, and releases its resources when the caller stops
	// early. A missing stream yields nothing. An error is yielded once, as
	// the last pair. The cost of reading must depend on the number of events
	// after `after`, not on the length of the stream. The caller may call
	// the store's other methods while iterating (a store with a single
	// connection must not hold it across yields). The events it yields are
	// the caller's: the store keeps no reference to what they hold (Payload,
	// Metadata), so the caller may keep, change or append to them without
	// touching the stored events or each other.
	ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[RecordedEvent, error]

	// StreamVersion returns the version of the stream's last event, or 0
	// when the stream does not exist.
	StreamVersion(ctx context.Context, typ string, id uuid.UUID) (int64, error)
}

// Snapshot is a point-in-time capture of an aggregate's state. A store
// keeps one snapshot per aggregate and schema version (a row), each
// replaced only by a newer one of its schema ([Snapshot.Supersedes]), for
// the newest schema versions of each aggregate (the current one and the
// previous by default; see [SnapshotStore.SaveSnapshot]). A load reads the
// row of its own schema version, so versions of an application with
// different state schemas running side by side (a rolling deploy, a
// rollback) each keep their own snapshots.
type Snapshot struct {
	AggregateID   uuid.UUID
	AggregateType string
	// Version is the aggregate version the state reflects.
	Version int64
	// EventID is the id of the stream's event at Version: the history the
	// state was built from. A load uses the snapshot only if the stream's
	// event at Version has this id; otherwise the snapshot is stale (the
	// events were restored from an older backup, or the aggregate was
	// created anew over a left-over snapshot) and is replayed past and
	// removed (see [SnapshotStore.DeleteStaleSnapshot]). Required.
	EventID uuid.UUID
	// SchemaVersion is the aggregate's declared state schema version when
	// the snapshot was taken, from 1 to [MaxSchemaVersion]: with the
	// aggregate type and id, it names the snapshot's row. Loads read only
	// the row of their aggregate's schema version.
	SchemaVersion int
	// State is the encoded state (JSON).
	State []byte
	// CreatedAt is when the snapshot was taken (UTC, microsecond precision).
	CreatedAt time.Time
}

// Validate reports what is wrong with s, if anything, as an error matching
// ErrInvalidArgument. Stores call it before writing.
func (s *Snapshot) Validate() error {
	switch {
	case s == nil:
		return fmt.Errorf("%w: nil snapshot", ErrInvalidArgument)
	case s.AggregateType == "":
		return fmt.Errorf("%w: snapshot of %s has an empty aggregate type", ErrInvalidArgument, s.AggregateID)
	case s.AggregateID == uuid.Nil:
		return fmt.Errorf("%w: snapshot of %s has a nil aggregate id", ErrInvalidArgument, s.AggregateType)
	case s.Version < 1:
		return fmt.Errorf("%w: snapshot of %s %s has version %d; versions start at 1", ErrInvalidArgument, s.AggregateType, s.AggregateID, s.Version)
	case s.SchemaVersion < 1 || s.SchemaVersion > MaxSchemaVersion:
		return fmt.Errorf("%w: snapshot of %s %s has schema version %d; schema versions run from 1 to %d (MaxSchemaVersion)", ErrInvalidArgument, s.AggregateType, s.AggregateID, s.SchemaVersion, MaxSchemaVersion)
	case s.EventID == uuid.Nil:
		return fmt.Errorf("%w: snapshot of %s %s v%d has a nil event id; it must name the event at its version", ErrInvalidArgument, s.AggregateType, s.AggregateID, s.Version)
	case len(s.State) == 0:
		return fmt.Errorf("%w: snapshot of %s %s has empty state", ErrInvalidArgument, s.AggregateType, s.AggregateID)
	case len(s.AggregateType) > maxAggregateTypeLen:
		return fmt.Errorf("%w: aggregate type %.40q… is longer than %d bytes", ErrInvalidArgument, s.AggregateType, maxAggregateTypeLen)
	case !jsonvalid.Valid(s.State):
		return fmt.Errorf("%w: snapshot of %s %s v%d: state is not valid JSON", ErrInvalidArgument, s.AggregateType, s.AggregateID, s.Version)
	}
	return nil
}

// Supersedes reports whether a snapshot s may replace stored, the
// snapshot in the row s would be written to: the store-side rule that
// keeps each row from moving backwards. s replaces the stored snapshot of
// its own schema version unless it has a lower version. (An equal version
// rewrites the row, so a corrupt snapshot can be repaired in place.)
// Snapshots of different schema versions are in different rows and never
// replace each other: for them Supersedes is false. A nil stored (an empty
// row) is always superseded.
func (s *Snapshot) Supersedes(stored *Snapshot) bool {
	return stored == nil || (s.SchemaVersion == stored.SchemaVersion && s.Version >= stored.Version)
}

// SnapshotStore keeps the latest snapshot of each aggregate and schema
// version, for the newest schema versions of each aggregate: the
// snapshots half of a [Store]. Implementations must be safe for concurrent
// use by many goroutines and processes. Give one to [Split] to pair it
// with an [EventStore] kept elsewhere.
//
// # Kept schema versions
//
// A store keeps, per aggregate, the rows of its K newest schema versions
// (K is the store's option, 2 by default: the current schema and the
// previous, so a rollback finds its snapshots; see
// storekit.DefaultKeptSchemaVersions). A save of schema version N removes
// the aggregate's rows of schema versions N-K and below, in the same
// atomic step; a save of N when the aggregate has a row of schema version
// N+K or above is not stored (it is older than every kept version). Each
// save applies the window against what is stored when it runs: two
// writers K or more schema versions apart racing on one aggregate's first
// rows may both be stored, and the aggregate's next save of any schema
// version removes the older. [SnapshotStore.DeleteSnapshotsByType] drops
// old schema versions for every aggregate of a type.
type SnapshotStore interface {
	// SaveSnapshot upserts s into the row of its aggregate and schema
	// version, unless that row holds a higher version (see
	// [Snapshot.Supersedes]) or the aggregate has a row K or more schema
	// versions newer (see Kept schema versions); then it is a no-op. It
	// removes the aggregate's rows K or more schema versions older than
	// the newest. The checks and the writes are atomic, so racing writers
	// never move a row backwards. stored reports whether s was written.
	// Rows of other schema versions are left as they are. An invalid
	// snapshot is an error matching ErrInvalidArgument.
	SaveSnapshot(ctx context.Context, s Snapshot) (stored bool, err error)

	// SaveSnapshots saves each snapshot as SaveSnapshot would, with one
	// round trip and in one transaction (on a durable store, one commit:
	// the snapshotter worker writes the snapshots of the aggregates it
	// rebuilds at the same time together). On an error nothing of the
	// batch is written. stored[i] reports whether snaps[i] was written.
	// When the batch holds more than one snapshot of a row (aggregate and
	// schema version), they apply in order under the [Snapshot.Supersedes]
	// rule and only the one left standing is written; a snapshot that
	// another of the batch puts K or more schema versions behind its
	// aggregate's newest is not written. An invalid snapshot fails the
	// whole batch with an error matching ErrInvalidArgument that names its
	// index. An empty batch does nothing.
	SaveSnapshots(ctx context.Context, snaps []Snapshot) (stored []bool, err error)

	// GetSnapshot returns the snapshot of aggregate typ/id of schema
	// version schemaVersion (one primary-key lookup), or nil and no error
	// when there is none. Rows of other schema versions are never
	// returned. A schemaVersion outside 1 to [MaxSchemaVersion] is an
	// error matching ErrInvalidArgument.
	GetSnapshot(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*Snapshot, error)

	// GetSnapshots returns the snapshots of schema version schemaVersion
	// of the aggregates typ/ids[i], with one round trip: snaps[i] is what
	// GetSnapshot(ctx, typ, ids[i], schemaVersion) would return, nil when
	// there is none. An id may appear more than once; each request gets
	// its own copy. An empty typ, a schemaVersion outside 1 to
	// [MaxSchemaVersion], a nil id (named by its index) or an empty ids is
	// an error matching ErrInvalidArgument. (The snapshotter worker reads
	// the snapshots its policy decides on this way: most notices are not
	// due, and this read is all they cost.)
	GetSnapshots(ctx context.Context, typ string, schemaVersion int, ids []uuid.UUID) (snaps []*Snapshot, err error)

	// DeleteSnapshot removes every snapshot of typ/id, of every schema
	// version, and reports whether one existed.
	DeleteSnapshot(ctx context.Context, typ string, id uuid.UUID) (bool, error)

	// DeleteStaleSnapshot removes the stored snapshot in s's row (s's
	// aggregate and schema version) only if it still has s's Version and
	// EventID, and reports whether it removed one. Rows of other schema
	// versions are never touched. A load calls it with a snapshot it
	// found stale (not tied to the stream's history), so a correct
	// snapshot written since by another process is never removed. The
	// compare and the delete are atomic; a second call, or a call after
	// the snapshot changed or went, removes nothing and returns false
	// (idempotent). Only s's aggregate type, id and schema version are
	// validated (an error matching ErrInvalidArgument); a nil EventID
	// matches no stored snapshot.
	DeleteStaleSnapshot(ctx context.Context, s Snapshot) (deleted bool, err error)

	// DeleteSnapshotsByType removes the snapshots of every aggregate of typ
	// and returns how many it removed (rows: an aggregate may have one per
	// kept schema version). When schemaVersionBelow is positive only
	// snapshots with a schema version below it are removed (the cleanup
	// after a schema migration, once no instance of the older schema runs
	// any more); 0 removes all of the type. A negative value, or one above
	// [MaxSchemaVersion], is an error matching ErrInvalidArgument.
	DeleteSnapshotsByType(ctx context.Context, typ string, schemaVersionBelow int) (int64, error)
}

// Store holds an application's events and the snapshots of its
// aggregates: what [NewRepository] and the snapshotter worker take. The
// backends (memstore, sqlitestore, pgstore) each keep both in one
// database; [Split] makes one of an [EventStore] and a [SnapshotStore]
// kept apart. Implementations must be safe for concurrent use by many
// goroutines and processes.
//
// Run [github.com/evsnap/evsnap/lib/storetest.Run] against every
// implementation; [github.com/evsnap/evsnap/lib/storekit] has the
// argument checks and helpers the backends share.
type Store interface {
	EventStore
	SnapshotStore

	// LoadSnapshotAndEvents returns what a load needs: the snapshot of
	// typ/id of schema version schemaVersion, read as GetSnapshot reads it
	// (one primary-key lookup; nil when there is none), and the
	// aggregate's events from version `from` on, where from is the
	// snapshot's version, or 1 when there is none. (The
	// event at the snapshot's own version is included so the caller can
	// check the snapshot belongs to the stream's history: that the event
	// exists and its id is the snapshot's EventID.) The events follow
	// ReadEvents' contract, and iterating them again reads them again. A
	// store that holds both reads them with one round trip or in one read
	// transaction where it can; it may read the first page of events
	// before returning, but holds no connection once it has returned. An
	// error reading either is returned (the repository then counts a
	// fallback and replays every event). A schemaVersion outside 1 to
	// [MaxSchemaVersion] is an error matching ErrInvalidArgument.
	LoadSnapshotAndEvents(ctx context.Context, typ string, id uuid.UUID, schemaVersion int) (*Snapshot, iter.Seq2[RecordedEvent, error], error)

	// ListAggregates streams the aggregates of typ that match opts, with
	// their head and snapshot versions, without reading any events. The
	// snapshotter's rebuild of a type, stats, verify and reconciliation
	// sweep use it. Like ReadEvents, it yields an error once, last, and
	// releases its resources when the caller stops early. An empty typ, or
	// an opts.SchemaVersion out of range, is an error matching
	// ErrInvalidArgument. A store that cannot list (one
	// made by [Split]) yields one error matching [errors.ErrUnsupported].
	ListAggregates(ctx context.Context, typ string, opts ListOptions) iter.Seq2[AggregateInfo, error]
}

// AggregateInfo is one aggregate's position as [Store.ListAggregates]
// reports it.
type AggregateInfo struct {
	AggregateID uuid.UUID
	// HeadVersion is the version of the aggregate's last event.
	HeadVersion int64
	// SnapshotVersion and SnapshotSchemaVersion describe the stored
	// snapshot the listing looked at: the one of
	// [ListOptions.SchemaVersion], or the one of the newest schema version
	// the aggregate has when that is 0. Both are 0 when it has none.
	SnapshotVersion       int64
	SnapshotSchemaVersion int
}

// Behind returns how many events the snapshot is behind the head.
func (a AggregateInfo) Behind() int64 {
	if a.SnapshotVersion >= a.HeadVersion {
		return 0
	}
	return a.HeadVersion - a.SnapshotVersion
}

// ListOptions narrows and orders an aggregate listing. The zero value
// lists every aggregate of the type in ascending id order, each with its
// newest schema version's snapshot.
type ListOptions struct {
	// SchemaVersion is the schema version of the snapshots the listing
	// reports (AggregateInfo.SnapshotVersion) and MinBehind and
	// MostBehindFirst measure: an aggregate without a snapshot of it is
	// listed as having none. 0 takes, for each aggregate, the snapshot of
	// the newest schema version it has. A negative value, or one above
	// [MaxSchemaVersion], makes the listing yield an error matching
	// ErrInvalidArgument.
	SchemaVersion int
	// MinBehind keeps only aggregates whose snapshot is at least this many
	// events behind the head (an aggregate without a snapshot is
	// HeadVersion behind). 0 (or a negative value) keeps all.
	MinBehind int64
	// MostBehindFirst lists the aggregates whose snapshots are furthest
	// behind their heads first (ties in ascending id order) instead of in
	// ascending id order.
	MostBehindFirst bool
	// AfterID, in id order (MostBehindFirst false), starts the listing
	// after this id: with Limit it pages through every aggregate of a type.
	// It is ignored with MostBehindFirst.
	AfterID uuid.UUID
	// Limit caps the number of aggregates listed; 0 (or a negative value)
	// means no limit.
	Limit int
}

// validateSchemaVersion checks a schema version argument, as an error
// matching ErrInvalidArgument (storekit.ValidateSchemaVersion).
func validateSchemaVersion(schemaVersion int) error {
	if schemaVersion < 1 || schemaVersion > MaxSchemaVersion {
		return fmt.Errorf("%w: schema version %d; schema versions run from 1 to %d (MaxSchemaVersion)", ErrInvalidArgument, schemaVersion, MaxSchemaVersion)
	}
	return nil
}
