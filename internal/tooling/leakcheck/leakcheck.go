// Package leakcheck runs a package's tests and then fails the run if
// goroutines the tests started are still running, as goleak does, but
// gives goroutines that are already on their way out a grace period.
//
// goleak.VerifyTestMain looks for about half a second. Closing an
// embedded nats-server or a nats.go connection returns before every one
// of their goroutines has returned; on a loaded two-core machine running
// every package's tests at once, the last of them can take longer than
// that to be scheduled and exit, and the run failed with no test at
// fault. A goroutine that is still there after the grace period is a
// leak and fails the run with goleak's report, unless it is one of the
// known bugs of a dependency listed in upstreamLeaks (a goroutine that
// waits for good, in a state that says so), which is reported on stderr
// and does not fail the run.
package leakcheck

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Grace is how long VerifyTestMain waits for goroutines to exit after
// the last test has passed.
const Grace = 15 * time.Second

// VerifyTestMain runs m and exits with its code, or with 1 if the tests
// passed but goroutines other than those goleak ignores (and those opts
// ignore) are still running Grace after they finished.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := waitNone(Grace, opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// upstreamLeak is a dependency's goroutine that, in state, can never
// return: a bug of theirs, not a leak of the tests'.
type upstreamLeak struct {
	top, state, why string
}

// upstreamLeaks are the known ones.
var upstreamLeaks = []upstreamLeak{{
	top:   "github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect",
	state: "chan receive (nil chan)",
	why: "nats.go v1.55.0 starts it on a JetStream context's first PublishAsync; when CleanupPublisher " +
		"(natsnotice's Publisher.Close) runs before it is first scheduled, it reads the status channel " +
		"CleanupPublisher has set to nil and waits on it for good",
}}

// goroutineHeader is how goleak's report starts each goroutine (the first
// after a "[", the others after a space).
var goroutineHeader = regexp.MustCompile(`Goroutine \d+ in state (.*?), with (\S+) on top of the stack:`)

// onlyUpstream reports whether every goroutine of goleak's report err is
// one of upstreamLeaks, and if so names them. A report it cannot read
// goroutine by goroutine is not.
func onlyUpstream(err error) (string, bool) {
	found := goroutineHeader.FindAllStringSubmatch(err.Error(), -1)
	if len(found) == 0 || len(found) != strings.Count(err.Error(), "on top of the stack:") {
		return "", false
	}
	var names []string
	for _, g := range found {
		known := false
		for _, u := range upstreamLeaks {
			if g[1] == u.state && g[2] == u.top {
				names = append(names, fmt.Sprintf("%s in state %s (%s)", u.top, u.state, u.why))
				known = true
				break
			}
		}
		if !known {
			return "", false
		}
	}
	return strings.Join(names, "; "), true
}

// waitNone polls goleak.Find until it finds nothing or grace has passed,
// and returns its last error. When goroutines needed the grace period, it
// says on stderr which and for how long, so a slow shutdown is seen.
func waitNone(grace time.Duration, opts ...goleak.Option) error {
	start := time.Now()
	var first error
	for {
		err := goleak.Find(opts...)
		if err != nil {
			if known, ok := onlyUpstream(err); ok {
				fmt.Fprintf(os.Stderr, "leakcheck: ignored goroutines a dependency leaves waiting for good: %s\n", known)
				err = nil
			}
		}
		if err == nil {
			if first != nil {
				fmt.Fprintf(os.Stderr, "leakcheck: goroutines exited %v after the tests: %s\n",
					time.Since(start).Round(time.Millisecond), tops(first))
			}
			return nil
		}
		if first == nil {
			first = err
		}
		if time.Since(start) > grace {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tops lists the functions on top of the goroutines goleak reported.
func tops(err error) string {
	var fns []string
	for _, m := range goroutineHeader.FindAllStringSubmatch(err.Error(), -1) {
		fns = append(fns, m[2])
	}
	return strings.Join(fns, ", ")
}
