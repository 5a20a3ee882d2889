package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
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
