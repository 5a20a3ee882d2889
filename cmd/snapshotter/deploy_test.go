package main

// The deployment artefacts (docker-compose.yml, Dockerfile, deploy/) cannot
// be run on machines without a container engine, so these tests read them
// and check every `snapshotter` command line and EVSNAP_* variable in them
// against this binary's real flag sets: a container that would exit with a
// usage error, or a variable nothing reads, fails here instead.
//
// cmd/example-app/deploy_test.go does the same for the example-app
// services.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/evsnap/evsnap/internal/composetest"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/backend"
	"github.com/evsnap/evsnap/internal/snapshottercli"
	"github.com/jackc/pgx/v5/pgconn"
	"gopkg.in/yaml.v3"
)

// repoRoot holds docker-compose.yml, Dockerfile and deploy/, relative to
// this package's directory (where go test runs).
const repoRoot = "../.."

const (
	composeFile    = "docker-compose.yml"
	dockerfileName = "Dockerfile"
	deployDir      = "deploy"
	// composeOnlyDir holds files for docker compose (prometheus.yml), not
	// Kubernetes manifests.
	composeOnlyDir = "deploy/compose"
	// prometheusRulesDir holds Prometheus rule files (and their promtool
	// tests), which Prometheus loads, not Kubernetes.
	prometheusRulesDir = "deploy/prometheus"

	// imageName is the image built from the Dockerfile: `image: evsnap:dev`
	// in compose, `image: evsnap` in the manifests (kustomize's images:
	// rewrites it).
	imageName = "evsnap"

	// wantReplicas is the number of `snapshotter run` replicas in compose
	// and in the Deployment.
	wantReplicas = 3

	// shutdownHeadroom is what a grace period must leave beyond the drain
	// timeout: after draining, `run` stops its HTTP server (up to 5s) and
	// closes the worker and the store.
	shutdownHeadroom = 10 * time.Second
)

// envAllowList names EVSNAP_* variables a subcommand reads that no flag's
// help text names. It is empty: envflag.Parse reads exactly the variables
// the help texts name.
var envAllowList = map[string][]string{}

// envInHelp finds the variable in a flag's help text: "... (env EVSNAP_X)".
var envInHelp = regexp.MustCompile(`\(env (EVSNAP_[A-Z0-9_]+)`)

// subcommandEnv returns the EVSNAP_* variables sub reads.
func subcommandEnv(sub string) map[string]bool {
	set := map[string]bool{}
	fs := commands[sub](newOptions(io.Discard, io.Discard))
	fs.VisitAll(func(f *flag.Flag) {
		for _, m := range envInHelp.FindAllStringSubmatch(f.Usage, -1) {
			set[m[1]] = true
		}
	})
	for _, name := range envAllowList[sub] {
		set[name] = true
	}
	return set
}

// binaryEnv returns the EVSNAP_* variables any subcommand reads.
func binaryEnv() map[string]bool {
	set := map[string]bool{}
	for sub := range commands {
		for name := range subcommandEnv(sub) {
			set[name] = true
		}
	}
	return set
}

// TestDeployEnvNamesMatchTheSource keeps the accepted-variable list honest:
// every "EVSNAP_..." literal in this binary's source is in a help text or
// in envAllowList, and every allow-listed name is still in the source.
func TestDeployEnvNamesMatchTheSource(t *testing.T) {
	known := binaryEnv()
	if len(known) < 10 {
		t.Fatalf("found only %d EVSNAP_* variables in the flag sets' help texts: %v", len(known), slices.Sorted(maps.Keys(known)))
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	literal := regexp.MustCompile(`"(EVSNAP_[A-Z0-9_]+)"`)
	inSource := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range literal.FindAllStringSubmatch(string(b), -1) {
			inSource[m[1]] = true
			if !known[m[1]] {
				t.Errorf("cmd/snapshotter/%s reads %s, which no flag's help text names: name it in the help as \"(env %s)\" or add it to envAllowList in deploy_test.go", f, m[1], m[1])
			}
		}
	}
	for sub, names := range envAllowList {
		for _, name := range names {
			if !inSource[name] {
				t.Errorf("envAllowList[%q] has %s, which cmd/snapshotter no longer reads: remove it", sub, name)
			}
		}
	}
}

// ---------------------------------------------------------------- Dockerfile

// dockerImage is what the Dockerfile's final stage declares.
type dockerImage struct {
	entrypoint, cmd []string
	binaries        map[string]bool // basenames copied to /usr/local/bin
	user            string
	text            string
}

