package chaos

import (
	"testing"

	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
