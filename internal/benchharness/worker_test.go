package benchharness

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/memstore"
	"github.com/evsnap/evsnap/lib/sqlitestore"
)

// The worker under measurement must see every capability its store has,
// as it does in cmd/snapshotter: a wrapper that hid one would measure
// another worker than the one users run.
func TestWorkerStoreKeepsCapabilities(t *testing.T) {
	var stored atomic.Int64
	mem := workerStore(memstore.New(), &stored, nil)
	if _, ok := mem.(eventsource.SnapshotLoader); !ok {
		t.Error("memstore: the wrapper hides SnapshotLoader")
	}
	if _, ok := mem.(eventsource.SnapshotBatchGetter); !ok {
		t.Error("memstore: the wrapper hides SnapshotBatchGetter")
	}
	if _, ok := mem.(eventsource.SnapshotBatchSaver); !ok {
		t.Error("memstore: the wrapper hides SnapshotBatchSaver")
	}
	lite, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	if _, ok := workerStore(lite, &stored, nil).(eventsource.SnapshotLoader); ok {
		t.Error("sqlitestore: the wrapper claims SnapshotLoader, which the store does not have")
	}
}
