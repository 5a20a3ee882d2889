package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/sqlitestore"
	"github.com/google/uuid"
)

func ExampleOpen() {
	ctx := context.Background()
	// A file path works the same way; ":memory:" lives as long as the Store.
	s, err := sqlitestore.Open(ctx, sqlitestore.MemoryPath, quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil { // once, before first use
		log.Fatal(err)
	}

	id := uuid.MustParse("6f1c2e0a-4b7d-4e8a-9a51-0c3f1d2e4b5a")
	opened := eventsource.NewEvent{ID: uuid.New(), Type: "AccountOpened", Payload: []byte(`{"owner":"Ada"}`), OccurredAt: time.Now()}
	res, err := s.Append(ctx, "Account", id, eventsource.NoStream, []eventsource.NewEvent{opened})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended versions", res.FirstVersion, "to", res.LastVersion)

	// A second writer that expected the stream not to exist loses.
	_, err = s.Append(ctx, "Account", id, eventsource.NoStream, []eventsource.NewEvent{
		{ID: uuid.New(), Type: "AccountOpened", Payload: []byte(`{"owner":"Bob"}`), OccurredAt: time.Now()},
	})
	var conflict *eventsource.ConflictError
	fmt.Println("conflict:", errors.As(err, &conflict), "expected", conflict.Expected, "actual", conflict.Actual)

	for rec, err := range s.ReadEvents(ctx, "Account", id, 0) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("v%d %s %s\n", rec.Version, rec.Type, rec.Payload)
	}
	// Output:
	// appended versions 1 to 1
	// conflict: true expected 0 actual 1
	// v1 AccountOpened {"owner":"Ada"}
}

// Ticked is the event of Example_repository's aggregate.
type Ticked struct{}

func (Ticked) EventType() string { return "Ticked" }

// ClockState is the state a Clock's snapshots hold.
type ClockState struct {
	Ticks int `json:"ticks"`
}

func (s ClockState) Apply(e eventsource.Event) ClockState {
	if _, ok := e.(Ticked); ok {
		s.Ticks++
	}
	return s
}

// Clock is Example_repository's aggregate.
type Clock struct{ eventsource.Root[ClockState] }

func (*Clock) AggregateType() string { return "Clock" }
func (*Clock) SchemaVersion() int    { return 1 }

// A repository on a SQLite file: what one process saves (with a snapshot
// every 10 events), another that opens the file loads from the snapshot
// plus the events after it.
func Example_repository() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "evsnap-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "evsnap.db")
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[Ticked](reg)
	id := uuid.MustParse("0c10c4e1-0000-4000-8000-000000000001")

	writer, err := sqlitestore.Open(ctx, path, quiet)
	if err != nil {
		log.Fatal(err)
	}
	if err := writer.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	repo, err := eventsource.NewRepository[Clock](writer, reg, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
	if err != nil {
		log.Fatal(err)
	}
	c := repo.New(id)
	for range 12 {
		c.Raise(Ticked{})
		if err := repo.Save(ctx, c); err != nil { // one event per save
			log.Fatal(err)
		}
	}
	_ = repo.Close(ctx)
	_ = writer.Close()

	reader, err := sqlitestore.Open(ctx, path, quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer reader.Close()
	again, err := eventsource.NewRepository[Clock](reader, reg, eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 10}))
	if err != nil {
		log.Fatal(err)
	}
	defer again.Close(ctx)
	loaded, err := again.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fromSnapshot, replayed := loaded.LoadedFromSnapshot()
	fmt.Println("ticks:", loaded.State().Ticks, "version:", loaded.Version())
	fmt.Println("from the snapshot at v10:", fromSnapshot, "events replayed:", replayed)
	// Output:
	// ticks: 12 version: 12
	// from the snapshot at v10: true events replayed: 2
}
