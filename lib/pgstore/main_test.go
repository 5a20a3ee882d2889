package pgstore_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: every pool,
// connection and iterator the store opens must be closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
