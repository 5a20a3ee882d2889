// Package exampledomain is the example domain both cmd/ programs use: the
// tutorial's bank Account, and an Order whose payment and shipment are
// snapshot milestones.
package exampledomain

import (
	"errors"
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
)

// Event type names, stored with every event. They never change.
const (
	TypeAccountOpened  = "AccountOpened"
	TypeMoneyDeposited = "MoneyDeposited"
	TypeMoneyWithdrawn = "MoneyWithdrawn"
)

// AccountOpened is the first event of every account.
type AccountOpened struct {
	OwnerName      string  `json:"owner_name"`
	InitialBalance float64 `json:"initial_balance"`
}

// EventType implements eventsource.Event.
func (AccountOpened) EventType() string { return TypeAccountOpened }

// MoneyDeposited records a deposit.
type MoneyDeposited struct {
	Amount float64 `json:"amount"`
}

// EventType implements eventsource.Event.
func (MoneyDeposited) EventType() string { return TypeMoneyDeposited }

// MoneyWithdrawn records a withdrawal.
type MoneyWithdrawn struct {
	Amount float64 `json:"amount"`
}

// EventType implements eventsource.Event.
func (MoneyWithdrawn) EventType() string { return TypeMoneyWithdrawn }

// AccountState is an account's state, as snapshots store it.
type AccountState struct {
	Open             bool    `json:"open"`
	OwnerName        string  `json:"owner_name"`
	Balance          float64 `json:"balance"`
	TransactionCount int     `json:"transaction_count"`
}

// Apply implements eventsource.State.
func (s AccountState) Apply(e eventsource.Event) AccountState {
	switch e := e.(type) {
	case AccountOpened:
		s = AccountState{Open: true, OwnerName: e.OwnerName, Balance: e.InitialBalance}
	case MoneyDeposited:
		s.Balance += e.Amount
		s.TransactionCount++
	case MoneyWithdrawn:
		s.Balance -= e.Amount
		s.TransactionCount++
	}
	return s
}

// AccountType is the Account aggregate's type name.
const AccountType = "Account"

// AccountSchemaVersion is the version of AccountState's encoded form.
const AccountSchemaVersion = 1

// Account is the tutorial's bank account aggregate.
type Account struct {
	eventsource.Root[AccountState]
}

// AggregateType implements eventsource.Aggregate.
func (*Account) AggregateType() string { return AccountType }

// SchemaVersion implements eventsource.Aggregate.
func (*Account) SchemaVersion() int { return AccountSchemaVersion }

// Errors returned by account commands.
var (
	ErrAlreadyOpen   = errors.New("account is already open")
	ErrNotOpen       = errors.New("account is not open")
	ErrInvalidAmount = errors.New("amount must be positive")
)

// Open opens the account.
func (a *Account) Open(owner string, initialBalance float64) error {
	if a.State().Open {
		return ErrAlreadyOpen
	}
	if initialBalance < 0 {
		return fmt.Errorf("initial balance %.2f: %w", initialBalance, ErrInvalidAmount)
	}
	a.Raise(AccountOpened{OwnerName: owner, InitialBalance: initialBalance})
	return nil
}

// Deposit adds money.
func (a *Account) Deposit(amount float64) error {
	if !a.State().Open {
		return ErrNotOpen
	}
	if amount <= 0 {
		return fmt.Errorf("deposit %.2f: %w", amount, ErrInvalidAmount)
	}
	a.Raise(MoneyDeposited{Amount: amount})
	return nil
}

// Withdraw takes money out. The tutorial allows overdrafts; so do we.
func (a *Account) Withdraw(amount float64) error {
	if !a.State().Open {
		return ErrNotOpen
	}
	if amount <= 0 {
		return fmt.Errorf("withdraw %.2f: %w", amount, ErrInvalidAmount)
	}
	a.Raise(MoneyWithdrawn{Amount: amount})
	return nil
}
