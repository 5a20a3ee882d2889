package main

// The deployment artefacts (docker-compose.yml, Dockerfile, deploy/) cannot
// be run on machines without a container engine, so these tests load them
// as their tools do (internal/tooling/deploytest: compose-go for compose, kustomize
// for deploy/, typed k8s.io/api objects) and check every `snapshotter`
// command line and EVSNAP_* variable in them against this binary's real
// flag sets: a container that would exit with a usage error, or a variable
// nothing reads, fails here instead.
//
// cmd/example-app/deploy_test.go does the same for the example-app
// services.

import (
	"context"
	"flag"
	"fmt"
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

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/evsnap/evsnap/internal/snapshottercli"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/internal/tooling/deploytest"
	"github.com/jackc/pgx/v5/pgconn"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
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

func loadDockerfile(t testing.TB) deploytest.Image {
	t.Helper()
	img, err := deploytest.Dockerfile(filepath.Join(repoRoot, dockerfileName))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestDeployDockerfile(t *testing.T) {
	img := loadDockerfile(t)
	for _, bin := range []string{"snapshotter", "example-app"} {
		if !img.Binaries[bin] {
			t.Errorf("%s: the final stage does not copy %s into /usr/local/bin", dockerfileName, bin)
		}
	}
	if len(img.Entrypoint) == 0 || path.Base(img.Entrypoint[0]) != "snapshotter" {
		t.Errorf("%s: ENTRYPOINT %q: want /usr/local/bin/snapshotter (compose and the manifests rely on it)", dockerfileName, img.Entrypoint)
	}
	if len(img.Cmd) == 0 {
		t.Errorf("%s: no CMD: want [\"run\"]", dockerfileName)
	} else if _, ok := commands[img.Cmd[0]]; !ok {
		t.Errorf("%s: CMD %q: %q is not a snapshotter subcommand (have %s)", dockerfileName, img.Cmd, img.Cmd[0], strings.Join(slices.Sorted(maps.Keys(commands)), ", "))
	}
	if u, _, _ := strings.Cut(img.User, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("%s: the final stage's USER is %q: want a non-root user", dockerfileName, img.User)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath"} {
		if !strings.Contains(img.Text, want) {
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

// newInvocation returns the invocation of argv, or nil after reporting
// that the image has no such binary.
func newInvocation(t *testing.T, img deploytest.Image, where string, argv []string) *invocation {
	t.Helper()
	inv := &invocation{where: where, argv: argv, direct: map[string]bool{}, imported: map[string]string{}, env: map[string]string{}}
	if !img.Binaries[inv.binary()] {
		t.Errorf("%s: runs %q, which is not a binary of the image (have %s)", where, inv.argv, strings.Join(slices.Sorted(maps.Keys(img.Binaries)), ", "))
		return nil
	}
	return inv
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
		b, err := storeopen.Open(context.Background(), storeopen.Options{Memory: true, Logger: o.cfg.Logger})
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

// ---------------------------------------------------------------- compose

// composeInvocations returns the compose services that run snapshotter,
// by service name.
func composeInvocations(t *testing.T, img deploytest.Image, p *types.Project) map[string]*invocation {
	t.Helper()
	out := map[string]*invocation{}
	for _, svc := range deploytest.ImageServices(p, img, imageName) {
		inv := newInvocation(t, img, fmt.Sprintf("%s: service %q", composeFile, svc.Name), svc.Argv)
		if inv == nil || inv.binary() != "snapshotter" {
			continue // cmd/example-app checks its own
		}
		for k, v := range svc.Env {
			inv.env[k], inv.direct[k] = v, true
		}
		out[svc.Name] = inv
	}
	return out
}

func TestDeployCompose(t *testing.T) {
	img := loadDockerfile(t)
	p, err := deploytest.Compose(filepath.Join(repoRoot, composeFile), "*")
	if err != nil {
		t.Fatal(err)
	}

	// `docker compose up` and `docker compose --profile P up` each load:
	// no service depends on one only another profile enables.
	profiles := map[string]bool{}
	for _, svc := range p.Services {
		for _, pr := range svc.Profiles {
			profiles[pr] = true
		}
	}
	for _, pr := range append([]string{""}, slices.Sorted(maps.Keys(profiles))...) {
		if _, err := deploytest.Compose(filepath.Join(repoRoot, composeFile), pr); err != nil {
			t.Errorf("profile %q: %v", pr, err)
		}
	}

	// Health conditions need a healthcheck, completion conditions a
	// one-shot target.
	for _, name := range p.ServiceNames() {
		deps := p.Services[name].DependsOn
		for _, dep := range slices.Sorted(maps.Keys(deps)) {
			target := p.Services[dep]
			switch deps[dep].Condition {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || target.HealthCheck.Disable {
					t.Errorf("%s: service %q waits for %q to be healthy, but %q has no healthcheck", composeFile, name, dep, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if r := target.Restart; r != "" && r != "no" {
					t.Errorf("%s: service %q waits for %q to complete, but %q has restart %q", composeFile, name, dep, dep, r)
				}
			}
		}
	}

	var runs, migrates []string
	invs := composeInvocations(t, img, p)
	for _, name := range slices.Sorted(maps.Keys(invs)) {
		inv := invs[name]
		o := checkInvocation(t, inv)
		switch inv.sub() {
		case "migrate":
			migrates = append(migrates, name)
		case "run":
			runs = append(runs, name)
			if o != nil {
				checkComposeRun(t, p, name, inv, o)
			}
		}
	}
	if len(runs) == 0 {
		t.Errorf("%s: no service runs `snapshotter run`", composeFile)
	}
	if len(migrates) == 0 {
		t.Errorf("%s: no service runs `snapshotter migrate`", composeFile)
	}
	for _, name := range migrates {
		svc, where := p.Services[name], invs[name].where
		if r := svc.Restart; r != "" && r != "no" {
			t.Errorf("%s: restart %q: a one-shot migrate wants restart \"no\"", where, r)
		}
		// PostgreSQL and the NATS server(s) of its stack: "nats", or the
		// cluster profile's "nats-1" ... "nats-3".
		natsDeps := 0
		for _, dep := range slices.Sorted(maps.Keys(svc.DependsOn)) {
			if dep != "postgres" && dep != "nats" && !strings.HasPrefix(dep, "nats-") {
				continue
			}
			if dep != "postgres" {
				natsDeps++
			}
			if c := svc.DependsOn[dep].Condition; c != types.ServiceConditionHealthy {
				t.Errorf("%s: depends on %q with condition %q: want service_healthy", where, dep, c)
			}
		}
		if _, pg := svc.DependsOn["postgres"]; natsDeps == 0 || !pg {
			t.Errorf("%s: want it to wait for PostgreSQL and NATS to be healthy", where)
		}
	}
	// Every worker starts after a migrate of its stack has completed.
	for _, name := range runs {
		waits := slices.ContainsFunc(migrates, func(m string) bool {
			return p.Services[name].DependsOn[m].Condition == types.ServiceConditionCompletedSuccessfully
		})
		if !waits {
			t.Errorf("%s: depends on no migrate with condition service_completed_successfully", invs[name].where)
		}
	}
}

// checkComposeRun checks a `snapshotter run` service: replicas, grace
// period, ports, a healthcheck if any, and Prometheus's scrape config.
func checkComposeRun(t *testing.T, p *types.Project, name string, inv *invocation, o *options) {
	t.Helper()
	svc := p.Services[name]
	replicas := svc.GetScale()
	if replicas != wantReplicas {
		t.Errorf("%s: deploy.replicas is %d: want %d", inv.where, replicas, wantReplicas)
	}
	grace := 10 * time.Second // compose's default
	if svc.StopGracePeriod != nil {
		grace = time.Duration(*svc.StopGracePeriod)
	}
	if grace < o.cfg.Worker.DrainTimeout+shutdownHeadroom {
		t.Errorf("%s: stop_grace_period %v does not exceed the drain timeout %v by %v: docker kills the worker mid-drain", inv.where, grace, o.cfg.Worker.DrainTimeout, shutdownHeadroom)
	}
	for _, port := range svc.Ports {
		if replicas > 1 && port.Published != "" {
			t.Errorf("%s: publishes host port %s:%d, which %d replicas cannot all bind", inv.where, port.Published, port.Target, replicas)
		}
	}
	port := metricsPort(t, inv.where, o.cfg.MetricsAddr)
	if hc := svc.HealthCheck; hc != nil && !hc.Disable {
		line := strings.Join(hc.Test, " ")
		if !strings.Contains(line, fmt.Sprintf(":%d/readyz", port)) && !strings.Contains(line, fmt.Sprintf(":%d/healthz", port)) {
			t.Errorf("%s: healthcheck %q does not request /readyz or /healthz on port %d", inv.where, line, port)
		}
	}
	checkPrometheus(t, p, name, port)
}

// checkPrometheus checks that compose's Prometheus, if there is one,
// finds the service's replicas by DNS on the metrics port.
func checkPrometheus(t *testing.T, p *types.Project, service string, port int) {
	t.Helper()
	for _, name := range p.ServiceNames() {
		svc := p.Services[name]
		if !strings.Contains(svc.Image, "prometheus") {
			continue
		}
		i := slices.IndexFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/etc/prometheus/prometheus.yml" })
		if i < 0 {
			t.Errorf("%s: service %q mounts no /etc/prometheus/prometheus.yml", composeFile, name)
			continue
		}
		b, err := os.ReadFile(svc.Volumes[i].Source) // absolute: compose-go resolves it
		config, _ := filepath.Rel(p.WorkingDir, svc.Volumes[i].Source)
		var cfg struct {
			ScrapeConfigs []struct {
				MetricsPath  string `json:"metrics_path"`
				DNSSDConfigs []struct {
					Names []string
					Type  string
					Port  int
				} `json:"dns_sd_configs"`
			} `json:"scrape_configs"`
		}
		if err == nil {
			err = yaml.Unmarshal(b, &cfg)
		}
		if err != nil {
			t.Errorf("%s: %v", config, err)
			continue
		}
		found := false
		for _, job := range cfg.ScrapeConfigs {
			for _, sd := range job.DNSSDConfigs {
				if !slices.Contains(sd.Names, service) {
					continue
				}
				found = true
				if sd.Type != "A" {
					t.Errorf("%s: dns_sd_configs for %q has type %q: want A (one record per replica)", config, service, sd.Type)
				}
				if sd.Port != port {
					t.Errorf("%s: scrapes %q on port %d: the worker serves /metrics on %d", config, service, sd.Port, port)
				}
				if mp := job.MetricsPath; mp != "" && mp != "/metrics" {
					t.Errorf("%s: metrics_path %q: the worker serves /metrics", config, mp)
				}
			}
		}
		if !found {
			t.Errorf("%s: no dns_sd_configs entry scrapes service %q", config, service)
		}
	}
}

// ------------------------------------------------------------- Kubernetes

// checkKustomizationResources checks that every manifest under deploy/ is
// among the kustomization's resources: `kubectl apply -k` ignores the rest.
func checkKustomizationResources(t *testing.T) {
	t.Helper()
	kfile := path.Join(deployDir, "kustomization.yaml")
	b, err := os.ReadFile(filepath.Join(repoRoot, kfile))
	if err != nil {
		t.Fatal(err)
	}
	var k kusttypes.Kustomization
	if err := k.Unmarshal(b); err != nil {
		t.Fatalf("%s: %v", kfile, err)
	}
	err = filepath.WalkDir(filepath.Join(repoRoot, deployDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() && (rel == composeOnlyDir || rel == prometheusRulesDir) {
			return filepath.SkipDir
		}
		r, _ := filepath.Rel(deployDir, rel)
		if ext := path.Ext(rel); (ext == ".yaml" || ext == ".yml") && rel != kfile && !slices.Contains(k.Resources, r) {
			t.Errorf("%s is not in %s's resources, so `kubectl apply -k %s` ignores it", rel, kfile, deployDir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// podTemplate returns a workload's pod template, or nil for other kinds.
func podTemplate(o runtime.Object) *corev1.PodTemplateSpec {
	switch o := o.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template
	case *appsv1.StatefulSet:
		return &o.Spec.Template
	case *appsv1.DaemonSet:
		return &o.Spec.Template
	case *appsv1.ReplicaSet:
		return &o.Spec.Template
	case *batchv1.Job:
		return &o.Spec.Template
	case *batchv1.CronJob:
		return &o.Spec.JobTemplate.Spec.Template
	case *corev1.Pod:
		return &corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}
	}
	return nil
}

// envSources returns the data of every ConfigMap and Secret (stringData
// over decoded data, as the API server merges them), by "Kind/name".
func envSources(objs []runtime.Object) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, cm := range deploytest.Of[*corev1.ConfigMap](objs) {
		out["ConfigMap/"+cm.Name] = cm.Data
	}
	for _, s := range deploytest.Of[*corev1.Secret](objs) {
		data := map[string]string{}
		for k, v := range s.Data {
			data[k] = string(v)
		}
		maps.Copy(data, s.StringData)
		out["Secret/"+s.Name] = data
	}
	return out
}

// k8sContainer is a container of a workload that runs snapshotter.
type k8sContainer struct {
	obj runtime.Object
	pod *corev1.PodTemplateSpec
	c   *corev1.Container
	inv *invocation
}

// k8sInvocations returns the containers that run snapshotter, with the
// environment Kubernetes would give them.
func k8sInvocations(t *testing.T, img deploytest.Image, objs []runtime.Object) []k8sContainer {
	t.Helper()
	sources := envSources(objs)
	// data returns a ConfigMap's or Secret's data, reporting it missing
	// unless the reference is optional.
	data := func(where, kind, name string, optional *bool) (map[string]string, bool) {
		d, ok := sources[kind+"/"+name]
		if !ok && !ptr.Deref(optional, false) {
			t.Errorf("%s: refers to %s %q, which is not in the kustomization (mark it optional: true if it is created elsewhere)", where, kind, name)
		}
		return d, ok
	}
	var out []k8sContainer
	for _, o := range objs {
		pod := podTemplate(o)
		if pod == nil {
			continue
		}
		for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
			if deploytest.ImageRepo(c.Image) != imageName {
				continue
			}
			where := fmt.Sprintf("%s: %s container %q", deployDir, deploytest.ID(o), c.Name)
			if c.Image == imageName {
				t.Errorf("%s: image %q: no images: entry in %s/kustomization.yaml sets it to a real one", where, c.Image, deployDir)
			}
			inv := newInvocation(t, img, where, img.Argv(c.Command, c.Args))
			if inv == nil || inv.binary() != "snapshotter" {
				continue
			}
			for _, ef := range c.EnvFrom {
				kind, name, optional := "ConfigMap", "", (*bool)(nil)
				if r := ef.ConfigMapRef; r != nil {
					name, optional = r.Name, r.Optional
				} else if r := ef.SecretRef; r != nil {
					kind, name, optional = "Secret", r.Name, r.Optional
				}
				d, _ := data(where+": envFrom", kind, name, optional)
				for k, v := range d {
					inv.env[ef.Prefix+k] = v // a later source wins, as in Kubernetes
					inv.imported[ef.Prefix+k] = kind + "/" + name
				}
			}
			for _, e := range c.Env {
				val := e.Value
				if vf := e.ValueFrom; vf != nil && vf.SecretKeyRef != nil {
					d, _ := data(where+": env "+e.Name, "Secret", vf.SecretKeyRef.Name, vf.SecretKeyRef.Optional)
					val = d[vf.SecretKeyRef.Key]
				} else if vf != nil && vf.ConfigMapKeyRef != nil {
					d, _ := data(where+": env "+e.Name, "ConfigMap", vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Optional)
					val = d[vf.ConfigMapKeyRef.Key]
				}
				inv.env[e.Name], inv.direct[e.Name] = val, true
			}
			out = append(out, k8sContainer{obj: o, pod: pod, c: &c, inv: inv})
		}
	}
	return out
}

func TestDeployKubernetes(t *testing.T) {
	img := loadDockerfile(t)
	checkKustomizationResources(t)
	objs, err := deploytest.Kustomize(filepath.Join(repoRoot, deployDir))
	if err != nil {
		t.Fatal(err)
	}

	// Every EVSNAP_* key of a ConfigMap or Secret is one snapshotter reads.
	all := binaryEnv()
	sources := envSources(objs)
	for _, id := range slices.Sorted(maps.Keys(sources)) {
		for _, key := range slices.Sorted(maps.Keys(sources[id])) {
			if strings.HasPrefix(key, "EVSNAP_") && !all[key] {
				t.Errorf("%s: %s: %s is not read by snapshotter (it reads %s)", deployDir, id, key, strings.Join(slices.Sorted(maps.Keys(all)), ", "))
			}
		}
		checkEnvValues(t, deployDir+": "+id, sources[id])
	}

	var runs, migrates int
	for _, kc := range k8sInvocations(t, img, objs) {
		opts := checkInvocation(t, kc.inv)
		checkMountedFiles(t, kc)
		checkHardening(t, kc)
		switch kc.inv.sub() {
		case "run":
			runs++
			if opts != nil {
				checkK8sRun(t, objs, kc, opts)
			}
		case "migrate":
			migrates++
			if job, ok := kc.obj.(*batchv1.Job); !ok {
				t.Errorf("%s: runs migrate in a %s: want a Job", kc.inv.where, deploytest.ID(kc.obj))
			} else if job.Spec.BackoffLimit == nil || job.Spec.TTLSecondsAfterFinished == nil {
				t.Errorf("%s: want backoffLimit and ttlSecondsAfterFinished", kc.inv.where)
			}
		}
	}
	if runs == 0 {
		t.Errorf("%s: no Deployment container runs `snapshotter run`", deployDir)
	}
	if migrates == 0 {
		t.Errorf("%s: no Job runs `snapshotter migrate`", deployDir)
	}
}

// selects reports whether a non-empty label selector matches labels.
func selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(podLabels))
}

// portNumber resolves a port given by number or by container port name.
func portNumber(c *corev1.Container, p intstr.IntOrString) (int, bool) {
	if p.Type == intstr.Int {
		return p.IntValue(), true
	}
	i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.StrVal })
	if i < 0 {
		return 0, false
	}
	return int(c.Ports[i].ContainerPort), true
}

// checkK8sRun checks the workload running `snapshotter run`: probes on the
// metrics port, grace period, replicas, and the PDB, HPA and Service that
// go with it.
func checkK8sRun(t *testing.T, objs []runtime.Object, kc k8sContainer, o *options) {
	t.Helper()
	where := kc.inv.where
	port := metricsPort(t, where, o.cfg.MetricsAddr)
	if n, ok := portNumber(kc.c, intstr.FromString("metrics")); !ok {
		t.Errorf("%s: no container port named \"metrics\"", where)
	} else if n != port {
		t.Errorf("%s: container port \"metrics\" is %d, but the worker listens on %q", where, n, o.cfg.MetricsAddr)
	}
	for _, cp := range kc.c.Ports {
		if int(cp.ContainerPort) == port && cp.Name != "metrics" {
			t.Errorf("%s: container port %d should be named \"metrics\"", where, port)
		}
	}
	for _, pr := range []struct {
		key   string
		probe *corev1.Probe
		paths []string
		need  bool
	}{
		{"readinessProbe", kc.c.ReadinessProbe, []string{"/readyz"}, true},
		{"livenessProbe", kc.c.LivenessProbe, []string{"/healthz"}, true},
		{"startupProbe", kc.c.StartupProbe, []string{"/healthz", "/readyz"}, false},
	} {
		switch {
		case pr.probe == nil:
			if pr.need {
				t.Errorf("%s: no %s", where, pr.key)
			}
			continue
		case pr.probe.HTTPGet == nil:
			t.Errorf("%s: %s is not an httpGet probe", where, pr.key)
			continue
		}
		get := pr.probe.HTTPGet
		if !slices.Contains(pr.paths, get.Path) {
			t.Errorf("%s: %s requests %q: want %s", where, pr.key, get.Path, strings.Join(pr.paths, " or "))
		}
		if n, ok := portNumber(kc.c, get.Port); !ok {
			t.Errorf("%s: %s port %q is not a container port name", where, pr.key, get.Port.String())
		} else if n != port {
			t.Errorf("%s: %s probes port %s (%d), but the worker serves /healthz and /readyz on %q", where, pr.key, get.Port.String(), n, o.cfg.MetricsAddr)
		}
	}

	grace := 30 * time.Second // Kubernetes' default
	if g := kc.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace < o.cfg.Worker.DrainTimeout+shutdownHeadroom {
		t.Errorf("%s: terminationGracePeriodSeconds %v does not exceed the drain timeout %v by %v: pods are killed mid-drain", where, grace, o.cfg.Worker.DrainTimeout, shutdownHeadroom)
	}

	d, ok := kc.obj.(*appsv1.Deployment)
	if !ok {
		t.Errorf("%s: runs `snapshotter run` in a %s: want a Deployment", where, deploytest.ID(kc.obj))
		return
	}
	id := deployDir + ": " + deploytest.ID(d)
	if r := d.Spec.Replicas; r == nil || *r != wantReplicas {
		t.Errorf("%s: spec.replicas is %v: want %d", id, ptr.Deref(r, 1), wantReplicas)
	}
	podLabels := kc.pod.Labels
	if !selects(d.Spec.Selector, podLabels) {
		t.Errorf("%s: spec.selector does not match the pod template's labels", id)
	}
	var pdb, hpa, svc bool
	for _, x := range deploytest.Of[*policyv1.PodDisruptionBudget](objs) {
		if !selects(x.Spec.Selector, podLabels) {
			continue
		}
		pdb = true
		if mu := x.Spec.MaxUnavailable; mu != nil && mu.String() != "1" {
			t.Errorf("%s: %s: maxUnavailable %v: want 1", deployDir, deploytest.ID(x), mu.String())
		}
		if ma := x.Spec.MinAvailable; ma != nil && (ma.Type != intstr.Int || ma.IntValue() >= wantReplicas) {
			t.Errorf("%s: %s: minAvailable %v leaves no room for a voluntary disruption of %d replicas", deployDir, deploytest.ID(x), ma.String(), wantReplicas)
		}
	}
	for _, x := range deploytest.Of[*autoscalingv2.HorizontalPodAutoscaler](objs) {
		if ref := x.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != d.Name {
			continue
		}
		hpa = true
		if minR, maxR := ptr.Deref(x.Spec.MinReplicas, 1), x.Spec.MaxReplicas; minR < wantReplicas || maxR < minR {
			t.Errorf("%s: %s: minReplicas %d, maxReplicas %d: want %d <= min <= max", deployDir, deploytest.ID(x), minR, maxR, wantReplicas)
		}
		if kc.c.Resources.Requests.Cpu().IsZero() {
			t.Errorf("%s: no CPU request, which a CPU-based HPA (%s) needs", where, deploytest.ID(x))
		}
	}
	for _, x := range deploytest.Of[*corev1.Service](objs) {
		if !selects(metav1.SetAsLabelSelector(x.Spec.Selector), podLabels) {
			continue
		}
		svc = true
		for _, p := range x.Spec.Ports {
			if n, ok := portNumber(kc.c, p.TargetPort); !ok || n != port {
				t.Errorf("%s: %s: targetPort %q is not the metrics port %d", deployDir, deploytest.ID(x), p.TargetPort.String(), port)
			}
		}
	}
	if !pdb {
		t.Errorf("%s: no PodDisruptionBudget selects its pods", id)
	}
	if !hpa {
		t.Errorf("%s: no HorizontalPodAutoscaler targets it", id)
	}
	if !svc {
		t.Errorf("%s: no Service selects its pods for the metrics", id)
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
		if !path.IsAbs(p) || (name == "EVSNAP_SQLITE_PATH" && kc.inv.env["EVSNAP_POSTGRES_URL"] != "") {
			continue // relative, or SQLite unused with PostgreSQL
		}
		mounted := slices.ContainsFunc(kc.c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
		})
		if !mounted {
			t.Errorf("%s: %s=%s is not inside any volumeMount", kc.inv.where, name, p)
		}
	}
}

// checkHardening: non-root, read-only root, no privilege escalation, all
// capabilities dropped, requests and limits set.
func checkHardening(t *testing.T, kc k8sContainer) {
	t.Helper()
	sc := ptr.Deref(kc.c.SecurityContext, corev1.SecurityContext{})
	podSC := ptr.Deref(kc.pod.Spec.SecurityContext, corev1.PodSecurityContext{})
	if !ptr.Deref(sc.RunAsNonRoot, false) && !ptr.Deref(podSC.RunAsNonRoot, false) {
		t.Errorf("%s: runAsNonRoot is not set", kc.inv.where)
	}
	if !ptr.Deref(sc.ReadOnlyRootFilesystem, false) {
		t.Errorf("%s: readOnlyRootFilesystem is not true", kc.inv.where)
	}
	if ptr.Deref(sc.AllowPrivilegeEscalation, true) {
		t.Errorf("%s: allowPrivilegeEscalation is not false", kc.inv.where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: capabilities.drop does not have ALL", kc.inv.where)
	}
	for k, r := range map[string]corev1.ResourceList{"requests": kc.c.Resources.Requests, "limits": kc.c.Resources.Limits} {
		if r.Cpu().IsZero() || r.Memory().IsZero() {
			t.Errorf("%s: resources.%s needs cpu and memory", kc.inv.where, k)
		}
	}
}
