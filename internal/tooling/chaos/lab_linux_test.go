package chaos

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCutRules(t *testing.T) {
	got := cutRules([]string{"10.233.7.2"}, []string{"10.233.7.6", "10.233.7.200"})
	want := []string{"from 10.233.7.2 to 10.233.7.6", "from 10.233.7.6 to 10.233.7.2", "from 10.233.7.2 to 10.233.7.200", "from 10.233.7.200 to 10.233.7.2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("cutRules = %q, want %q", got, want)
	}
	if got := isolateRules([]string{"10.233.7.2"}); strings.Join(got, "|") != "from 10.233.7.2|to 10.233.7.2" {
		t.Errorf("isolateRules = %q", got)
	}
	if got := strings.Join(ruleArgs("del", "from 10.233.7.2 to 10.233.7.6"), " "); got != "rule del from 10.233.7.2 to 10.233.7.6 blackhole pref "+pairRulePref {
		t.Errorf("ruleArgs = %q", got)
	}
	if got := strings.Join(ruleArgs("add", "to 10.233.7.2"), " "); got != "rule add to 10.233.7.2 blackhole pref "+oneRulePref {
		t.Errorf("ruleArgs = %q", got)
	}
}

// labRulesIn reads back, from ip rule show, the rules cut adds, in the
// form cut takes them, and only the lab's.
func TestLabRulesIn(t *testing.T) {
	out := "0:\tfrom all lookup local\n" +
		oneRulePref + ":\tfrom all to 10.233.7.2 blackhole\n" +
		oneRulePref + ":\tfrom 10.233.7.2 blackhole\n" +
		pairRulePref + ":\tfrom 10.233.7.2 to 10.233.7.6 blackhole\n" +
		pairRulePref + ":\tfrom 10.233.8.2 to 10.233.8.6 blackhole\n" +
		"1034:\tfrom 10.233.7.9 blackhole\n" +
		"32766:\tfrom all lookup main\n"
	got := labRulesIn(out, "10.233.7.")
	want := []string{"to 10.233.7.2", "from 10.233.7.2", "from 10.233.7.2 to 10.233.7.6"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("labRulesIn = %q, want %q", got, want)
	}
}

func TestPickSubnet(t *testing.T) {
	used := subnetsIn("inet 10.233.4.1/30 scope global evx\n10.233.5.0/24 via 10.233.4.2 dev evx\n1033: from 10.233.6.2 blackhole\ninet 10.2.33.1/8 brd 110.233.9.1")
	for _, n := range []int{4, 5, 6} {
		if !used[n] {
			t.Errorf("subnet %d in use but not found: %v", n, used)
		}
	}
	if len(used) != 3 {
		t.Errorf("found %v, want 4, 5 and 6", used)
	}
	all := map[int]bool{}
	for i := range 256 {
		all[i] = i != 77
	}
	if n, err := pickSubnet(all); err != nil || n != 77 {
		t.Errorf("pickSubnet = %d, %v; want the one free, 77", n, err)
	}
	all[77] = true
	if _, err := pickSubnet(all); err == nil {
		t.Error("pickSubnet found a /24 when all were in use")
	}
}

