package leakcheck

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

// A goroutine that exits within the grace period is not a leak.
func TestLateExitIsNotALeak(t *testing.T) {
	done := make(chan struct{})
	go func() {
		time.Sleep(time.Second) // longer than goleak's own retries
		close(done)
	}()
	if err := waitNone(10 * time.Second); err != nil {
		t.Fatalf("waitNone: %v", err)
	}
	select {
	case <-done:
	default:
		t.Fatal("waitNone returned while the goroutine was still running")
	}
}

// A goroutine that outlives the grace period is reported, named.
func TestLeakReported(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go blockUntil(stop)
	err := waitNone(200 * time.Millisecond)
	if err == nil {
		t.Fatal("waitNone found no leak while a goroutine was blocked")
	}
	if !strings.Contains(err.Error(), "found unexpected goroutines") || !strings.Contains(err.Error(), "blockUntil") {
		t.Fatalf("the report does not name the goroutine: %v", err)
	}
}

func blockUntil(stop <-chan struct{}) { <-stop }

// A goroutine of a known dependency bug (upstreamLeaks), blocked for good
// in the state it names, is not a leak; one of its function in another
// state is, and so is any other goroutine beside it.
func TestUpstreamLeakIgnoredInItsStateOnly(t *testing.T) {
	upstreamLeaks = append(upstreamLeaks, upstreamLeak{
		top: "github.com/evsnap/evsnap/internal/tooling/leakcheck.blockOnNil", state: "chan receive (nil chan)", why: "the test's",
	})
	go blockOnNil() // never returns: the test binary keeps it
	time.Sleep(50 * time.Millisecond)
	if err := waitNone(200 * time.Millisecond); err != nil {
		t.Fatalf("the known goroutine was reported: %v", err)
	}
	stop, started := make(chan struct{}), make(chan struct{})
	defer close(stop)
	go blockUntilAfter(started, stop)
	<-started // so that goleak cannot look before it runs
	err := waitNone(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "blockUntilAfter") {
		t.Fatalf("another goroutine beside the known one: %v, want it reported", err)
	}
	if _, ok := onlyUpstream(errors.New("[Goroutine 7 in state chan receive, with github.com/evsnap/evsnap/internal/tooling/leakcheck.blockOnNil on top of the stack:")); ok {
		t.Fatal("the known function in another state was taken for the known bug")
	}
}

// blockUntilAfter closes started, then waits for stop.
func blockUntilAfter(started chan<- struct{}, stop <-chan struct{}) {
	close(started)
	<-stop
}

// blockOnNil waits on a nil channel: for good.
func blockOnNil() {
	var never chan struct{}
	<-never
}

// The report CI printed for nats.go's goroutine is taken for the known
// bug.
func TestNATSReportFromCIIsKnown(t *testing.T) {
	report := errors.New("found unexpected goroutines:\n[Goroutine 4928 in state chan receive (nil chan), with github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect on top of the stack:\n" +
		"github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect(0xc000d7ec60)\n\t/root/go/pkg/mod/github.com/nats-io/nats.go@v1.55.0/jetstream/publish.go:570 +0xdd\n]")
	if _, ok := onlyUpstream(report); !ok {
		t.Fatal("nats.go's goroutine on a nil channel was not taken for the known bug")
	}
}
