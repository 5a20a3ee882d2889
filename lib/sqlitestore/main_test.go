package sqlitestore_test

import (
	"testing"

	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
)

// TestMain checks that no test leaves a goroutine behind: every pool,
// connection and iterator the store opens must be closed.
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
