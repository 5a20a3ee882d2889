package deploytest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// write puts files (name to content) in a new directory and returns it.
func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestComposeIgnoresTheEnvironmentAndAppliesProfiles(t *testing.T) {
	t.Setenv("GREETING", "from the user's shell")
	dir := write(t, map[string]string{"compose.yml": `
name: t
services:
  a:
    image: busybox
    environment: {GREETING: "${GREETING:-hello}"}
  b:
    image: busybox
    profiles: [extra]
    depends_on: [a]
  c:
    image: r.example/mine:dev
    entrypoint: [tool]
    environment: [UNSET]
`})
	file := filepath.Join(dir, "compose.yml")
	p, err := Compose(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.ServiceNames(); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("no profile: services %q, want [a c]", got)
	}
	mine := ImageServices(p, Image{Entrypoint: []string{"one"}, Cmd: []string{"run"}}, "mine")
	if len(mine) != 1 || mine[0].Name != "c" || !slices.Equal(mine[0].Argv, []string{"tool"}) || mine[0].Env["UNSET"] != "" || len(mine[0].Env) != 1 {
		t.Errorf("ImageServices: %+v", mine)
	}
	if got := *p.Services["a"].Environment["GREETING"]; got != "hello" {
		t.Errorf("GREETING = %q: want the file's default, not the environment's value", got)
	}
	if p, err = Compose(file, "*"); err != nil || len(p.Services) != 3 {
		t.Errorf(`profile "*": %v, %v: want every service`, p, err)
	}
	// A default service that needs a profile's service does not load.
	bad := write(t, map[string]string{"compose.yml": `
name: t
services:
  a: {image: busybox, depends_on: [b]}
  b: {image: busybox, profiles: [extra]}
`})
	if _, err := Compose(filepath.Join(bad, "compose.yml")); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("a dependency on a disabled service: err %v", err)
	}
}

func TestDockerfile(t *testing.T) {
	dir := write(t, map[string]string{
		"ok": `FROM golang AS build
COPY --from=x /a/tool /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/tool"]
# the final stage
FROM scratch
COPY --from=build /out/one \
     /out/two /usr/local/bin/
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/one"]
CMD ["run", "--fast"]
`,
		"shell": "FROM scratch\nCMD run --fast\n",
		"empty": "# nothing\n",
	})
	img, err := Dockerfile(filepath.Join(dir, "ok"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Entrypoint, []string{"/usr/local/bin/one"}) || !slices.Equal(img.Cmd, []string{"run", "--fast"}) ||
		img.User != "1000:1000" || len(img.Binaries) != 2 || !img.Binaries["one"] || !img.Binaries["two"] {
		t.Errorf("final stage: %+v", img)
	}
	for _, c := range []struct{ ep, cmd, want []string }{
		{nil, nil, []string{"/usr/local/bin/one", "run", "--fast"}},
		{nil, []string{"stats"}, []string{"/usr/local/bin/one", "stats"}},
		{[]string{"two"}, nil, []string{"two"}},
		{[]string{"two"}, []string{"load"}, []string{"two", "load"}},
	} {
		if got := img.Argv(c.ep, c.cmd); !slices.Equal(got, c.want) {
			t.Errorf("Argv(%q, %q) = %q, want %q", c.ep, c.cmd, got, c.want)
		}
	}
	for _, name := range []string{"shell", "empty", "missing"} {
		if _, err := Dockerfile(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestKustomize(t *testing.T) {
	deployment := `apiVersion: apps/v1
kind: Deployment
metadata: {name: w}
spec:
  selector: {matchLabels: {app: w}}
  template:
    metadata: {labels: {app: w}}
    spec:
      containers: [{name: w, image: img, %s: ["run"]}]
`
	kustomization := "resources: [d.yaml]\nnamespace: ns\nimages: [{name: img, newName: r.example/img, newTag: v1}]\n"
	dir := write(t, map[string]string{"kustomization.yaml": kustomization, "d.yaml": strings.Replace(deployment, "%s", "args", 1)})
	objs, err := Kustomize(dir)
	if err != nil {
		t.Fatal(err)
	}
	ds := Of[*appsv1.Deployment](objs)
	if len(ds) != 1 || ID(ds[0]) != "Deployment/w" || ds[0].Namespace != "ns" || ds[0].Spec.Template.Spec.Containers[0].Image != "r.example/img:v1" {
		t.Fatalf("decoded %#v", objs)
	}
	if ImageRepo("r.example/img:v1") != "img" || ImageRepo("img@sha256:00") != "img" {
		t.Error("ImageRepo")
	}

	// A misspelt field and an unknown kind fail instead of reading as unset.
	typo := write(t, map[string]string{"kustomization.yaml": kustomization, "d.yaml": strings.Replace(deployment, "%s", "argz", 1)})
	if _, err := Kustomize(typo); err == nil || !strings.Contains(err.Error(), "argz") {
		t.Errorf("a misspelt field: err %v", err)
	}
	crd := write(t, map[string]string{"kustomization.yaml": "resources: [m.yaml]\n", "m.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"})
	if _, err := Kustomize(crd); err == nil || !strings.Contains(err.Error(), "Widget") {
		t.Errorf("an unknown kind: err %v", err)
	}
}
