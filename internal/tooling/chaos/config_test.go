package chaos

import (
	"strings"
	"testing"
	"time"
)

// The suite runs on a PostgreSQL cluster of its own unless --postgres-url
// says otherwise: EVSNAP_TEST_POSTGRES_URL, which CI sets for the tests,
// must not turn the PostgreSQL restarts and crashes off.
func TestDefaultConfigUsesAnOwnCluster(t *testing.T) {
	t.Setenv("EVSNAP_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	for _, short := range []bool{false, true} {
		c := DefaultConfig(short)
		c.RepoDir = "."
		if c.PostgresURL != "" || c.PGSkipReason() != "" {
			t.Errorf("short %v: PostgresURL %q, skip reason %q; want the own cluster", short, c.PostgresURL, c.PGSkipReason())
		}
		if err := c.Validate(); err != nil {
			t.Errorf("short %v: %v", short, err)
		}
	}
}

func TestConfigValidatePostgres(t *testing.T) {
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"pg-bin with an external server": {func(c *Config) { c.PostgresURL, c.PGBinDir = "postgres://x/y", "/usr/lib/postgresql/15/bin" }, "--pg-bin"},
		"negative down time":             {func(c *Config) { c.MaxPGDown = -time.Second }, "down time"},
		"no reconnect timeout":           {func(c *Config) { c.ReconnectTimeout = 0 }, "reconnect timeout"},
	} {
		c := DefaultConfig(true)
		c.RepoDir = "."
		tc.mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}