// A cut drops the packets between its two sides in silence: a connect
// times out (no reset, no ICMP unreachable), a connection stays open and
// carries on after the heal, and the rest of the lab is not cut. Removing
// the lab leaves no namespace or rule behind.
func TestLabCutIsSilentPairwiseAndHeals(t *testing.T) {
	if why := labSkipReason(); why != "" {
		if os.Getenv("EVSNAP_REQUIRE_SERVICES") != "" {
			t.Fatalf("the lab needs root and ip: %s", why)
		}
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := newLab(ctx, []string{"a", "b"}, map[string]int{"b": 1})
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	defer func() {
		if !removed {
			l.remove()
		}
	}()
	a, b := l.node("a"), l.node("b")
	cutAddr, freeAddr := b.ip, b.extra[0]

	var lns []net.Listener
	inNetns(t, b.name, func() {
		for _, addr := range []string{cutAddr, freeAddr} {
			ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
			if err != nil {
				t.Fatal(err)
			}
			lns = append(lns, ln)
		}
	})
	srv := &echoServer{}
	for _, ln := range lns {
		srv.serve(ln)
	}
	defer srv.close()
	dial := func(ln net.Listener, timeout time.Duration) (c net.Conn, err error) {
		inNetns(t, a.name, func() { c, err = net.DialTimeout("tcp", ln.Addr().String(), timeout) })
		return c, err
	}
	roundTrip := func(c net.Conn, timeout time.Duration) error {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ping\n" {
			err = errors.New("echoed " + line)
		}
		return err
	}

	open, err := dial(lns[0], 5*time.Second)
	if err != nil {
		t.Fatalf("before the cut: %v", err)
	}
	defer open.Close()
	if err := roundTrip(open, 5*time.Second); err != nil {
		t.Fatalf("before the cut: %v", err)
	}

	heal, err := l.cut(ctx, cutRules(a.addrs(), []string{cutAddr}))
	if err != nil {
		t.Fatal(err)
	}
	// The same rule held by two cuts stays until both heal.
	heal2, err := l.cut(ctx, cutRules(a.addrs(), []string{cutAddr}))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := dial(lns[0], time.Second); err == nil {
		c.Close()
		t.Fatal("connected across the cut")
	} else if !isTimeout(err) {
		t.Fatalf("connect across the cut: %v; want a timeout (dropped in silence), not a refusal or an unreachable", err)
	}
	if err := roundTrip(open, 700*time.Millisecond); !isTimeout(err) {
		t.Fatalf("open connection across the cut: %v; want a timeout", err)
	}
	if c, err := dial(lns[1], 5*time.Second); err != nil {
		t.Fatalf("the other address of the same namespace was cut too: %v", err)
	} else {
		c.Close()
	}
	if err := heal(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := dial(lns[0], 700*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("connected while the second cut still held the rules")
	}
	if err := heal2(ctx); err != nil {
		t.Fatal(err)
	}
	// The bytes written during the cut arrive: the connection carries on.
	_ = open.SetReadDeadline(time.Now().Add(15 * time.Second))
	if line, err := bufio.NewReader(open).ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("after the heal: %q, %v; want the echo of the write made during the cut", line, err)
	}
	c, err := dial(lns[0], 5*time.Second)
	if err != nil {
		t.Fatalf("after the heal: %v", err)
	}
	c.Close()

	// Isolation cuts b's address from every other namespace, and
	// overlaps a pair cut of the same address: healing the pair cut
	// leaves the isolation in place.
	healPair, err := l.cut(ctx, cutRules(a.addrs(), []string{cutAddr}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.cut(ctx, isolateRules([]string{cutAddr})); err != nil {
		t.Fatal(err)
	}
	if err := healPair(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := dial(lns[0], time.Second); err == nil {
		c.Close()
		t.Fatal("connected to an isolated address")
	} else if !isTimeout(err) {
		t.Fatalf("connect to an isolated address: %v; want a timeout", err)
	}

	l.remove() // with the isolation's rules still in place
	removed = true
	out, _ := exec.Command("ip", "-4", "rule", "show").Output()
	if strings.Contains(string(out), l.prefix()) {
		t.Errorf("rules left after remove:\n%s", out)
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), "evsnap-chaos-"+l.tag) {
		t.Errorf("namespaces left after remove:\n%s", out)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// echoServer echoes every connection's bytes back, until close.
type echoServer struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []io.Closer // listeners and connections
	closed bool
}

func (e *echoServer) track(c io.Closer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		c.Close()
		return
	}
	e.conns = append(e.conns, c)
}

func (e *echoServer) serve(ln net.Listener) {
	e.track(ln)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.track(c)
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// close closes the listeners and every connection, and waits for the
// goroutines.
func (e *echoServer) close() {
	e.mu.Lock()
	e.closed = true
	for _, c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// inNetns runs f on a thread in the network namespace name: the sockets
// it creates belong to that namespace for good.
func inNetns(t *testing.T, name string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer self.Close()
	ns, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer ns.Close()
	if err := setns(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	f()
	if err := setns(self); err != nil {
		// The thread stays locked and dies with this goroutine.
		t.Fatalf("back to the test's network namespace: %v", err)
	}
	runtime.UnlockOSThread()
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }
