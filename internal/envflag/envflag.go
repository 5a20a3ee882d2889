// Package envflag parses the command lines of the cmd/ programs, whose
// flags can also be set by EVSNAP_* environment variables, with
// github.com/peterbourgon/ff/v3.
//
// A flag reads a variable when its usage names one, "(env EVSNAP_X)"
// (or "(env EVSNAP_X; ...)"): the help that tells a user about the
// variable is the declaration, so the two cannot disagree. [Parse] sets
// the flags from the command line and then, through ff, every flag the
// command line did not set from its variable when that is set and not
// empty. Flags win; a flag whose usage names no variable reads none.
//
// What ff does not do, this package adds:
//
//   - explicit names. ff derives a variable from the flag's name
//     (--concurrency, EVSNAP_CONCURRENCY) and reads one for every flag of
//     the set. Here a flag may read another name (rebuild's --rate reads
//     EVSNAP_REBUILD_RATE) or none (--type), so ff is handed a flag set
//     of the bound flags only, named after their variables.
//   - help that says which variables are set, without secrets: "(env
//     NAME is set)" and the value as the default, except that a URL that
//     can carry a password or token (EVSNAP_POSTGRES_URL, EVSNAP_NATS_URL)
//     is shown with it replaced by xxxxx, and a password or token
//     variable (EVSNAP_NATS_PASSWORD, EVSNAP_NATS_TOKEN) is shown only as
//     "(env NAME is set; value hidden)". flag.FlagSet prints defaults in
//     -h and after every flag error, so what help shows is what a
//     terminal, a CI log or a bug report gets.
//   - an error that names the variable, its value and what was wanted
//     (an [*Error]), where ff says "parse error"; numbers and durations
//     are read with surrounding spaces trimmed.
//
// Files named by variables (credentials, NKey seed, TLS key) are paths,
// not secrets, and are shown.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/peterbourgon/ff/v3"
)

// Prefix starts the name of every variable the programs read.
const Prefix = "EVSNAP"

// hidden marks a variable whose value help never shows.
func hidden(string) string { return "" }

// shown maps each variable that can hold a secret to what help shows of
// its value; every other variable is shown as it is.
var shown = map[string]func(string) string{
	"EVSNAP_POSTGRES_URL":  pgstore.RedactDSN,
	"EVSNAP_NATS_URL":      natsconnect.Redact,
	"EVSNAP_NATS_PASSWORD": hidden,
	"EVSNAP_NATS_TOKEN":    hidden,
}

// Show returns what help and errors may show of value, the value of the
// environment variable name: the value itself, the URL with its password
// replaced, or "" for a password or token.
func Show(name, value string) string {
	if f, ok := shown[name]; ok {
		return f(value)
	}
	return value
}

// varInUsage finds the variable a flag's usage names.
// Parse's help adds " is set" after the name.
var varInUsage = regexp.MustCompile(`\(env (` + Prefix + `_[A-Z0-9_]+)[;) ]`)

// Var returns the environment variable that sets f, the one its usage
// names as "(env NAME)" or "(env NAME; ...)", or "" for none.
func Var(f *flag.Flag) string {
	if m := varInUsage.FindStringSubmatch(f.Usage); m != nil {
		return m[1]
	}
	return ""
}

// Parse parses args into fs and then sets every flag that args did not
// set and whose usage names a variable (see [Var]) from that variable,
// when it is set to something other than "". Help (-h, or a flag error)
// shows which variables are set, with secrets hidden. A variable whose
// value the flag rejects is an [*Error]; an error of args is the
// flag package's (flag.ErrHelp for -h).
func Parse(fs *flag.FlagSet, args []string) error {
	describeEnv(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	// ff names a flag's variable Prefix_NAME for a flag called name: give
	// it the bound flags under their variables' names.
	env := flag.NewFlagSet(fs.Name()+" (environment)", flag.ContinueOnError)
	fs.VisitAll(func(f *flag.Flag) {
		if name := Var(f); name != "" && !given[f.Name] {
			env.Var(&fromEnv{f: f, name: name}, strings.TrimPrefix(name, Prefix+"_"), f.Usage)
		}
	})
	err := ff.Parse(env, nil, ff.WithEnvVarPrefix(Prefix))
	if e := (*Error)(nil); errors.As(err, &e) {
		return e
	}
	return err
}

// describeEnv rewrites the help of every flag whose variable is set: its
// usage says so and its default shows the value, as Show allows.
func describeEnv(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name := Var(f)
		v := os.Getenv(name)
		if name == "" || v == "" {
			return
		}
		f.DefValue = Show(name, v)
		set := "(env " + name + " is set"
		if f.DefValue == "" {
			set += "; value hidden"
		}
		f.Usage = strings.Replace(f.Usage, "(env "+name, set, 1)
	})
}

// fromEnv sets a flag from its variable, so that an error names the
// variable rather than the name ff was given.
type fromEnv struct {
	f    *flag.Flag
	name string
}

func (e *fromEnv) String() string { return e.f.Value.String() }

func (e *fromEnv) Set(s string) error {
	kind, _ := flag.UnquoteUsage(e.f)
	if kind != "string" && kind != "value" {
		s = strings.TrimSpace(s)
	}
	if err := e.f.Value.Set(s); err != nil {
		return &Error{Var: e.name, Value: Show(e.name, s), Want: wants[kind], Err: err}
	}
	return nil
}

// wants says what a flag of each kind (as flag.UnquoteUsage names it)
// takes.
var wants = map[string]string{
	"":         "true or false",
	"int":      "a whole number",
	"uint":     "a whole number",
	"float":    "a number",
	"duration": "a duration such as 30s",
}

// Error is an environment variable whose value its flag rejects.
type Error struct {
	Var   string // the variable
	Value string // its value, as Show allows
	Want  string // what the flag takes, when its kind says (else Err does)
	Err   error  // the flag's own error
}

func (e *Error) Error() string {
	if e.Want != "" {
		return fmt.Sprintf("env %s=%q: want %s", e.Var, e.Value, e.Want)
	}
	return fmt.Sprintf("env %s=%q: %v", e.Var, e.Value, e.Err)
}

// Unwrap returns the flag's error.
func (e *Error) Unwrap() error { return e.Err }

// ProgramVar reports whether name is a variable the programs read, as
// opposed to one only their tests read (EVSNAP_TEST_*,
// EVSNAP_REQUIRE_SERVICES).
func ProgramVar(name string) bool {
	return strings.HasPrefix(name, Prefix+"_") && !strings.HasPrefix(name, Prefix+"_TEST_") && name != "EVSNAP_REQUIRE_SERVICES"
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