// loadDockerfile reads the final stage's ENTRYPOINT, CMD, USER and the
// binaries it copies into /usr/local/bin.
func loadDockerfile(t testing.TB) dockerImage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, dockerfileName))
	if err != nil {
		t.Fatalf("%s: %v", dockerfileName, err)
	}
	img := dockerImage{binaries: map[string]bool{}, text: string(b)}
	var lines []string
	cur := ""
	for _, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		lines = append(lines, cur+trimmed)
		cur = ""
	}
	final := -1
	for i, l := range lines {
		if strings.EqualFold(strings.Fields(l)[0], "FROM") {
			final = i
		}
	}
	if final < 0 {
		t.Fatalf("%s: no FROM", dockerfileName)
	}
	execForm := func(instr, rest string) []string {
		var v []string
		if err := json.Unmarshal([]byte(rest), &v); err != nil {
			t.Fatalf("%s: %s %s: want the exec (JSON array) form: the runtime image has no shell", dockerfileName, instr, rest)
		}
		return v
	}
	for _, l := range lines[final+1:] {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "ENTRYPOINT":
			img.entrypoint = execForm(instr, rest)
		case "CMD":
			img.cmd = execForm(instr, rest)
		case "USER":
			img.user = rest
		case "COPY":
			var args []string
			for _, f := range strings.Fields(rest) {
				if !strings.HasPrefix(f, "--") {
					args = append(args, f)
				}
			}
			if len(args) >= 2 && strings.TrimSuffix(args[len(args)-1], "/") == "/usr/local/bin" {
				for _, src := range args[:len(args)-1] {
					img.binaries[path.Base(src)] = true
				}
			}
		}
	}
	return img
}

func TestDeployDockerfile(t *testing.T) {
	img := loadDockerfile(t)
	for _, bin := range []string{"snapshotter", "example-app"} {
		if !img.binaries[bin] {
			t.Errorf("%s: the final stage does not copy %s into /usr/local/bin", dockerfileName, bin)
		}
	}
	if len(img.entrypoint) == 0 || path.Base(img.entrypoint[0]) != "snapshotter" {
		t.Errorf("%s: ENTRYPOINT %q: want /usr/local/bin/snapshotter (compose and the manifests rely on it)", dockerfileName, img.entrypoint)
	}
	if len(img.cmd) == 0 {
		t.Errorf("%s: no CMD: want [\"run\"]", dockerfileName)
	} else if _, ok := commands[img.cmd[0]]; !ok {
		t.Errorf("%s: CMD %q: %q is not a snapshotter subcommand (have %s)", dockerfileName, img.cmd, img.cmd[0], strings.Join(slices.Sorted(maps.Keys(commands)), ", "))
	}
	if u, _, _ := strings.Cut(img.user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("%s: the final stage's USER is %q: want a non-root user", dockerfileName, img.user)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath"} {
		if !strings.Contains(img.text, want) {
			t.Errorf("%s: no %s in the build", dockerfileName, want)
		}
	}
}

// ------------------------------------------------------ command lines and env

// invocation is one container that runs a binary of the image, as compose
// or Kubernetes would start it.
type invocation struct {
	where string   // file and service, or file, object and container
	argv  []string // the binary first

	// direct holds the variables set on the container or service itself;
	// imported holds those from envFrom (Kubernetes), by source. Both
	// feed env, the effective environment.
	direct   map[string]bool
	imported map[string]string
	env      map[string]string
}

func (inv *invocation) binary() string {
	if len(inv.argv) == 0 {
		return ""
	}
	return path.Base(inv.argv[0])
}

func (inv *invocation) sub() string {
	if len(inv.argv) < 2 {
		return ""
	}
	return inv.argv[1]
}

// commandLine is how compose and Kubernetes combine the image's ENTRYPOINT
// and CMD with the entrypoint/command (compose) or command/args
// (Kubernetes) overrides: an entrypoint override drops the image's CMD.
func commandLine(img dockerImage, entrypoint, cmd []string, entrypointSet, cmdSet bool) []string {
	argv := slices.Clone(img.entrypoint)
	if entrypointSet {
		argv = slices.Clone(entrypoint)
	}
	switch {
	case cmdSet:
		argv = append(argv, cmd...)
	case !entrypointSet:
		argv = append(argv, img.cmd...)
	}
	return argv
}

