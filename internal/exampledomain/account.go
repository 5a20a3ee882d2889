// Package exampledomain is the example domain both cmd/ programs use: the
// tutorial's bank Account, and an Order whose payment and shipment are
// snapshot milestones.
//
// The Account has two releases of its state: [Account] (schema version 1,
// the tutorial's, money as a float) and [AccountV2] (schema version 2,
// money in integer cents and deposits and withdrawals counted apart). Both
// are the aggregate type "Account", with the same events and commands, so
// v1 and v2 of an application can run side by side on one store and be
// rolled back one to the other; each loads and writes the snapshots of its
// own schema version (decision 28). The programs run as v2 with
// --account-schema 2 (EVSNAP_ACCOUNT_SCHEMA=2): example-app load and every
// snapshotter command that handles Accounts.
package exampledomain

import (
	"errors"
	"fmt"
	"slices"

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

// AccountSchemas are the Account's schema versions: AccountSchemaVersion
// (Account) and AccountSchemaVersionV2 (AccountV2).
var AccountSchemas = []int{AccountSchemaVersion, AccountSchemaVersionV2}

// CheckAccountSchema reports whether v is one of AccountSchemas, as an
// error that names it and them.
func CheckAccountSchema(v int) error {
	if !slices.Contains(AccountSchemas, v) {
		return fmt.Errorf("account schema version %d: the example Account has schema versions %v", v, AccountSchemas)
	}
	return nil
}

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
	e, err := openEvent(a.State().Open, owner, initialBalance)
	if err != nil {
		return err
	}
	a.Raise(e)
	return nil
}

// Deposit adds money.
func (a *Account) Deposit(amount float64) error {
	e, err := depositEvent(a.State().Open, amount)
	if err != nil {
		return err
	}
	a.Raise(e)
	return nil
}

// Withdraw takes money out. The tutorial allows overdrafts; so do we.
func (a *Account) Withdraw(amount float64) error {
	e, err := withdrawEvent(a.State().Open, amount)
	if err != nil {
		return err
	}
	a.Raise(e)
	return nil
}

// openEvent, depositEvent and withdrawEvent are the account commands'
// rules, shared by every schema version of the account: the event a
// command raises on an account that is open (or not), or why it may not.

func openEvent(open bool, owner string, initialBalance float64) (eventsource.Event, error) {
	if open {
		return nil, ErrAlreadyOpen
	}
	if initialBalance < 0 {
		return nil, fmt.Errorf("initial balance %.2f: %w", initialBalance, ErrInvalidAmount)
	}
	return AccountOpened{OwnerName: owner, InitialBalance: initialBalance}, nil
}

func depositEvent(open bool, amount float64) (eventsource.Event, error) {
	if !open {
		return nil, ErrNotOpen
	}
	if amount <= 0 {
		return nil, fmt.Errorf("deposit %.2f: %w", amount, ErrInvalidAmount)
	}
	return MoneyDeposited{Amount: amount}, nil
}

func withdrawEvent(open bool, amount float64) (eventsource.Event, error) {
	if !open {
		return nil, ErrNotOpen
	}
	if amount <= 0 {
		return nil, fmt.Errorf("withdraw %.2f: %w", amount, ErrInvalidAmount)
	}
	return MoneyWithdrawn{Amount: amount}, nil
}
