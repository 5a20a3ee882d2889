package main

// docker-compose.yml runs `example-app load` as the traffic generator; no
// container engine runs it here, so this test reads the file and checks
// the load service's command line and EVSNAP_* variables against this
// binary. cmd/snapshotter/deploy_test.go checks the snapshotter services,
// the Dockerfile and deploy/.
//
// runLoad builds its flag set inline, so the flags are learnt from
// `example-app load -h` and the command line is parsed by the real flag
// set through Main with a trailing -h: Parse stops with flag.ErrHelp (exit
// 0) only when every argument before it parsed. A loadFlags constructor
// would let this test parse directly and also check the values' ranges.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/evsnap/evsnap/internal/composetest"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// repoRoot holds docker-compose.yml and the Dockerfile, relative to this
// package's directory (where go test runs).
const repoRoot = "../.."

const (
	composeFile = "docker-compose.yml"
	// imageName is the image the Dockerfile builds (`image: evsnap:dev`).
	imageName = "evsnap"
	binary    = "example-app"
)

// subcommands are example-app's commands that take flags.
var subcommands = []string{"demo", "load"}

// helpFlag is one flag as `-h` prints it: "  -name type" (no type for a
// boolean flag).
type helpFlag struct {
	name   string
	isBool bool
}

var (
	helpFlagLine = regexp.MustCompile(`^  -([^\s]+)(?: (\S+))?$`)
	envInHelp    = regexp.MustCompile(`\(env (EVSNAP_[A-Z0-9_]+)`)
)

// help runs `example-app <sub> -h` through Main and returns its flags and
// the EVSNAP_* variables its help names.
func help(t *testing.T, sub string) (flags map[string]helpFlag, env map[string]bool) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{sub, "-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("example-app %s -h: exit %d: %s", sub, code, stderr.String())
	}
	flags, env = map[string]helpFlag{}, map[string]bool{}
	for _, line := range strings.Split(stdout.String()+stderr.String(), "\n") {
		if m := helpFlagLine.FindStringSubmatch(line); m != nil {
			flags[m[1]] = helpFlag{name: m[1], isBool: m[2] == ""}
		}
		for _, m := range envInHelp.FindAllStringSubmatch(line, -1) {
			env[m[1]] = true
		}
	}
	if len(flags) == 0 {
		t.Fatalf("example-app %s -h printed no flags:\n%s", sub, stderr.String())
	}
	return flags, env
}

// mirror is a flag set with the same names and kinds as flags, taking any
// value: it finds a flag missing its value before the real flag set could
// read the trailing -h as that value (and run the command for real).
func mirror(flags map[string]helpFlag) *flag.FlagSet {
	fs := flag.NewFlagSet("mirror", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range flags {
		if f.isBool {
			fs.Bool(f.name, false, "")
		} else {
			fs.String(f.name, "", "")
		}
	}
	return fs
}

// parse checks args the way `example-app <sub> args...` parses them and
// returns the values given.
func parse(t *testing.T, sub string, args []string, env map[string]string, flags map[string]helpFlag) (map[string]string, error) {
	t.Helper()
	m := mirror(flags)
	if err := m.Parse(args); err != nil {
		return nil, err
	}
	if m.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", m.Args())
	}
	given := map[string]string{}
	m.Visit(func(f *flag.Flag) { given[f.Name] = f.Value.String() })

	for k, v := range env {
		t.Setenv(k, v)
	}
	t.Setenv("EVSNAP_DATA_DIR", t.TempDir()) // nothing lands in the repo whatever happens
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing should start; if it does, it stops at once
	code := Main(ctx, append(append([]string{sub}, args...), "-h"), &stdout, &stderr)
	if code != 0 {
		return nil, fmt.Errorf("exit %d: %s", code, strings.TrimSpace(stderr.String()))
	}
	header := "Usage: example-app " + sub + " [flags]"
	if sub == "demo" {
		header = "Usage: example-app [demo] [flags]"
	}
	if !strings.Contains(stderr.String(), header) {
		return nil, fmt.Errorf("the trailing -h was not reached: %s", strings.TrimSpace(stderr.String()))
	}
	return given, nil
}

// ------------------------------------------------------------ the files

// entrypoint reads the Dockerfile's final ENTRYPOINT and CMD (exec form).
func entrypoint(t *testing.T) (ep, cmd []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		instr, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			ep, cmd = nil, nil
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &ep); err != nil {
				t.Fatalf("Dockerfile: ENTRYPOINT %s: want the exec form", rest)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(rest), &cmd); err != nil {
				t.Fatalf("Dockerfile: CMD %s: want the exec form", rest)
			}
		}
	}
	return ep, cmd
}

var (
	strOf = composetest.StrOf
	mapOf = composetest.MapOf
	words = composetest.Words
)

// interpolate replaces compose variables with their defaults.
func interpolate(s string) string { return composetest.Interpolate(s).(string) }

// service is one compose service that runs example-app.
type service struct {
	name string
	argv []string // the binary first
	env  map[string]string
	raw  map[string]any
}

func (s service) where() string { return fmt.Sprintf("%s: service %q", composeFile, s.name) }

