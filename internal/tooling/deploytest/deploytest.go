// Package deploytest loads the repository's deployment files the way their
// tools read them, for the deploy tests of cmd/snapshotter and
// cmd/example-app:
//
//   - [Compose]: a compose file through compose-go, the library docker
//     compose is built on (anchors merged, variables interpolated, schema
//     and consistency checked, profiles applied);
//   - [Kustomize]: a kustomization through kustomize's krusty, what
//     `kubectl apply -k` runs, with every resource decoded strictly into
//     its k8s.io/api type;
//   - [Dockerfile]: the final stage of a Dockerfile;
//   - [GrafanaDashboard]: a Grafana dashboard's JSON, decoded strictly
//     into the part of Grafana's model evsnap uses, and its queries;
//   - [PrometheusRules]: a Prometheus rule file, decoded strictly;
//   - [Scrape]: the series a /metrics endpoint exposes (Prometheus's
//     expfmt), and [Known.Check], whether a query's selector names one.
//
// PromQL is not parsed with Prometheus's own parser: the module
// github.com/prometheus/prometheus would come in for it alone.
// [PromQLSelectors] is a small lexer and shape check that finds the
// selectors; the compose smoke (deploy/compose/smoke.sh) has a real
// Prometheus evaluate every dashboard query.
//
// Only tests import it, so none of these libraries is in a binary.
package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Compose loads a compose file as `docker compose --profile P config` does,
// but with no variables from the environment (a compose file must work
// without the user's): interpolated with the defaults it gives, validated
// against the compose schema, and holding the services the profiles enable
// ("*" enables every one). A service that depends on a service no profile
// enables is an error, as it is for docker compose.
func Compose(file string, profiles ...string) (*types.Project, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(context.Background(), details, loader.WithProfiles(profiles))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}

// Service is a compose service that runs the image a Dockerfile builds.
type Service struct {
	Name   string
	Argv   []string          // the command line, the binary first
	Env    map[string]string // a variable without a value reads as ""
	Config types.ServiceConfig
}

// ImageServices returns the services of p that run img, sorted by name:
// those that build it, or whose image's repository (see [ImageRepo]) is
// repo.
func ImageServices(p *types.Project, img Image, repo string) []Service {
	var out []Service
	for _, name := range p.ServiceNames() {
		svc := p.Services[name]
		if svc.Build == nil && ImageRepo(svc.Image) != repo {
			continue
		}
		s := Service{Name: name, Argv: img.Argv(svc.Entrypoint, svc.Command), Env: map[string]string{}, Config: svc}
		for k, v := range svc.Environment {
			s.Env[k] = ptr.Deref(v, "")
		}
		out = append(out, s)
	}
	return out
}

// Image is what a Dockerfile's final stage declares.
type Image struct {
	Entrypoint, Cmd []string        // exec form
	Binaries        map[string]bool // basenames copied into /usr/local/bin
	User            string
	Text            string // the whole Dockerfile
}

// Dockerfile reads a Dockerfile's final stage: ENTRYPOINT and CMD, which
// must be in the exec (JSON array) form, USER, and the binaries COPY puts
// into /usr/local/bin.
func Dockerfile(file string) (Image, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Image{}, err
	}
	img, from := Image{Text: string(b), Binaries: map[string]bool{}}, false
	// One instruction per line, continuation lines joined, comments dropped.
	joined := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, l := range strings.Split(joined, "\n") {
		instr, rest, _ := strings.Cut(strings.TrimSpace(l), " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			img, from = Image{Text: img.Text, Binaries: map[string]bool{}}, true
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				return Image{}, fmt.Errorf("%s: %s %s: want the exec (JSON array) form: the runtime image has no shell", file, instr, rest)
			}
			if strings.EqualFold(instr, "CMD") {
				img.Cmd = v
			} else {
				img.Entrypoint = v
			}
		case "USER":
			img.User = rest
		case "COPY":
			args := slices.DeleteFunc(strings.Fields(rest), func(f string) bool { return strings.HasPrefix(f, "--") })
			if len(args) >= 2 && strings.TrimSuffix(args[len(args)-1], "/") == "/usr/local/bin" {
				for _, src := range args[:len(args)-1] {
					img.Binaries[path.Base(src)] = true
				}
			}
		}
	}
	if !from {
		return Image{}, fmt.Errorf("%s: no FROM", file)
	}
	return img, nil
}

// Argv is the command line a container of img runs, the binary first,
// given compose's entrypoint and command or Kubernetes's command and args
// (nil when not set): an entrypoint override drops the image's CMD.
func (img Image) Argv(entrypoint, cmd []string) []string {
	argv := img.Entrypoint
	if entrypoint != nil {
		argv = entrypoint
	}
	if cmd == nil && entrypoint == nil {
		cmd = img.Cmd
	}
	return slices.Concat(argv, cmd)
}

// ImageRepo is an image reference without registry, path, tag or digest:
// "evsnap" for registry.example.com/evsnap:dev.
func ImageRepo(ref string) string {
	repo, _, _ := strings.Cut(path.Base(ref), "@")
	repo, _, _ = strings.Cut(repo, ":")
	return repo
}

// scheme knows the API groups the manifests may use; an object of any
// other group or version does not decode.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme, autoscalingv2.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// Kustomize builds the kustomization in dir as `kubectl apply -k dir`
// would and decodes each resource into its k8s.io/api type (such as
// *appsv1.Deployment), in the kustomization's order. A field the type does
// not have, or a kind the package's scheme (core, apps, batch, policy,
// autoscaling/v2) does not know, is an error.
func Kustomize(dir string) ([]runtime.Object, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	decode := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		o, _, err := decode.Decode(y, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %s/%s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		objs = append(objs, o)
	}
	return objs, nil
}

// Of returns the objects of type T, such as *corev1.Secret.
func Of[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if x, ok := o.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// ID names an object for messages: "Deployment/evsnap-snapshotter".
func ID(o runtime.Object) string {
	name := "?"
	if a, err := meta.Accessor(o); err == nil {
		name = a.GetName()
	}
	return o.GetObjectKind().GroupVersionKind().Kind + "/" + name
}
