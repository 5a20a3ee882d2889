package exampledomain

import (
	"math"

	"github.com/evsnap/evsnap/lib/eventsource"
)

// AccountSchemaVersionV2 is the version of AccountStateV2's encoded form.
const AccountSchemaVersionV2 = 2

// AccountStateV2 is an account's state as the second release keeps it
// (schema version 2): the balance in integer cents, so that it adds up
// exactly, and deposits and withdrawals counted apart. Its encoded form
// is not AccountState's, so neither release can read the other's
// snapshots: each keeps its own.
type AccountStateV2 struct {
	Open        bool   `json:"open"`
	Owner       string `json:"owner"`
	Cents       int64  `json:"balance_cents"`
	Deposits    int    `json:"deposits"`
	Withdrawals int    `json:"withdrawals"`
}

// Apply implements eventsource.State.
func (s AccountStateV2) Apply(e eventsource.Event) AccountStateV2 {
	switch e := e.(type) {
	case AccountOpened:
		s = AccountStateV2{Open: true, Owner: e.OwnerName, Cents: cents(e.InitialBalance)}
	case MoneyDeposited:
		s.Cents += cents(e.Amount)
		s.Deposits++
	case MoneyWithdrawn:
		s.Cents -= cents(e.Amount)
		s.Withdrawals++
	}
	return s
}

// Balance is the balance in currency units, as AccountState.Balance has
// it (up to float rounding, which cents avoid).
func (s AccountStateV2) Balance() float64 { return float64(s.Cents) / 100 }

// cents converts an amount in currency units to whole cents.
func cents(amount float64) int64 { return int64(math.Round(amount * 100)) }

// AccountV2 is the Account of the second release: the same aggregate type,
// events and commands as [Account], state [AccountStateV2].
type AccountV2 struct {
	eventsource.Root[AccountStateV2]
}

// AggregateType implements eventsource.Aggregate.
func (*AccountV2) AggregateType() string { return AccountType }

// SchemaVersion implements eventsource.Aggregate.
func (*AccountV2) SchemaVersion() int { return AccountSchemaVersionV2 }

// Open opens the account.
func (a *AccountV2) Open(owner string, initialBalance float64) error {
	e, err := openEvent(a.State().Open, owner, initialBalance)
	if err != nil {
		return err
	}
	a.Raise(e)
	return nil
}

// Deposit adds money.
func (a *AccountV2) Deposit(amount float64) error {
	e, err := depositEvent(a.State().Open, amount)
	if err != nil {
		return err
	}
	a.Raise(e)
	return nil
}

// Withdraw takes money out (overdrafts allowed, as in [Account]).
func (a *AccountV2) Withdraw(amount float64) error {
	e, err := withdrawEvent(a.State().Open, amount)
	if err != nil {
		return err
	}
	a.Raise(e)
	return nil
}
