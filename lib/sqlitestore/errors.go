package sqlitestore

import (
	"errors"
	"fmt"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrNotMigrated: the store's tables do not exist in the database. Call
	// [Store.Migrate] (or run `snapshotter migrate`) once before using the
	// store; nothing is created implicitly.
	ErrNotMigrated = errors.New("sqlitestore: tables missing (call Store.Migrate once before using the store)")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("sqlitestore: store closed")
)

// sqliteCode returns the extended result code of a driver error, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUniqueViolation(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isCheckViolation(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_CHECK
}

// mapErr turns driver errors a caller can act on into clear ones; it keeps
// the driver's error in the chain.
func (s *Store) mapErr(err error) error {
	var m *mappedError
	if err == nil || errors.As(err, &m) {
		return err
	}
	code := sqliteCode(err)
	switch {
	case code&0xff == sqlite3.SQLITE_ERROR && strings.Contains(err.Error(), "no such table"):
		return &mappedError{fmt.Errorf("%w: %w", ErrNotMigrated, err)}
	case code&0xff == sqlite3.SQLITE_BUSY && s.ownsDB:
		return &mappedError{fmt.Errorf("database %s stayed locked by another connection for longer than the busy timeout (%v): %w", s.name(), s.cfg.busyTimeout, err)}
	case code&0xff == sqlite3.SQLITE_BUSY:
		return &mappedError{fmt.Errorf("database locked by another connection (set a busy timeout and _txlock=immediate in the DSN of the *sql.DB given to New): %w", err)}
	}
	return err
}

// mappedError marks an error mapErr already explained.
type mappedError struct{ err error }

// Error returns the explained error's message.
func (e *mappedError) Error() string { return e.err.Error() }

// Unwrap returns the explained error.
func (e *mappedError) Unwrap() error { return e.err }
