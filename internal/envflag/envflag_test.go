package envflag

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

// help registers one string flag reading env, parses args and returns
// the flag's value and the flag set's help.
func help(t *testing.T, env, def string, args ...string) (value, text string) {
	t.Helper()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	var p string
	fs.StringVar(&p, "f", def, "what it is (env "+env+")")
	if err := Parse(fs, args); err != nil {
		t.Fatal(err)
	}
	fs.PrintDefaults()
	return p, buf.String()
}

func TestParseTakesTheEnvAndHelpHidesSecrets(t *testing.T) {
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
			v, text := help(t, c.env, c.def)
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
		v, text := help(t, "EVSNAP_LOG_LEVEL", "info")
		if v != "info" || !strings.Contains(text, `(env EVSNAP_LOG_LEVEL) (default "info")`) {
			t.Errorf("value %q, help:\n%s", v, text)
		}
	})
	t.Run("empty is unset", func(t *testing.T) {
		t.Setenv("EVSNAP_LOG_LEVEL", "")
		v, text := help(t, "EVSNAP_LOG_LEVEL", "info")
		if v != "info" || strings.Contains(text, "is set") {
			t.Errorf("value %q, help:\n%s", v, text)
		}
	})
	t.Run("flag wins", func(t *testing.T) {
		t.Setenv("EVSNAP_LOG_LEVEL", "debug")
		if v, _ := help(t, "EVSNAP_LOG_LEVEL", "info", "-f", "warn"); v != "warn" {
			t.Errorf("value %q, want the flag's warn", v)
		}
	})
}

// A flag reads exactly the variable its usage names: another name than
// ff would derive from the flag's, or none at all.
func TestParseReadsOnlyTheNamedVariable(t *testing.T) {
	t.Setenv("EVSNAP_RATE", "1")
	t.Setenv("EVSNAP_REBUILD_RATE", "7.5")
	t.Setenv("EVSNAP_TYPE", "Invoice")
	t.Setenv("EVSNAP_CONCURRENCY", " 16 ")
	t.Setenv("EVSNAP_LINGER", "20ms")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	rate := fs.Float64("rate", 100, "rebuilds per second (env EVSNAP_REBUILD_RATE)")
	typ := fs.String("type", "", "aggregate type")
	conc := fs.Int("concurrency", 4, "workers (env EVSNAP_CONCURRENCY; more is faster)")
	linger := fs.Duration("linger", time.Millisecond, "wait (env EVSNAP_LINGER)")
	if err := Parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *rate != 7.5 || *typ != "" || *conc != 16 || *linger != 20*time.Millisecond {
		t.Fatalf("rate %v, type %q, concurrency %d, linger %v; want 7.5, \"\", 16, 20ms", *rate, *typ, *conc, *linger)
	}
}

// A value the flag rejects is an *Error naming the variable, the value
// and what the flag takes.
func TestParseEnvErrorNamesTheVariable(t *testing.T) {
	for _, c := range []struct{ value, want string }{
		{"lots", `env EVSNAP_CONCURRENCY="lots": want a whole number`},
		{"", ""},
	} {
		t.Setenv("EVSNAP_CONCURRENCY", c.value)
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		n := fs.Int("concurrency", 4, "workers (env EVSNAP_CONCURRENCY)")
		err := Parse(fs, nil)
		if c.want == "" {
			if err != nil || *n != 4 {
				t.Errorf("EVSNAP_CONCURRENCY=%q: %v, value %d; want no error and the default", c.value, err, *n)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || err.Error() != c.want || e.Var != "EVSNAP_CONCURRENCY" {
			t.Errorf("EVSNAP_CONCURRENCY=%q: error %v (%T); want %q", c.value, err, err, c.want)
		}
	}
	// A rejected value given on the command line instead is never read.
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	t.Setenv("EVSNAP_CONCURRENCY", "lots")
	n := fs.Int("concurrency", 4, "workers (env EVSNAP_CONCURRENCY)")
	if err := Parse(fs, []string{"-concurrency", "2"}); err != nil || *n != 2 {
		t.Errorf("flag given: %v, value %d", err, *n)
	}
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