// startup builds sub's flag set with env as the process's EVSNAP_*
// environment, parses args and runs the option checks the binary runs
// before any I/O: exactly what a container would hit first.
func startup(t *testing.T, sub string, args []string, env map[string]string) (*options, error) {
	t.Helper()
	for name := range binaryEnv() {
		t.Setenv(name, "") // restored after the test
		os.Unsetenv(name)
	}
	for k, v := range env {
		if strings.HasPrefix(k, "EVSNAP_") {
			t.Setenv(k, v)
		}
	}
	o, err := parse(sub, args, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	if sub == "run" {
		// The worker's own config validation, on an in-memory store.
		b, err := backend.Open(context.Background(), backend.Options{Memory: true, Logger: o.cfg.Logger})
		if err != nil {
			return nil, err
		}
		defer b.Close()
		w, err := snapshottercli.NewWorker(o.cfg, b, nil, nil)
		if err != nil {
			return nil, err
		}
		_ = w.Close(context.Background())
	}
	return o, nil
}

// checkInvocation checks one snapshotter command line and its environment
// and returns the parsed options (nil after a failure).
func checkInvocation(t *testing.T, inv *invocation) *options {
	t.Helper()
	sub := inv.sub()
	if _, ok := commands[sub]; !ok {
		t.Errorf("%s: runs %q: %q is not a snapshotter subcommand (have %s)", inv.where, inv.argv, sub, strings.Join(slices.Sorted(maps.Keys(commands)), ", "))
		return nil
	}
	accepted, all := subcommandEnv(sub), binaryEnv()
	for name := range inv.env {
		if !strings.HasPrefix(name, "EVSNAP_") {
			continue
		}
		switch {
		case inv.direct[name] && !accepted[name]:
			t.Errorf("%s: sets %s, which `snapshotter %s` does not read (it reads %s)", inv.where, name, sub, strings.Join(slices.Sorted(maps.Keys(accepted)), ", "))
		case !inv.direct[name] && !all[name]:
			t.Errorf("%s: gets %s from %s, which snapshotter does not read", inv.where, name, inv.imported[name])
		}
	}
	checkEnvValues(t, inv.where, inv.env)
	o, err := startup(t, sub, inv.argv[2:], inv.env)
	if err != nil {
		t.Errorf("%s: `snapshotter %s` would exit with a usage error: %v", inv.where, strings.Join(inv.argv[1:], " "), err)
		return nil
	}
	return o
}

// checkEnvValues checks the values the flag sets take as plain strings but
// that must parse: PostgreSQL and NATS URLs.
func checkEnvValues(t *testing.T, where string, env map[string]string) {
	t.Helper()
	if dsn := env["EVSNAP_POSTGRES_URL"]; dsn != "" {
		// pgx reads certificate files while parsing; they exist only in
		// the container, so leave them out here.
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			for _, k := range []string{"sslrootcert", "sslcert", "sslkey"} {
				q.Del(k)
			}
			u.RawQuery = q.Encode()
			dsn = u.String()
		}
		if _, err := pgconn.ParseConfig(dsn); err != nil {
			t.Errorf("%s: EVSNAP_POSTGRES_URL does not parse: %v", where, err)
		}
	}
	if urls, ok := env["EVSNAP_NATS_URL"]; ok {
		for _, s := range strings.Split(urls, ",") {
			u, err := url.Parse(strings.TrimSpace(s))
			if err != nil || u.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme) {
				t.Errorf("%s: EVSNAP_NATS_URL %q: %q is not a nats://, tls://, ws:// or wss:// URL", where, urls, s)
			}
		}
	}
}

// metricsPort is the port of a listen address such as ":9090".
func metricsPort(t *testing.T, where, addr string) int {
	t.Helper()
	if addr == "" {
		t.Errorf("%s: the metrics address is empty, so /healthz, /readyz and /metrics are not served", where)
		return 0
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: metrics address %q: %v", where, addr, err)
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Errorf("%s: metrics address %q: the port is not a number", where, addr)
		return 0
	}
	return n
}

// ------------------------------------------------------------------- YAML

// The lenient YAML accessors are internal/composetest's.
var (
	mapOf  = composetest.MapOf
	listOf = composetest.ListOf
	strOf  = composetest.StrOf
	dig    = composetest.Dig
)

// yamlDocs decodes every document of a (multi-document) YAML file.
func yamlDocs(t testing.TB, rel string) []map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if err == io.EOF {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// ---------------------------------------------------------------- compose

var (
	interpolate = composetest.Interpolate
	words       = composetest.Words
)

// composeEnv reads a service's environment: a map or a list of NAME=value.
// A name without a value (taken from the user's environment) maps to "".
func composeEnv(v any) map[string]string {
	env := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			env[k] = strOf(x)
		}
	case []any:
		for _, x := range v {
			k, val, _ := strings.Cut(strOf(x), "=")
			env[k] = val
		}
	}
	return env
}

// composeProject is docker-compose.yml, interpolated.
type composeProject struct {
	services map[string]map[string]any
}

func loadCompose(t testing.TB) composeProject {
	t.Helper()
	docs := yamlDocs(t, composeFile)
	if len(docs) != 1 {
		t.Fatalf("%s: want one YAML document, have %d", composeFile, len(docs))
	}
	doc := interpolate(docs[0]).(map[string]any)
	p := composeProject{services: map[string]map[string]any{}}
	for name, s := range mapOf(doc["services"]) {
		p.services[name] = mapOf(s)
	}
	if len(p.services) == 0 {
		t.Fatalf("%s: no services", composeFile)
	}
	return p
}

// ours reports whether a compose service runs the image the Dockerfile
// builds.
func (p composeProject) ours(svc map[string]any) bool {
	if svc["build"] != nil {
		return true
	}
	repo, _, _ := strings.Cut(path.Base(strOf(svc["image"])), ":")
	return repo == imageName
}

// invocations returns the compose services that run the image.
func (p composeProject) invocations(t *testing.T, img dockerImage) []*invocation {
	t.Helper()
	var out []*invocation
	for _, name := range slices.Sorted(maps.Keys(p.services)) {
		svc := p.services[name]
		if !p.ours(svc) {
			continue
		}
		where := fmt.Sprintf("%s: service %q", composeFile, name)
		var ep, cmd []string
		var err error
		_, epSet := svc["entrypoint"]
		_, cmdSet := svc["command"]
		if epSet {
			if ep, err = words(svc["entrypoint"]); err != nil {
				t.Errorf("%s: entrypoint: %v", where, err)
				continue
			}
		}
		if cmdSet {
			if cmd, err = words(svc["command"]); err != nil {
				t.Errorf("%s: command: %v", where, err)
				continue
			}
		}
		inv := &invocation{where: where, argv: commandLine(img, ep, cmd, epSet, cmdSet), direct: map[string]bool{}, imported: map[string]string{}}
		inv.env = composeEnv(svc["environment"])
		for k := range inv.env {
			inv.direct[k] = true
		}
		if _, ok := svc["env_file"]; ok {
			t.Errorf("%s: env_file is not checked by this test; set the variables in environment:", where)
		}
		if !img.binaries[inv.binary()] {
			t.Errorf("%s: runs %q, which is not a binary of the image (have %s)", where, inv.argv, strings.Join(slices.Sorted(maps.Keys(img.binaries)), ", "))
			continue
		}
		out = append(out, inv)
	}
	return out
}

