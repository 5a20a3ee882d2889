// Package envflag registers the command-line flags of the cmd/ programs
// whose defaults come from EVSNAP_* environment variables. It is the one
// place that decides what a flag's help shows of such a value, for both
// programs:
//
//   - a variable that is not set: the flag's own default, and "(env NAME)";
//   - a variable that is set: "(env NAME is set)" and the value as the
//     default, except that a secret never appears. A URL that can carry
//     a password or token (EVSNAP_POSTGRES_URL, EVSNAP_NATS_URL) is shown
//     with it replaced by xxxxx; a password or token variable
//     (EVSNAP_NATS_PASSWORD, EVSNAP_NATS_TOKEN) is shown only as set.
//
// flag.FlagSet prints defaults in -h and after every flag error, so what
// help shows is what a terminal, a CI log or a bug report gets.
//
// Files named by variables (credentials, NKey seed, TLS key) are paths,
// not secrets, and are shown.
package envflag

import (
	"flag"
	"os"
	"strings"

	"github.com/evsnap/evsnap/internal/natsconn"
	"github.com/evsnap/evsnap/lib/pgstore"
)

// hidden marks a variable whose value help never shows.
func hidden(string) string { return "" }

// shown maps each variable that can hold a secret to what help shows of
// its value; every other variable is shown as it is.
var shown = map[string]func(string) string{
	"EVSNAP_POSTGRES_URL":  pgstore.RedactDSN,
	"EVSNAP_NATS_URL":      natsconn.Redact,
	"EVSNAP_NATS_PASSWORD": hidden,
	"EVSNAP_NATS_TOKEN":    hidden,
}

// Secret reports whether help hides (all or part of) the value of the
// environment variable name.
func Secret(name string) bool {
	_, ok := shown[name]
	return ok
}

// Show returns what help may show of value, the value of the environment
// variable name: the value itself, the URL with its password replaced, or
// "" for a password or token.
func Show(name, value string) string {
	if f, ok := shown[name]; ok {
		return f(value)
	}
	return value
}

// String registers a string flag on fs that defaults to the environment
// variable env when it is set (even to ""), else to def. The usage gains
// "(env ENV)", or "(env ENV is set)" when it is, and help shows the value
// only as Show allows.
func String(fs *flag.FlagSet, p *string, name, env, def, usage string) {
	v, set := os.LookupEnv(env)
	if !set {
		fs.StringVar(p, name, def, usage+" (env "+env+")")
		return
	}
	shownValue := Show(env, v)
	switch {
	case shownValue == "" && v != "":
		usage += " (env " + env + " is set; value hidden)"
	default:
		usage += " (env " + env + " is set)"
	}
	fs.StringVar(p, name, v, usage)
	// flag.PrintDefaults prints DefValue, which StringVar took from v.
	fs.Lookup(name).DefValue = shownValue
}

// ProgramVar reports whether name is a variable the programs read, as
// opposed to one only their tests read (EVSNAP_TEST_*,
// EVSNAP_REQUIRE_SERVICES).
func ProgramVar(name string) bool {
	return strings.HasPrefix(name, "EVSNAP_") && !strings.HasPrefix(name, "EVSNAP_TEST_") && name != "EVSNAP_REQUIRE_SERVICES"
}

// UnsetProgramVars unsets every program variable (see ProgramVar) in this
// process, so that a test of a program sees its defaults whatever the
// caller's shell exports; the tests that want one set it with t.Setenv.
// Call it from TestMain, before m.Run.
func UnsetProgramVars() {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if ProgramVar(name) {
			_ = os.Unsetenv(name)
		}
	}
}
