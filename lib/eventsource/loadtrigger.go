package eventsource

import (
	"context"
	"sync"
	"time"

	"github.com/evsnap/evsnap/internal/telemetrykeys"
	"github.com/google/uuid"
)

// loadTriggerCapacity is how many aggregates a load trigger remembers per
// interval: the bound on its memory, and on the requests one repository
// makes per interval.
const loadTriggerCapacity = 4096

// loadTrigger decides which loads ask for a snapshot ([WithLoadTrigger]):
// those that replayed at least min events, once per aggregate per
// interval. It remembers when each aggregate last asked, in two
// generations: cur, the aggregates that asked since turned, less than an
// interval ago, and prev, those that asked in the interval before. When
// an interval has passed since turned, the next check turns them: prev
// is forgotten (its asks are more than an interval old), cur becomes
// prev. So memory holds at most two generations of
// loadTriggerCapacity ids each; a load that finds cur full does not ask
// until it turns. Checks take a mutex, and allocate nothing once the maps
// have grown.
type loadTrigger struct {
	min      int64
	interval time.Duration

	mu        sync.Mutex
	turned    time.Time
	cur, prev map[uuid.UUID]time.Time // aggregate -> when it asked
}

func newLoadTrigger(min int64, interval time.Duration) *loadTrigger {
	return &loadTrigger{min: min, interval: interval, cur: map[uuid.UUID]time.Time{}, prev: map[uuid.UUID]time.Time{}}
}

// allow reports whether aggregate id may ask at now, and if so remembers
// that it did.
func (t *loadTrigger) allow(id uuid.UUID, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since := now.Sub(t.turned); since >= t.interval {
		clear(t.prev)
		t.prev, t.cur = t.cur, t.prev
		if since >= 2*t.interval {
			clear(t.prev) // its asks are more than an interval old too
		}
		t.turned = now
	}
	if at, ok := t.cur[id]; ok && now.Sub(at) < t.interval {
		return false
	}
	if at, ok := t.prev[id]; ok && now.Sub(at) < t.interval {
		return false
	}
	if len(t.cur) >= loadTriggerCapacity {
		return false
	}
	t.cur[id] = now
	return true
}

// remembered returns how many aggregates t holds.
func (t *loadTrigger) remembered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.cur) + len(t.prev)
}

// askIfReplayedEnough is the load path's hook: it asks for a snapshot of
// a (afterLoad) when the load that built it replayed at least the load
// trigger's count of events. Without a trigger, or below its count, it
// costs a comparison.
func (r *Repository[T, PT]) askIfReplayedEnough(ctx context.Context, a PT) {
	if r.trigger != nil && a.rootCore().replayed >= r.trigger.min {
		r.afterLoad(ctx, a)
	}
}

// afterLoad asks for a snapshot of a, which a load has just built by
// replaying at least the trigger's count of events, unless a asked less
// than an interval ago: in ModeSync it stores one, in ModeBackground it
// queues one, in ModeExternal it hands the request to the notifier. It
// never fails the load: errors, and even a panic in the codec, the
// snapshot store or the notifier, are logged and counted.
func (r *Repository[T, PT]) afterLoad(ctx context.Context, a PT) {
	c := a.rootCore()
	if !r.trigger.allow(c.id, r.now()) {
		r.tel.loadRequest(ctx, telemetrykeys.RequestRateLimited)
		return
	}
	asked := false
	defer func() {
		if p := recover(); p != nil {
			r.recovered(ctx, p, "panicked asking for a snapshot after a load; the load succeeded", c.id, c.version)
		}
		result := telemetrykeys.RequestAsked
		if !asked {
			result = telemetrykeys.RequestFailed
		}
		r.tel.loadRequest(ctx, result)
	}()
	switch r.mode {
	case ModeSync, ModeBackground:
		asked = r.takeSnapshot(ctx, a, "a load")
	case ModeExternal:
		err := r.requester.RequestSnapshot(ctx, SnapshotRequest{
			AggregateType: r.typ, AggregateID: c.id,
			FirstVersion: c.version - c.replayed + 1, LastVersion: c.version,
			RequestedAt: time.Now(),
		})
		if err != nil {
			if suppressed, ok := r.notifyLog.allow(r.now()); ok {
				r.tel.logger.WarnContext(ctx, "snapshot request not sent after a load; the next load past the interval asks again",
					telemetrykeys.LogKeyAggregateID, c.id, telemetrykeys.LogKeyVersion, c.version, telemetrykeys.LogKeyError, err, "suppressed_since_last", suppressed)
			}
			r.tel.failure(ctx, r.typ, r.mode, telemetrykeys.FailureNotify)
			return
		}
		asked = true
	}
}