// composeDuration parses compose durations such as 45s or 1m30s.
func composeDuration(v any) (time.Duration, error) {
	return time.ParseDuration(strOf(v))
}

// serviceName is the compose service an invocation's where names.
func serviceName(where string) string {
	_, after, _ := strings.Cut(where, "service ")
	s, _ := strconv.Unquote(after)
	return s
}

func TestDeployCompose(t *testing.T) {
	img := loadDockerfile(t)
	p := loadCompose(t)

	// Dependencies: every target exists, health conditions have a
	// healthcheck, completion conditions a one-shot target.
	for _, name := range slices.Sorted(maps.Keys(p.services)) {
		deps := p.services[name]["depends_on"]
		for _, dep := range slices.Sorted(maps.Keys(mapOf(deps))) {
			target, ok := p.services[dep]
			if !ok {
				t.Errorf("%s: service %q depends on %q, which does not exist", composeFile, name, dep)
				continue
			}
			switch cond := strOf(dig(deps, dep, "condition")); cond {
			case "service_healthy":
				if target["healthcheck"] == nil {
					t.Errorf("%s: service %q waits for %q to be healthy, but %q has no healthcheck", composeFile, name, dep, dep)
				}
			case "service_completed_successfully":
				if r := strOf(target["restart"]); r != "" && r != "no" {
					t.Errorf("%s: service %q waits for %q to complete, but %q has restart %q", composeFile, name, dep, dep, r)
				}
			}
		}
	}

	var runs, migrates []*invocation
	for _, inv := range p.invocations(t, img) {
		if inv.binary() != "snapshotter" {
			continue // cmd/example-app checks its own
		}
		o := checkInvocation(t, inv)
		switch inv.sub() {
		case "migrate":
			migrates = append(migrates, inv)
		case "run":
			runs = append(runs, inv)
			if o != nil {
				checkComposeRun(t, p, inv, o)
			}
		}
	}
	if len(runs) == 0 {
		t.Errorf("%s: no service runs `snapshotter run`", composeFile)
	}
	if len(migrates) == 0 {
		t.Errorf("%s: no service runs `snapshotter migrate`", composeFile)
	}
	for _, m := range migrates {
		name := serviceName(m.where)
		if r := strOf(p.services[name]["restart"]); r != "" && r != "no" {
			t.Errorf("%s: restart %q: a one-shot migrate wants restart \"no\"", m.where, r)
		}
		// PostgreSQL and the NATS server(s) of its stack: "nats", or the
		// cluster profile's "nats-1" ... "nats-3".
		natsDeps := 0
		for _, dep := range slices.Sorted(maps.Keys(mapOf(dig(p.services[name], "depends_on")))) {
			if dep != "postgres" && dep != "nats" && !strings.HasPrefix(dep, "nats-") {
				continue
			}
			if dep != "postgres" {
				natsDeps++
			}
			if c := strOf(dig(p.services[name], "depends_on", dep, "condition")); c != "service_healthy" {
				t.Errorf("%s: depends on %q with condition %q: want service_healthy", m.where, dep, c)
			}
		}
		if natsDeps == 0 || dig(p.services[name], "depends_on", "postgres") == nil {
			t.Errorf("%s: want it to wait for PostgreSQL and NATS to be healthy", m.where)
		}
	}
	// Every worker starts after a migrate of its stack has completed.
	for _, r := range runs {
		waits := false
		for _, m := range migrates {
			if strOf(dig(p.services[serviceName(r.where)], "depends_on", serviceName(m.where), "condition")) == "service_completed_successfully" {
				waits = true
			}
		}
		if !waits {
			t.Errorf("%s: depends on no migrate with condition service_completed_successfully", r.where)
		}
	}
}

// checkComposeRun checks a `snapshotter run` service: replicas, grace
// period, ports, a healthcheck if any, and Prometheus's scrape config.
func checkComposeRun(t *testing.T, p composeProject, inv *invocation, o *options) {
	t.Helper()
	svc := p.services[serviceName(inv.where)]
	replicas := 1
	if r := dig(svc, "deploy", "replicas"); r != nil {
		n, err := strconv.Atoi(strOf(r))
		if err != nil {
			t.Errorf("%s: deploy.replicas %v is not a number", inv.where, r)
		}
		replicas = n
	}
	if replicas != wantReplicas {
		t.Errorf("%s: deploy.replicas is %d: want %d", inv.where, replicas, wantReplicas)
	}
	grace := 10 * time.Second // compose's default
	if g, ok := svc["stop_grace_period"]; ok {
		d, err := composeDuration(g)
		if err != nil {
			t.Errorf("%s: stop_grace_period %v: %v", inv.where, g, err)
		}
		grace = d
	}
	if grace < o.cfg.Worker.DrainTimeout+shutdownHeadroom {
		t.Errorf("%s: stop_grace_period %v does not exceed the drain timeout %v by %v: docker kills the worker mid-drain", inv.where, grace, o.cfg.Worker.DrainTimeout, shutdownHeadroom)
	}
	if replicas > 1 {
		for _, port := range listOf(svc["ports"]) {
			if s := strOf(port); strings.Contains(s, ":") || dig(port, "published") != nil {
				t.Errorf("%s: publishes host port %q, which %d replicas cannot all bind", inv.where, s, replicas)
			}
		}
	}
	port := metricsPort(t, inv.where, o.cfg.MetricsAddr)
	if hc := svc["healthcheck"]; hc != nil {
		test, _ := words(dig(hc, "test"))
		line := strings.Join(test, " ")
		if !strings.Contains(line, fmt.Sprintf(":%d/readyz", port)) && !strings.Contains(line, fmt.Sprintf(":%d/healthz", port)) {
			t.Errorf("%s: healthcheck %q does not request /readyz or /healthz on port %d", inv.where, line, port)
		}
	}
	checkPrometheus(t, p, serviceName(inv.where), port)
}

