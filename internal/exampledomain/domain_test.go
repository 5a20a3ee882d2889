package exampledomain

import (
	"errors"
	"strings"
	"testing"

	"github.com/evsnap/evsnap/lib/eventsource"
)

func TestAccountCommands(t *testing.T) {
	var a Account
	if err := a.Deposit(1); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("deposit before open: %v", err)
	}
	if err := a.Open("Ada", -1); !errors.Is(err, ErrInvalidAmount) {
		t.Fatalf("negative opening balance: %v", err)
	}
	if err := a.Open("Ada", 100); err != nil {
		t.Fatal(err)
	}
	if err := a.Open("Ada", 100); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("second open: %v", err)
	}
	if err := a.Withdraw(0); !errors.Is(err, ErrInvalidAmount) {
		t.Fatalf("zero withdrawal: %v", err)
	}
	_ = a.Deposit(10)
	_ = a.Withdraw(30)
	if s := a.State(); s.Balance != 80 || s.TransactionCount != 2 || a.Version() != 3 {
		t.Fatalf("state %+v v%d", s, a.Version())
	}
}

func TestOrderLifecycle(t *testing.T) {
	var o Order
	if err := o.AddItem("x", 1, 1); !errors.Is(err, ErrOrderState) {
		t.Fatalf("item before placing: %v", err)
	}
	_ = o.Place("Grace")
	if err := o.Pay(); !errors.Is(err, ErrOrderState) {
		t.Fatalf("paying an empty order: %v", err)
	}
	_ = o.AddItem("book", 2, 12.5)
	before := o.State().Items
	_ = o.AddItem("book", 1, 12.5)
	if before["book"] != 2 {
		t.Fatal("Apply changed a map held by an earlier state")
	}
	if err := o.Ship("DHL"); !errors.Is(err, ErrOrderState) {
		t.Fatalf("shipping unpaid: %v", err)
	}
	_ = o.Pay()
	_ = o.Ship("DHL")
	if s := o.State(); s.Status != StatusShipped || s.Total != 37.5 || s.Items["book"] != 3 {
		t.Fatalf("state %+v", s)
	}
}

func TestRegistryRoundTrip(t *testing.T) {
	reg := NewRegistry()
	for _, e := range []eventsource.Event{
		AccountOpened{OwnerName: "Ada", InitialBalance: 1}, MoneyDeposited{Amount: 2}, MoneyWithdrawn{Amount: 3},
		OrderPlaced{Customer: "c"}, ItemAdded{SKU: "s", Quantity: 1, Price: 2}, OrderPaid{Amount: 2}, OrderShipped{Carrier: "x"},
	} {
		data, err := reg.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := reg.Decode(e.EventType(), data)
		if err != nil || back != e {
			t.Fatalf("%T round trip: %v, %v", e, back, err)
		}
	}
}

// AccountV2 takes the same commands with the same rules and keeps the
// balance in cents: 0.1 + 0.2 adds up exactly.
func TestAccountV2Commands(t *testing.T) {
	var a AccountV2
	if err := a.Deposit(1); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("deposit before open: %v", err)
	}
	if err := a.Open("Ada", 100); err != nil {
		t.Fatal(err)
	}
	if err := a.Open("Ada", 100); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("second open: %v", err)
	}
	if err := a.Withdraw(-2); !errors.Is(err, ErrInvalidAmount) {
		t.Fatalf("negative withdrawal: %v", err)
	}
	_ = a.Deposit(0.1)
	_ = a.Deposit(0.2)
	_ = a.Withdraw(30)
	if s := a.State(); s.Cents != 7030 || s.Deposits != 2 || s.Withdrawals != 1 || s.Balance() != 70.3 || a.Version() != 4 {
		t.Fatalf("state %+v v%d", s, a.Version())
	}
	if a.AggregateType() != AccountType || a.SchemaVersion() != 2 {
		t.Fatalf("AccountV2 is %s schema %d, want %s schema 2", a.AggregateType(), a.SchemaVersion(), AccountType)
	}
	for _, v := range AccountSchemas {
		if err := CheckAccountSchema(v); err != nil {
			t.Errorf("CheckAccountSchema(%d) = %v", v, err)
		}
	}
	if err := CheckAccountSchema(3); err == nil || !strings.Contains(err.Error(), "3") {
		t.Errorf("CheckAccountSchema(3) = %v, want an error naming it", err)
	}
}
