package main

// docker-compose.yml runs `example-app load` as the traffic generator; no
// container engine runs it here, so this test loads the file as compose
// would (compose-go, through internal/tooling/deploytest) and checks the load
// service's command line and EVSNAP_* variables against this binary.
// cmd/snapshotter/deploy_test.go checks the snapshotter services, the
// Dockerfile and deploy/.
//
// runLoad builds its flag set inline, so the flags are learnt from
// `example-app load -h` and the command line is parsed by the real flag
// set through Main with a trailing -h: Parse stops with flag.ErrHelp (exit
// 0) only when every argument before it parsed. A loadFlags constructor
// would let this test parse directly and also check the values' ranges.

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/evsnap/evsnap/internal/tooling/deploytest"
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

// where names a compose service in messages.
func where(s deploytest.Service) string { return fmt.Sprintf("%s: service %q", composeFile, s.Name) }

// composeServices returns every service of docker-compose.yml (all
// profiles) that runs the image, with the command line it would run.
func composeServices(t *testing.T) []deploytest.Service {
	t.Helper()
	img, err := deploytest.Dockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := deploytest.Compose(filepath.Join(repoRoot, composeFile), "*")
	if err != nil {
		t.Fatal(err)
	}
	return deploytest.ImageServices(p, img, imageName)
}

func TestDeployComposeLoad(t *testing.T) {
	services := composeServices(t)
	loads := 0
	for _, s := range services {
		if len(s.Argv) == 0 || path.Base(s.Argv[0]) != binary {
			continue
		}
		sub := ""
		if len(s.Argv) > 1 {
			sub = s.Argv[1]
		}
		if !slices.Contains(subcommands, sub) {
			t.Errorf("%s: runs %q: %q is not an example-app command (have %s)", where(s), s.Argv, sub, strings.Join(subcommands, ", "))
			continue
		}
		flags, accepted := help(t, sub)
		for _, name := range slices.Sorted(maps.Keys(s.Env)) {
			if strings.HasPrefix(name, "EVSNAP_") && !accepted[name] {
				t.Errorf("%s: sets %s, which `example-app %s` does not read (it reads %s)", where(s), name, sub, strings.Join(slices.Sorted(maps.Keys(accepted)), ", "))
			}
		}
		if sub == "load" {
			loads++
		}
		given, err := parse(t, sub, s.Argv[2:], s.Env, flags)
		if err != nil {
			t.Errorf("%s: `example-app %s` would exit with a usage error: %v", where(s), strings.Join(s.Argv[1:], " "), err)
			continue
		}
		if sub != "load" {
			continue
		}
		// The compose demo runs until stopped.
		if d, err := time.ParseDuration(given["duration"]); err != nil || d != 0 {
			t.Errorf("%s: --duration %q: want 0 (run until stopped; the default is 30s)", where(s), given["duration"])
		}
		if s.Env["EVSNAP_POSTGRES_URL"] == "" || s.Env["EVSNAP_NATS_URL"] == "" {
			t.Errorf("%s: needs EVSNAP_POSTGRES_URL and EVSNAP_NATS_URL, else it uses SQLite and an embedded NATS the workers never see", where(s))
		}
		migrates := slices.ContainsFunc(services, func(dep deploytest.Service) bool {
			return len(dep.Argv) > 1 && path.Base(dep.Argv[0]) == "snapshotter" && dep.Argv[1] == "migrate" &&
				s.Config.DependsOn[dep.Name].Condition == types.ServiceConditionCompletedSuccessfully
		})
		if !migrates {
			t.Errorf("%s: does not depend on the `snapshotter migrate` service with condition service_completed_successfully", where(s))
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