// checkPrometheus checks that compose's Prometheus, if there is one,
// finds the service's replicas by DNS on the metrics port.
func checkPrometheus(t *testing.T, p composeProject, service string, port int) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(p.services)) {
		svc := p.services[name]
		if !strings.Contains(strOf(svc["image"]), "prometheus") {
			continue
		}
		config := ""
		for _, v := range listOf(svc["volumes"]) {
			parts := strings.Split(strOf(v), ":")
			if len(parts) >= 2 && parts[1] == "/etc/prometheus/prometheus.yml" {
				config = path.Clean(parts[0])
			}
		}
		where := fmt.Sprintf("%s: service %q", composeFile, name)
		if config == "" {
			t.Errorf("%s: mounts no /etc/prometheus/prometheus.yml", where)
			continue
		}
		docs := yamlDocs(t, config)
		found := false
		for _, job := range listOf(docs[0]["scrape_configs"]) {
			mp := strOf(dig(job, "metrics_path"))
			for _, sd := range listOf(dig(job, "dns_sd_configs")) {
				for _, n := range listOf(dig(sd, "names")) {
					if strOf(n) != service {
						continue
					}
					found = true
					if typ := strOf(dig(sd, "type")); typ != "A" {
						t.Errorf("%s: dns_sd_configs for %q has type %q: want A (one record per replica)", config, service, typ)
					}
					if got := strOf(dig(sd, "port")); got != strconv.Itoa(port) {
						t.Errorf("%s: scrapes %q on port %s: the worker serves /metrics on %d", config, service, got, port)
					}
					if mp != "" && mp != "/metrics" {
						t.Errorf("%s: metrics_path %q: the worker serves /metrics", config, mp)
					}
				}
			}
		}
		if !found {
			t.Errorf("%s: no dns_sd_configs entry scrapes service %q", config, service)
		}
	}
}

// ------------------------------------------------------------- Kubernetes

// k8sObject is one manifest document.
type k8sObject struct {
	file, kind, name string
	doc              map[string]any
}

func (o k8sObject) String() string { return fmt.Sprintf("%s: %s/%s", o.file, o.kind, o.name) }

// loadKustomization reads deploy/kustomization.yaml and every resource it
// lists, and checks that no manifest under deploy/ is left out.
func loadKustomization(t *testing.T) (map[string]any, []k8sObject) {
	t.Helper()
	kfile := path.Join(deployDir, "kustomization.yaml")
	docs := yamlDocs(t, kfile)
	if len(docs) != 1 || strOf(docs[0]["kind"]) != "Kustomization" {
		t.Fatalf("%s: want one Kustomization document", kfile)
	}
	k := docs[0]
	listed := map[string]bool{}
	var objs []k8sObject
	for _, r := range listOf(k["resources"]) {
		rel := path.Join(deployDir, strOf(r))
		listed[rel] = true
		if _, err := os.Stat(filepath.Join(repoRoot, rel)); err != nil {
			t.Errorf("%s: resource %q: %v", kfile, strOf(r), err)
			continue
		}
		for _, d := range yamlDocs(t, rel) {
			o := k8sObject{file: rel, kind: strOf(d["kind"]), name: strOf(dig(d, "metadata", "name")), doc: d}
			if o.kind == "" || strOf(d["apiVersion"]) == "" || o.name == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", rel)
				continue
			}
			objs = append(objs, o)
		}
	}
	err := filepath.WalkDir(filepath.Join(repoRoot, deployDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == composeOnlyDir || rel == prometheusRulesDir {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := path.Ext(rel); (ext == ".yaml" || ext == ".yml") && rel != kfile && !listed[rel] {
			t.Errorf("%s is not in %s's resources, so `kubectl apply -k %s` ignores it", rel, kfile, deployDir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return k, objs
}

// podSpec returns a workload's pod spec, or nil for other kinds.
func podSpec(o k8sObject) map[string]any {
	switch o.kind {
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		return mapOf(dig(o.doc, "spec", "template", "spec"))
	case "CronJob":
		return mapOf(dig(o.doc, "spec", "jobTemplate", "spec", "template", "spec"))
	case "Pod":
		return mapOf(o.doc["spec"])
	}
	return nil
}

func podLabels(o k8sObject) map[string]any {
	if o.kind == "Pod" {
		return mapOf(dig(o.doc, "metadata", "labels"))
	}
	if o.kind == "CronJob" {
		return mapOf(dig(o.doc, "spec", "jobTemplate", "spec", "template", "metadata", "labels"))
	}
	return mapOf(dig(o.doc, "spec", "template", "metadata", "labels"))
}

// selects reports whether a label selector (matchLabels or a plain map)
// matches labels.
func selects(selector, labels map[string]any) bool {
	if ml := mapOf(selector["matchLabels"]); ml != nil {
		selector = ml
	}
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if k == "matchExpressions" {
			continue
		}
		if strOf(labels[k]) != strOf(v) {
			return false
		}
	}
	return true
}

func find(objs []k8sObject, kind, name string) (k8sObject, bool) {
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o, true
		}
	}
	return k8sObject{}, false
}

// configData returns a ConfigMap's data or a Secret's stringData and
// (decoded) data.
func configData(t *testing.T, o k8sObject) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range mapOf(o.doc["data"]) {
		if o.kind == "Secret" {
			b, err := base64.StdEncoding.DecodeString(strOf(v))
			if err != nil {
				t.Errorf("%s: data.%s is not base64: %v", o, k, err)
			}
			out[k] = string(b)
		} else {
			out[k] = strOf(v)
		}
	}
	for k, v := range mapOf(o.doc["stringData"]) {
		out[k] = strOf(v)
	}
	return out
}

