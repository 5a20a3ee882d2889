package benchharness

import (
	"context"
	"go/parser"
	"go/token"
	"strings"
	"testing"
	"time"
)

func TestParsePeerResult(t *testing.T) {
	r, err := parsePeerResult([]byte(`{"load_head_ns":3860,"loads":20000,"load_allocs":10,"load_bytes":584,"save_p50_ns":1430,"saves":45000,"balance":1255,"load_version":100}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.LoadHeadNs != 3860 || r.SaveP50Ns != 1430 || r.LoadAllocs != 10 || r.LoadBytes != 584 {
		t.Errorf("parsed %+v", r)
	}
	for _, c := range []struct{ out, want string }{
		{`not json`, "peer output"},
		{`{"load_head_ns":1,"save_p50_ns":1,"balance":1250,"load_version":100}`, "balance 1250"},
		{`{"load_head_ns":1,"save_p50_ns":1,"balance":1255,"load_version":99}`, "version 99"},
		{`{"load_head_ns":0,"save_p50_ns":1,"balance":1255,"load_version":100}`, "no timings"},
	} {
		if _, err := parsePeerResult([]byte(c.out)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.out, err, c.want)
		}
	}
}

// The peer program is kept as text (it imports the peer, which evsnap's
// module does not require); it must still be a Go main package.
func TestHallgrenSourceParses(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "hallgren.go", hallgrenSource, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name.Name != "main" {
		t.Errorf("package %s, want main", f.Name.Name)
	}
	var imports []string
	for _, i := range f.Imports {
		imports = append(imports, i.Path.Value)
	}
	if !strings.Contains(strings.Join(imports, " "), `"github.com/hallgren/eventsourcing/aggregate"`) {
		t.Errorf("imports %v, want the peer's aggregate package", imports)
	}
	mod := hallgrenModule("/src/peer")
	for _, want := range []string{`github.com/hallgren/eventsourcing => "/src/peer"`, `github.com/hallgren/eventsourcing/core => "/src/peer/core"`} {
		if !strings.Contains(mod, want) {
			t.Errorf("go.mod lacks %q:\n%s", want, mod)
		}
	}
}

func TestBuildHallgrenRejectsAnotherDirectory(t *testing.T) {
	h := &Harness{tmp: t.TempDir()}
	_, _, err := h.buildHallgren(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not a checkout of github.com/hallgren/eventsourcing") {
		t.Errorf("error %v, want one saying the directory is not a checkout", err)
	}
}

func TestPeerTableAndTargets(t *testing.T) {
	r := &Report{Runs: 5, Peers: []PeerRow{
		{Library: "evsnap (memstore)", LoadHead: 1710 * time.Nanosecond, LoadAllocs: 8, LoadBytes: 592, SaveP50: 1320 * time.Nanosecond},
		{Library: hallgrenName + " (memory stores)", LoadHead: 3860 * time.Nanosecond, LoadAllocs: 10, LoadBytes: 584, SaveP50: 1430 * time.Nanosecond, Commit: "3238250"},
	}}
	var b strings.Builder
	r.writePeers(&b)
	for _, want := range []string{"## 9. Beside a peer, in this run", "commit 3238250", "| evsnap / peer", "0.443×", "0.923×"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	ts := r.peerTargets()
	if len(ts) != 3 {
		t.Fatalf("%d targets, want 3", len(ts))
	}
	for _, x := range ts {
		if !x.Met {
			t.Errorf("%s: not met at %s", x.What, x.Measured)
		}
	}
	r.Peers[0].SaveP50 = 1500 * time.Nanosecond
	if ts := r.peerTargets(); ts[2].Met {
		t.Errorf("save 1.50 µs against the peer's 1.43: met")
	}
	if got := r.peerScale(func(p PeerRow) time.Duration { return p.LoadHead }, anchorPeerLoadHead); got != "in the peer step of this run evsnap took 1.71 µs and hallgren/eventsourcing 3.86 µs (2.26× evsnap's), against the peer's anchor of 1.60 µs: see the peer targets" {
		t.Errorf("scale note %q", got)
	}
	if md := r.Markdown("", ""); !strings.Contains(md, "make bench BENCHFLAGS='--peer-hallgren DIR'  # this page") {
		t.Errorf("the page's commands do not say how the peer step ran:\n%s", md[:min(len(md), 1500)])
	}
	if md := (&Report{}).Markdown("", ""); strings.Contains(md, "BENCHFLAGS") || !strings.Contains(md, "make bench        # this page") {
		t.Errorf("a page without the peer step names BENCHFLAGS, or not make bench:\n%s", md[:min(len(md), 1500)])
	}
	if (&Report{}).peerScale(func(p PeerRow) time.Duration { return p.LoadHead }, anchorPeerLoadHead) != "" || len((&Report{}).peerTargets()) != 0 {
		t.Error("a run without the peer step has peer notes or targets")
	}
}
