package envflag

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

func help(t *testing.T, name, env, def string) (value, text string) {
	t.Helper()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	var p string
	String(fs, &p, name, env, def, "what it is")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	fs.PrintDefaults()
	return p, buf.String()
}

func TestStringTakesTheEnvAndHidesSecrets(t *testing.T) {
	for _, c := range []struct {
		env, value, def string
		want            []string // in the help
		secret          string   // never in the help
	}{
		{"EVSNAP_LOG_LEVEL", "debug", "info", []string{"(env EVSNAP_LOG_LEVEL is set)", `(default "debug")`}, ""},
		{"EVSNAP_NATS_TOKEN", "s3cret", "", []string{"(env EVSNAP_NATS_TOKEN is set; value hidden)"}, "s3cret"},
		{"EVSNAP_NATS_PASSWORD", "s3cret", "", []string{"(env EVSNAP_NATS_PASSWORD is set; value hidden)"}, "s3cret"},
		{"EVSNAP_POSTGRES_URL", "postgres://u:s3cret@h/db", "", []string{`(default "postgres://u:xxxxx@h/db")`}, "s3cret"},
		{"EVSNAP_POSTGRES_URL", "host=h password=s3cret dbname=d", "", []string{"(env EVSNAP_POSTGRES_URL is set)"}, "s3cret"},
		{"EVSNAP_NATS_URL", "nats://s3cret@h", "", []string{`(default "nats://xxxxx@h")`}, "s3cret"},
	} {
		t.Run(c.env, func(t *testing.T) {
			t.Setenv(c.env, c.value)
			v, text := help(t, "f", c.env, c.def)
			if v != c.value {
				t.Errorf("flag value %q, want the env's %q", v, c.value)
			}
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("help lacks %q:\n%s", w, text)
				}
			}
			if c.secret != "" && strings.Contains(text, c.secret) {
				t.Errorf("help shows the secret:\n%s", text)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		t.Setenv("EVSNAP_LOG_LEVEL", "")
		os.Unsetenv("EVSNAP_LOG_LEVEL")
		v, text := help(t, "f", "EVSNAP_LOG_LEVEL", "info")
		if v != "info" || !strings.Contains(text, `(env EVSNAP_LOG_LEVEL) (default "info")`) {
			t.Errorf("value %q, help:\n%s", v, text)
		}
	})
}

func TestUnsetProgramVars(t *testing.T) {
	t.Setenv("EVSNAP_POSTGRES_URL", "postgres://x")
	t.Setenv("EVSNAP_TEST_NATS_URL", "nats://keep")
	t.Setenv("EVSNAP_REQUIRE_SERVICES", "1")
	UnsetProgramVars()
	if _, set := os.LookupEnv("EVSNAP_POSTGRES_URL"); set {
		t.Error("EVSNAP_POSTGRES_URL is still set")
	}
	if os.Getenv("EVSNAP_TEST_NATS_URL") != "nats://keep" || os.Getenv("EVSNAP_REQUIRE_SERVICES") != "1" {
		t.Error("a test variable was unset")
	}
}