// imageRepo is an image reference without registry path and tag.
func imageRepo(image string) string {
	repo, _, _ := strings.Cut(path.Base(image), "@")
	repo, _, _ = strings.Cut(repo, ":")
	return repo
}

// k8sContainer is a container of a workload that runs the image.
type k8sContainer struct {
	obj       k8sObject
	container map[string]any
	inv       *invocation
}

// k8sInvocations returns the containers that run the image, with the
// environment Kubernetes would give them.
func k8sInvocations(t *testing.T, img dockerImage, objs []k8sObject) []k8sContainer {
	t.Helper()
	var out []k8sContainer
	for _, o := range objs {
		spec := podSpec(o)
		if spec == nil {
			continue
		}
		containers := slices.Concat(listOf(spec["initContainers"]), listOf(spec["containers"]))
		for _, c := range containers {
			c := mapOf(c)
			if imageRepo(strOf(c["image"])) != imageName {
				continue
			}
			where := fmt.Sprintf("%s container %q", o, strOf(c["name"]))
			var ep, args []string
			_, epSet := c["command"]
			_, argsSet := c["args"]
			for _, x := range listOf(c["command"]) {
				ep = append(ep, strOf(x))
			}
			for _, x := range listOf(c["args"]) {
				args = append(args, strOf(x))
			}
			inv := &invocation{where: where, argv: commandLine(img, ep, args, epSet, argsSet),
				direct: map[string]bool{}, imported: map[string]string{}, env: map[string]string{}}
			for _, ef := range listOf(c["envFrom"]) {
				kind, ref := "ConfigMap", mapOf(dig(ef, "configMapRef"))
				if ref == nil {
					kind, ref = "Secret", mapOf(dig(ef, "secretRef"))
				}
				src, ok := find(objs, kind, strOf(ref["name"]))
				if !ok {
					if ref["optional"] != true {
						t.Errorf("%s: envFrom %s %q is not in the kustomization (mark it optional: true if it is created elsewhere)", where, kind, strOf(ref["name"]))
					}
					continue
				}
				prefix := strOf(dig(ef, "prefix"))
				for k, v := range configData(t, src) {
					inv.env[prefix+k] = v // a later source wins, as in Kubernetes
					inv.imported[prefix+k] = src.String()
				}
			}
			for _, e := range listOf(c["env"]) {
				name := strOf(dig(e, "name"))
				val := strOf(dig(e, "value"))
				for _, ref := range []struct{ key, kind string }{{"secretKeyRef", "Secret"}, {"configMapKeyRef", "ConfigMap"}} {
					if r := mapOf(dig(e, "valueFrom", ref.key)); r != nil {
						src, ok := find(objs, ref.kind, strOf(r["name"]))
						if !ok && r["optional"] != true {
							t.Errorf("%s: env %s refers to %s %q, which is not in the kustomization", where, name, ref.kind, strOf(r["name"]))
						}
						if ok {
							val = configData(t, src)[strOf(r["key"])]
						}
					}
				}
				inv.env[name] = val
				inv.direct[name] = true
			}
			if !img.binaries[inv.binary()] {
				t.Errorf("%s: runs %q, which is not a binary of the image (have %s)", where, inv.argv, strings.Join(slices.Sorted(maps.Keys(img.binaries)), ", "))
				continue
			}
			out = append(out, k8sContainer{obj: o, container: c, inv: inv})
		}
	}
	return out
}