// composeServices returns every service of docker-compose.yml, with the
// command line the image would run.
func composeServices(t *testing.T) []service {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, composeFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	imgEP, imgCmd := entrypoint(t)
	var out []service
	svcs := mapOf(doc["services"])
	names := make([]string, 0, len(svcs))
	for n := range svcs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		raw := mapOf(svcs[name])
		repo, _, _ := strings.Cut(path.Base(strOf(raw["image"])), ":")
		if raw["build"] == nil && repo != imageName {
			continue
		}
		s := service{name: name, raw: raw, env: map[string]string{}}
		argv := append([]string(nil), imgEP...)
		epV, epSet := raw["entrypoint"]
		cmdV, cmdSet := raw["command"]
		if epSet {
			if argv, err = words(epV); err != nil {
				t.Errorf("%s: entrypoint: %v", s.where(), err)
				continue
			}
		}
		switch {
		case cmdSet:
			c, err := words(cmdV)
			if err != nil {
				if len(argv) > 0 && path.Base(argv[0]) == binary {
					t.Errorf("%s: command: %v", s.where(), err)
				}
				continue // another binary's; cmd/snapshotter's test reports it
			}
			argv = append(argv, c...)
		case !epSet:
			argv = append(argv, imgCmd...)
		}
		for i := range argv {
			argv[i] = interpolate(argv[i])
		}
		s.argv = argv
		switch env := raw["environment"].(type) {
		case map[string]any:
			for k, v := range env {
				s.env[k] = interpolate(strOf(v))
			}
		case []any:
			for _, kv := range env {
				k, v, _ := strings.Cut(strOf(kv), "=")
				s.env[k] = interpolate(v)
			}
		}
		out = append(out, s)
	}
	return out
}

func TestDeployComposeLoad(t *testing.T) {
	services := composeServices(t)
	loads := 0
	for _, s := range services {
		if len(s.argv) == 0 || path.Base(s.argv[0]) != binary {
			continue
		}
		sub := ""
		if len(s.argv) > 1 {
			sub = s.argv[1]
		}
		if !slices.Contains(subcommands, sub) {
			t.Errorf("%s: runs %q: %q is not an example-app command (have %s)", s.where(), s.argv, sub, strings.Join(subcommands, ", "))
			continue
		}
		flags, accepted := help(t, sub)
		for _, name := range slices.Sorted(maps.Keys(s.env)) {
			if strings.HasPrefix(name, "EVSNAP_") && !accepted[name] {
				t.Errorf("%s: sets %s, which `example-app %s` does not read (it reads %s)", s.where(), name, sub, strings.Join(slices.Sorted(maps.Keys(accepted)), ", "))
			}
		}
		if sub == "load" {
			loads++
		}
		given, err := parse(t, sub, s.argv[2:], s.env, flags)
		if err != nil {
			t.Errorf("%s: `example-app %s` would exit with a usage error: %v", s.where(), strings.Join(s.argv[1:], " "), err)
			continue
		}
		if sub != "load" {
			continue
		}
		// The compose demo runs until stopped.
		if d, err := time.ParseDuration(given["duration"]); err != nil || d != 0 {
			t.Errorf("%s: --duration %q: want 0 (run until stopped; the default is 30s)", s.where(), given["duration"])
		}
		if s.env["EVSNAP_POSTGRES_URL"] == "" || s.env["EVSNAP_NATS_URL"] == "" {
			t.Errorf("%s: needs EVSNAP_POSTGRES_URL and EVSNAP_NATS_URL, else it uses SQLite and an embedded NATS the workers never see", s.where())
		}
		deps := mapOf(s.raw["depends_on"])
		migrates := false
		for _, dep := range services {
			if len(dep.argv) > 1 && path.Base(dep.argv[0]) == "snapshotter" && dep.argv[1] == "migrate" {
				if c := strOf(mapOf(deps[dep.name])["condition"]); c == "service_completed_successfully" {
					migrates = true
				}
			}
		}
		if !migrates {
			t.Errorf("%s: does not depend on the `snapshotter migrate` service with condition service_completed_successfully", s.where())
		}
	}
	if loads == 0 {
		t.Errorf("%s: no service runs `example-app load`", composeFile)
	}
}

// TestDeployHelpParsing guards the help-based flag discovery above: if
// the -h format changed, flags would go missing silently.
func TestDeployHelpParsing(t *testing.T) {
	flags, env := help(t, "load")
	for _, want := range []string{"duration", "rate", "aggregates", "nats-url", "postgres-url"} {
		if _, ok := flags[want]; !ok {
			t.Errorf("example-app load -h: flag -%s not found; have %v", want, flags)
		}
	}
	for _, want := range []string{"EVSNAP_POSTGRES_URL", "EVSNAP_NATS_URL"} {
		if !env[want] {
			t.Errorf("example-app load -h: %s not found; have %v", want, slices.Sorted(maps.Keys(env)))
		}
	}
	if _, err := parse(t, "load", []string{"--no-such-flag"}, nil, flags); err == nil {
		t.Error("parse accepted --no-such-flag")
	}
	if _, err := parse(t, "load", []string{"--rate"}, nil, flags); err == nil {
		t.Error("parse accepted --rate without a value")
	}
	if _, err := parse(t, "load", []string{"--duration", "soon"}, nil, flags); err == nil {
		t.Error("parse accepted --duration soon")
	}
	if _, err := parse(t, "load", []string{"--duration", "0", "--rate", "5"}, nil, flags); err != nil {
		t.Errorf("parse rejected a good command line: %v", err)
	}
}
