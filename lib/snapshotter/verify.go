package snapshotter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math"
	"reflect"
	"sync/atomic"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/google/uuid"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// VerifyStatus is the outcome of verifying one aggregate's snapshot (see
// [Worker.Verify]).
type VerifyStatus string

// Verify outcomes.
const (
	// VerifyOK: the snapshot equals a full replay up to its version.
	VerifyOK VerifyStatus = "ok"
	// VerifyMismatch: the snapshot is tied to the stream's history but its
	// state differs from the replay.
	VerifyMismatch VerifyStatus = "mismatch"
	// VerifyStale: the snapshot is not tied to the stream's history: the
	// stream has no event at its version, or that event's id is not the
	// snapshot's EventID. Loads ignore it and remove it.
	VerifyStale VerifyStatus = "stale"
	// VerifyUndecodable: the snapshot's state does not decode into the
	// aggregate's state (loads fall back to replay; a rebuild repairs it).
	VerifyUndecodable VerifyStatus = "undecodable"
	// VerifyNoSnapshot: the aggregate has no snapshot of this build's
	// schema version (snapshots of other schema versions are other
	// versions of the application's; their own builds verify them).
	VerifyNoSnapshot VerifyStatus = "no_snapshot"
)

// VerifyResult reports one aggregate's verification.
type VerifyResult struct {
	AggregateID     uuid.UUID
	Status          VerifyStatus
	SnapshotVersion int64
	// Detail says what differed, for mismatches and stale snapshots.
	Detail string
}

// VerifyReport summarises [Worker.Verify].
type VerifyReport struct {
	AggregateType string
	Checked       int
	// ByStatus counts the results by status.
	ByStatus map[VerifyStatus]int
	// Problems lists the stale, mismatched and undecodable snapshots (at
	// most 50).
	Problems []VerifyResult
}

// problem reports whether a verify status needs a repair.
func problem(st VerifyStatus) bool {
	return st == VerifyStale || st == VerifyMismatch || st == VerifyUndecodable
}

// verify checks the stored snapshot of id against a full replay of its
// events up to the snapshot's version, changing nothing: the stream's
// event at that version must be the one the snapshot names (else stale),
// and the snapshot a repository builds from the stored snapshot's state
// must equal the one it builds from the replay (else a mismatch, or
// undecodable when the state does not load). Both are built by a scratch
// repository that sees the events up to the version and keeps its
// snapshots in memory, so the comparison is the repository's own
// encoding of both states, and nothing is written to the store. Store
// errors are returned; everything about the snapshot itself is a status.
func (r *repoRebuilder[T, PT]) verify(ctx context.Context, id uuid.UUID) (VerifyResult, error) {
	res := VerifyResult{AggregateID: id}
	typ, schema := r.repo.AggregateType(), PT(new(T)).SchemaVersion()
	fail := func(what string, err error) (VerifyResult, error) {
		return res, fmt.Errorf("verify %s %s: %s: %w", typ, id, what, err)
	}
	snap, err := r.store.GetSnapshot(ctx, typ, id, schema)
	switch {
	case err != nil:
		return fail("read snapshot", err)
	case snap == nil:
		res.Status = VerifyNoSnapshot
		return res, nil
	}
	res.SnapshotVersion = snap.Version

	// Tied to the stream's history?
	var at *eventsource.RecordedEvent
	for rec, err := range r.store.ReadEvents(ctx, typ, id, snap.Version-1) {
		if err != nil {
			return fail("read events", err)
		}
		if rec.Version == snap.Version {
			at = &rec
		}
		break
	}
	if at == nil {
		head, err := r.store.StreamVersion(ctx, typ, id)
		if err != nil {
			return fail("read the stream's version", err)
		}
		res.Status = VerifyStale
		res.Detail = fmt.Sprintf("snapshot at v%d but the stream ends at v%d", snap.Version, head)
		return res, nil
	}
	if at.ID != snap.EventID {
		res.Status = VerifyStale
		res.Detail = fmt.Sprintf("the stream's event at v%d is %s, not the snapshot's %s", snap.Version, at.ID, snap.EventID)
		return res, nil
	}

	view := &eventsUpTo{EventStore: r.store, max: snap.Version}
	scratch, err := eventsource.NewRepository[T, PT](
		eventsource.Split(view, memstore.NewSnapshotStore()), r.reg,
		eventsource.WithSnapshotMode(eventsource.ModeManual),
		eventsource.WithMaxSnapshotBytes(math.MaxInt),
		eventsource.WithLogger(slog.New(slog.DiscardHandler)),
		eventsource.WithTracerProvider(tracenoop.NewTracerProvider()),
		eventsource.WithMeterProvider(metricnoop.NewMeterProvider()))
	if err != nil {
		return fail("scratch repository", err)
	}
	defer scratch.Close(context.WithoutCancel(ctx))
	// The snapshot with the stream's event at its version, the one event
	// a load from it reads. A load sets such events aside and reads the
	// stream itself only when the snapshot does not fit them: it is tied
	// (checked above), so then its state does not decode.
	loaded, err := scratch.LoadFromEvents(ctx, id, snap, func(yield func(eventsource.RecordedEvent, error) bool) { yield(*at, nil) })
	if err != nil {
		return fail("load from the snapshot", err)
	}
	if view.reads.Load() > 0 {
		res.Status = VerifyUndecodable
		res.Detail = fmt.Sprintf("state %s does not decode into the aggregate's state", truncate(snap.State, 200))
		return res, nil
	}
	got, err := scratch.CreateSnapshot(ctx, loaded)
	if err != nil {
		return fail("encode the snapshot's state", err)
	}
	replayed, err := scratch.LoadFrom(ctx, id, nil)
	if err != nil {
		return fail("replay", err)
	}
	want, err := scratch.CreateSnapshot(ctx, replayed)
	if err != nil {
		return fail("encode the replayed state", err)
	}
	if bytes.Equal(got.State, want.State) || jsonEqual(got.State, want.State) {
		res.Status = VerifyOK
		return res, nil
	}
	res.Status = VerifyMismatch
	res.Detail = fmt.Sprintf("snapshot state %s, replay gives %s", truncate(got.State, 200), truncate(want.State, 200))
	return res, nil
}

// eventsUpTo is an event store's view of its streams up to version max:
// what the stream was when a snapshot at max was taken. It counts the
// reads, and cannot append.
type eventsUpTo struct {
	eventsource.EventStore
	max   int64
	reads atomic.Int64
}

var errReadOnly = errors.New("snapshotter: a verification does not append")

// Append implements eventsource.EventStore: it refuses.
func (*eventsUpTo) Append(context.Context, string, uuid.UUID, eventsource.ExpectedVersion, []eventsource.NewEvent) (eventsource.AppendResult, error) {
	return eventsource.AppendResult{}, errReadOnly
}

// ReadEvents implements eventsource.EventStore: the events up to max.
func (e *eventsUpTo) ReadEvents(ctx context.Context, typ string, id uuid.UUID, after int64) iter.Seq2[eventsource.RecordedEvent, error] {
	e.reads.Add(1)
	return func(yield func(eventsource.RecordedEvent, error) bool) {
		for rec, err := range e.EventStore.ReadEvents(ctx, typ, id, after) {
			if err == nil && rec.Version > e.max {
				return
			}
			if !yield(rec, err) {
				return
			}
		}
	}
}

// StreamVersion implements eventsource.EventStore: at most max.
func (e *eventsUpTo) StreamVersion(ctx context.Context, typ string, id uuid.UUID) (int64, error) {
	v, err := e.EventStore.StreamVersion(ctx, typ, id)
	return min(v, e.max), err
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