func TestDeployKubernetes(t *testing.T) {
	img := loadDockerfile(t)
	k, objs := loadKustomization(t)

	hasImage := false
	for _, im := range listOf(k["images"]) {
		if strOf(dig(im, "name")) == imageName {
			hasImage = true
		}
	}
	if !hasImage {
		t.Errorf("%s/kustomization.yaml: no images: entry for %q, so the manifests' image is never set to a real one", deployDir, imageName)
	}

	// Every EVSNAP_* key of a ConfigMap or Secret is one snapshotter reads.
	all := binaryEnv()
	for _, o := range objs {
		if o.kind != "ConfigMap" && o.kind != "Secret" {
			continue
		}
		data := configData(t, o)
		for _, key := range slices.Sorted(maps.Keys(data)) {
			if strings.HasPrefix(key, "EVSNAP_") && !all[key] {
				t.Errorf("%s: %s is not read by snapshotter (it reads %s)", o, key, strings.Join(slices.Sorted(maps.Keys(all)), ", "))
			}
		}
		checkEnvValues(t, o.String(), data)
	}

	var runs, migrates []k8sContainer
	for _, kc := range k8sInvocations(t, img, objs) {
		if kc.inv.binary() != "snapshotter" {
			continue
		}
		opts := checkInvocation(t, kc.inv)
		checkMountedFiles(t, kc)
		checkHardening(t, kc)
		switch kc.inv.sub() {
		case "run":
			runs = append(runs, kc)
			if opts != nil {
				checkK8sRun(t, objs, kc, opts)
			}
		case "migrate":
			migrates = append(migrates, kc)
			if kc.obj.kind != "Job" {
				t.Errorf("%s: runs migrate in a %s: want a Job", kc.inv.where, kc.obj.kind)
			}
		}
	}
	if len(runs) == 0 {
		t.Errorf("%s: no Deployment container runs `snapshotter run`", deployDir)
	}
	if len(migrates) == 0 {
		t.Errorf("%s: no Job runs `snapshotter migrate`", deployDir)
	}
	for _, m := range migrates {
		spec := mapOf(m.obj.doc["spec"])
		if spec["backoffLimit"] == nil || spec["ttlSecondsAfterFinished"] == nil {
			t.Errorf("%s: want backoffLimit and ttlSecondsAfterFinished", m.obj)
		}
	}
}

// checkK8sRun checks the workload running `snapshotter run`: probes on the
// metrics port, grace period, replicas, and the PDB, HPA and Service that
// go with it.
func checkK8sRun(t *testing.T, objs []k8sObject, kc k8sContainer, o *options) {
	t.Helper()
	where := kc.inv.where
	port := metricsPort(t, where, o.cfg.MetricsAddr)
	named := map[string]int{}
	for _, p := range listOf(kc.container["ports"]) {
		n, _ := strconv.Atoi(strOf(dig(p, "containerPort")))
		named[strOf(dig(p, "name"))] = n
		if n == port && strOf(dig(p, "name")) != "metrics" {
			t.Errorf("%s: container port %d should be named \"metrics\"", where, port)
		}
	}
	if _, ok := named["metrics"]; !ok {
		t.Errorf("%s: no container port named \"metrics\"", where)
	} else if named["metrics"] != port {
		t.Errorf("%s: container port \"metrics\" is %d, but the worker listens on %q", where, named["metrics"], o.cfg.MetricsAddr)
	}
	for _, pr := range []struct {
		key   string
		paths []string
		need  bool
	}{
		{"readinessProbe", []string{"/readyz"}, true},
		{"livenessProbe", []string{"/healthz"}, true},
		{"startupProbe", []string{"/healthz", "/readyz"}, false},
	} {
		probe := mapOf(kc.container[pr.key])
		if probe == nil {
			if pr.need {
				t.Errorf("%s: no %s", where, pr.key)
			}
			continue
		}
		get := mapOf(probe["httpGet"])
		if get == nil {
			t.Errorf("%s: %s is not an httpGet probe", where, pr.key)
			continue
		}
		if p := strOf(get["path"]); !slices.Contains(pr.paths, p) {
			t.Errorf("%s: %s requests %q: want %s", where, pr.key, p, strings.Join(pr.paths, " or "))
		}
		pp := strOf(get["port"])
		n, err := strconv.Atoi(pp)
		if err != nil {
			var ok bool
			if n, ok = named[pp]; !ok {
				t.Errorf("%s: %s port %q is not a container port name", where, pr.key, pp)
				continue
			}
		}
		if n != port {
			t.Errorf("%s: %s probes port %s (%d), but the worker serves /healthz and /readyz on %q", where, pr.key, pp, n, o.cfg.MetricsAddr)
		}
	}

	spec := podSpec(kc.obj)
	grace := 30 * time.Second // Kubernetes' default
	if g := spec["terminationGracePeriodSeconds"]; g != nil {
		n, err := strconv.Atoi(strOf(g))
		if err != nil {
			t.Errorf("%s: terminationGracePeriodSeconds %v is not a number", kc.obj, g)
		}
		grace = time.Duration(n) * time.Second
	}
	if grace < o.cfg.Worker.DrainTimeout+shutdownHeadroom {
		t.Errorf("%s: terminationGracePeriodSeconds %v does not exceed the drain timeout %v by %v: pods are killed mid-drain", kc.obj, grace, o.cfg.Worker.DrainTimeout, shutdownHeadroom)
	}

	if kc.obj.kind != "Deployment" {
		t.Errorf("%s: runs `snapshotter run` in a %s: want a Deployment", where, kc.obj.kind)
		return
	}
	if r := strOf(dig(kc.obj.doc, "spec", "replicas")); r != strconv.Itoa(wantReplicas) {
		t.Errorf("%s: spec.replicas is %q: want %d", kc.obj, r, wantReplicas)
	}
	labels := podLabels(kc.obj)
	if !selects(mapOf(dig(kc.obj.doc, "spec", "selector")), labels) {
		t.Errorf("%s: spec.selector does not match the pod template's labels", kc.obj)
	}
	var pdb, hpa, svc bool
	for _, x := range objs {
		switch x.kind {
		case "PodDisruptionBudget":
			if !selects(mapOf(dig(x.doc, "spec", "selector")), labels) {
				continue
			}
			pdb = true
			if mu := dig(x.doc, "spec", "maxUnavailable"); mu != nil && strOf(mu) != "1" {
				t.Errorf("%s: maxUnavailable %v: want 1", x, mu)
			}
			if ma := dig(x.doc, "spec", "minAvailable"); ma != nil {
				if n, err := strconv.Atoi(strOf(ma)); err != nil || n >= wantReplicas {
					t.Errorf("%s: minAvailable %v leaves no room for a voluntary disruption of %d replicas", x, ma, wantReplicas)
				}
			}
		case "HorizontalPodAutoscaler":
			ref := mapOf(dig(x.doc, "spec", "scaleTargetRef"))
			if strOf(ref["kind"]) != kc.obj.kind || strOf(ref["name"]) != kc.obj.name {
				continue
			}
			hpa = true
			minR, _ := strconv.Atoi(strOf(dig(x.doc, "spec", "minReplicas")))
			maxR, _ := strconv.Atoi(strOf(dig(x.doc, "spec", "maxReplicas")))
			if minR < wantReplicas || maxR < minR {
				t.Errorf("%s: minReplicas %d, maxReplicas %d: want %d <= min <= max", x, minR, maxR, wantReplicas)
			}
			if dig(kc.container, "resources", "requests", "cpu") == nil {
				t.Errorf("%s: no CPU request, which a CPU-based HPA (%s) needs", where, x)
			}
		case "Service":
			sel := mapOf(dig(x.doc, "spec", "selector"))
			if !selects(sel, labels) {
				continue
			}
			svc = true
			for _, p := range listOf(dig(x.doc, "spec", "ports")) {
				tp := strOf(dig(p, "targetPort"))
				if n, err := strconv.Atoi(tp); (err == nil && n != port) || (err != nil && named[tp] != port) {
					t.Errorf("%s: targetPort %q is not the metrics port %d", x, tp, port)
				}
			}
		}
	}
	if !pdb {
		t.Errorf("%s: no PodDisruptionBudget selects its pods", kc.obj)
	}
	if !hpa {
		t.Errorf("%s: no HorizontalPodAutoscaler targets it", kc.obj)
	}
	if !svc {
		t.Errorf("%s: no Service selects its pods for the metrics", kc.obj)
	}
}

