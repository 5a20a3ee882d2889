package toxiproxy

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestLatencyAndReset runs a real toxiproxy-server in front of an echo
// server: a latency toxic delays the echo, a reset_peer toxic resets the
// connection, and removing them restores a plain echo.
func TestLatencyAndReset(t *testing.T) {
	ctx := context.Background()
	bin, _, err := Ensure(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Start(ctx, bin, filepath.Join(t.TempDir(), "toxiproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}()
	listen, err := srv.Proxy(ctx, "echo", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip := func() (time.Duration, error) {
		c, err := net.DialTimeout("tcp", listen, 2*time.Second)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		t0 := time.Now()
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return 0, err
		}
		_, err = bufio.NewReader(c).ReadString('\n')
		return time.Since(t0), err
	}
	if _, err := roundTrip(); err != nil {
		t.Fatalf("plain round trip: %v", err)
	}
	if err := srv.AddToxic(ctx, "echo", Toxic{Name: "slow", Type: "latency", Stream: "downstream", Attributes: map[string]int{"latency": 300}}); err != nil {
		t.Fatal(err)
	}
	if d, err := roundTrip(); err != nil || d < 300*time.Millisecond {
		t.Fatalf("round trip with 300ms latency: %v, %v", d, err)
	}
	if err := srv.RemoveToxic(ctx, "echo", "slow"); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddToxic(ctx, "echo", Toxic{Name: "reset", Type: "reset_peer", Stream: "upstream", Attributes: map[string]int{"timeout": 0}}); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(); err == nil {
		t.Fatal("round trip through reset_peer succeeded")
	}
	if err := srv.RemoveToxic(ctx, "echo", "reset"); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(); err != nil {
		t.Fatalf("round trip after the toxics: %v", err)
	}
	if err := srv.RemoveToxic(ctx, "echo", "nope"); err == nil {
		t.Fatal("removing a toxic that does not exist succeeded")
	}
}
