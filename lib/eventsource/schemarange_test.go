package eventsource_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/google/uuid"
)

// accountSchemaMax and accountSchemaTooHigh are the Account at the highest
// schema version every store keeps, and one above it.
type accountSchemaMax struct {
	eventsource.Root[exampledomain.AccountState]
}

func (*accountSchemaMax) AggregateType() string { return exampledomain.AccountType }
func (*accountSchemaMax) SchemaVersion() int    { return eventsource.MaxSchemaVersion }

type accountSchemaTooHigh struct {
	eventsource.Root[exampledomain.AccountState]
}

func (*accountSchemaTooHigh) AggregateType() string { return exampledomain.AccountType }
func (*accountSchemaTooHigh) SchemaVersion() int {
	v := eventsource.MaxSchemaVersion // a variable: v+1 wraps where int has 32 bits, and is refused too
	return v + 1
}

func TestNewRepositoryChecksSchemaVersionRange(t *testing.T) {
	h := newHarness(t)
	_, err := eventsource.NewRepository[accountSchemaTooHigh](h.store(), h.reg, h.opts...)
	if !errors.Is(err, eventsource.ErrInvalidArgument) || !errors.Is(err, eventsource.ErrInvalidOption) ||
		!strings.Contains(err.Error(), strconv.Itoa(eventsource.MaxSchemaVersion)) {
		t.Fatalf("NewRepository with SchemaVersion() above MaxSchemaVersion: error %v, want ErrInvalidArgument and ErrInvalidOption naming the range", err)
	}

	r, err := eventsource.NewRepository[accountSchemaMax](h.store(h.snaps), h.reg, append(h.opts,
		eventsource.WithSnapshotPolicy(eventsource.Policy{Threshold: 2}), eventsource.WithSnapshotMode(eventsource.ModeSync))...)
	if err != nil {
		t.Fatalf("NewRepository with SchemaVersion() = MaxSchemaVersion: %v", err)
	}
	defer r.Close(ctx)
	a := r.New(uuid.New())
	a.Raise(exampledomain.MoneyDeposited{Amount: 3})
	a.Raise(exampledomain.MoneyDeposited{Amount: 4})
	if err := r.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := r.Load(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if from, _ := got.LoadedFromSnapshot(); !from || got.State().Balance != 7 {
		t.Fatalf("load at schema MaxSchemaVersion: from snapshot %v, balance %v; want the snapshot, 7", from, got.State().Balance)
	}
}

// accountLongType has an aggregate type one byte longer than stores keep.
type accountLongType struct {
	eventsource.Root[exampledomain.AccountState]
}

func (*accountLongType) AggregateType() string { return strings.Repeat("A", 256) }
func (*accountLongType) SchemaVersion() int    { return 1 }

// An aggregate type no store keeps is refused when the repository is
// made, not at its first load or save.
func TestNewRepositoryChecksAggregateTypeLength(t *testing.T) {
	h := newHarness(t)
	_, err := eventsource.NewRepository[accountLongType](h.store(), h.reg, h.opts...)
	if !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), "longer than 255 bytes") {
		t.Fatalf("NewRepository with a 256-byte AggregateType(): %v, want ErrInvalidOption naming the limit", err)
	}
}