// fileVars are the variables naming files the process opens.
var fileVars = []string{"EVSNAP_NATS_CREDS", "EVSNAP_NATS_NKEY", "EVSNAP_NATS_CA", "EVSNAP_NATS_CERT", "EVSNAP_NATS_KEY", "EVSNAP_SQLITE_PATH"}

// checkMountedFiles: a file variable with an absolute path points into a
// volume mounted in the container (the root filesystem is the image's).
func checkMountedFiles(t *testing.T, kc k8sContainer) {
	t.Helper()
	for _, name := range fileVars {
		p := kc.inv.env[name]
		if !path.IsAbs(p) {
			continue
		}
		if name == "EVSNAP_SQLITE_PATH" && kc.inv.env["EVSNAP_POSTGRES_URL"] != "" {
			continue // unused with PostgreSQL
		}
		mounted := false
		for _, m := range listOf(kc.container["volumeMounts"]) {
			mp := strOf(dig(m, "mountPath"))
			if p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/") {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: %s=%s is not inside any volumeMount", kc.inv.where, name, p)
		}
	}
}

// checkHardening: non-root, read-only root, no privilege escalation, all
// capabilities dropped, requests and limits set.
func checkHardening(t *testing.T, kc k8sContainer) {
	t.Helper()
	sc := mapOf(kc.container["securityContext"])
	podSC := mapOf(podSpec(kc.obj)["securityContext"])
	if sc["runAsNonRoot"] != true && podSC["runAsNonRoot"] != true {
		t.Errorf("%s: runAsNonRoot is not set", kc.inv.where)
	}
	if sc["readOnlyRootFilesystem"] != true {
		t.Errorf("%s: readOnlyRootFilesystem is not true", kc.inv.where)
	}
	if sc["allowPrivilegeEscalation"] != false {
		t.Errorf("%s: allowPrivilegeEscalation is not false", kc.inv.where)
	}
	if drop := listOf(dig(sc, "capabilities", "drop")); !slices.ContainsFunc(drop, func(v any) bool { return strOf(v) == "ALL" }) {
		t.Errorf("%s: capabilities.drop does not have ALL", kc.inv.where)
	}
	for _, k := range []string{"requests", "limits"} {
		r := mapOf(dig(kc.container, "resources", k))
		if r["cpu"] == nil || r["memory"] == nil {
			t.Errorf("%s: resources.%s needs cpu and memory", kc.inv.where, k)
		}
	}
}
