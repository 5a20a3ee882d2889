package eventsource

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/google/uuid"
)

// VerifyStatus is the outcome of [Repository.VerifySnapshot].
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
	// VerifyUndecodable: the snapshot's state does not decode (loads fall
	// back to replay; a rebuild repairs it).
	VerifyUndecodable VerifyStatus = "undecodable"
	// VerifyNoSnapshot: the aggregate has no snapshot.
	VerifyNoSnapshot VerifyStatus = "no_snapshot"
	// VerifyOtherSchema: the snapshot has another schema version than this
	// build's aggregate, which loads ignore.
	VerifyOtherSchema VerifyStatus = "other_schema"
)

// VerifyResult reports one aggregate's verification.
type VerifyResult struct {
	AggregateID     uuid.UUID
	Status          VerifyStatus
	SnapshotVersion int64
	// Detail says what differed, for mismatches and undecodable states.
	Detail string
}

// VerifySnapshot checks the aggregate's stored snapshot against a full
// replay of its events up to the snapshot's version: the stream's event at
// that version must be the one the snapshot names (else [VerifyStale]) and
// the two states must encode identically (else [VerifyMismatch]). It
// changes nothing (a load removes a stale snapshot;
// VerifySnapshot only reports it). Store errors are returned; everything
// about the snapshot itself is a status.
func (r *Repository[T, PT]) VerifySnapshot(ctx context.Context, id uuid.UUID) (VerifyResult, error) {
	res := VerifyResult{AggregateID: id}
	snap, err := r.store.GetSnapshot(ctx, r.typ, id)
	if err != nil {
		return res, fmt.Errorf("verify %s %s: read snapshot: %w", r.typ, id, err)
	}
	if snap == nil {
		res.Status = VerifyNoSnapshot
		return res, nil
	}
	res.SnapshotVersion = snap.Version
	if snap.SchemaVersion != r.schemaVersion {
		res.Status = VerifyOtherSchema
		res.Detail = fmt.Sprintf("snapshot schema %d, aggregate schema %d", snap.SchemaVersion, r.schemaVersion)
		return res, nil
	}
	fromSnap := r.New(id)
	if err := fromSnap.restoreState(r.codec, snap.State); err != nil {
		res.Status = VerifyUndecodable
		res.Detail = err.Error()
		return res, nil
	}
	replayed := r.New(id)
	c := replayed.rootCore()
	for rec, err := range r.store.ReadEvents(ctx, r.typ, id, 0) {
		if err != nil {
			return res, fmt.Errorf("verify %s %s: read events: %w", r.typ, id, err)
		}
		if rec.Version > snap.Version {
			break
		}
		if rec.Version != c.version+1 {
			return res, fmt.Errorf("verify %s %s: %w: got v%d after v%d", r.typ, id, ErrCorruptStream, rec.Version, c.version)
		}
		e, err := r.reg.DecodeRecorded(&rec)
		if err != nil {
			return res, fmt.Errorf("verify %s %s: %w", r.typ, id, err)
		}
		replayed.applyEvent(e)
		c.lastEventID = rec.ID
	}
	if c.version != snap.Version {
		res.Status = VerifyStale
		res.Detail = fmt.Sprintf("snapshot at v%d but the stream ends at v%d", snap.Version, c.version)
		return res, nil
	}
	if c.lastEventID != snap.EventID {
		res.Status = VerifyStale
		res.Detail = fmt.Sprintf("the stream's event at v%d is %s, not the snapshot's %s", snap.Version, c.lastEventID, snap.EventID)
		return res, nil
	}
	want, err := replayed.exportState(r.codec)
	if err != nil {
		return res, fmt.Errorf("verify %s %s: encode replayed state: %w", r.typ, id, err)
	}
	got, err := fromSnap.exportState(r.codec)
	if err != nil {
		return res, fmt.Errorf("verify %s %s: encode snapshot state: %w", r.typ, id, err)
	}
	if bytes.Equal(got, want) || jsonEqual(got, want) {
		res.Status = VerifyOK
		return res, nil
	}
	res.Status = VerifyMismatch
	res.Detail = fmt.Sprintf("snapshot state %s, replay gives %s", truncate(got, 200), truncate(want, 200))
	return res, nil
}

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
