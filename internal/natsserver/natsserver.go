// Package natsserver builds the nats-server of the version go.mod pins and
// runs it as a separate process: what the benchmarks (and anything else
// that must not measure the machine's own, older server, or share a
// process with the server) start.
//
// The machine's nats-server may be much older than the module go.mod
// requires (Debian's 2.9.10 saturates a core at about 2,800 acked
// work-queue notices/s; v2.15.2 drains the same backlog about 3× faster),
// so a figure measured against it is a figure of that server. [Build]
// compiles the pinned version from the module cache with `go install`,
// once per version, into a cache directory; [Start] runs it with
// JetStream on a free loopback port and a store directory of its own.
//
//	bin, err := natsserver.Build(ctx, "")           // ~/.cache/evsnap/nats-server/v2.15.2/nats-server
//	s, err := natsserver.Start(ctx, bin, t.TempDir())
//	defer s.Stop()
//	nc, err := nats.Connect(s.URL())
package natsserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Module is the nats-server module path.
const Module = "github.com/nats-io/nats-server/v2"

// PinnedVersion returns the version of [Module] that go.mod pins: the one
// built into the running program when it links the server (the harness
// does, through natsconn's embedded server), else what `go list -m` says
// in the current directory (a test binary runs in its package's directory,
// inside the module).
func PinnedVersion() (string, error) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == Module {
				if d.Replace != nil {
					d = d.Replace
				}
				return d.Version, nil
			}
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", Module).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return "", fmt.Errorf("natsserver: the version go.mod pins: go list -m %s: %w", Module, err)
	}
	v := string(bytes.TrimSpace(out))
	if v == "" {
		return "", fmt.Errorf("natsserver: go list -m %s printed no version", Module)
	}
	return v, nil
}

// DefaultCacheDir is where [Build] puts binaries when given no directory:
// evsnap/nats-server under the user's cache directory.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "evsnap", "nats-server"), nil
}

// Build returns the path of a nats-server binary of [PinnedVersion],
// building it with `go install Module@version` (GOBIN set to
// cacheDir/<version>) unless it is there already. cacheDir "" means
// [DefaultCacheDir]. It needs the go command on PATH; the module comes
// from the module cache, so it takes seconds and no network when the
// module was downloaded (it is a dependency of this one).
func Build(ctx context.Context, cacheDir string) (string, error) {
	v, err := PinnedVersion()
	if err != nil {
		return "", err
	}
	return BuildVersion(ctx, cacheDir, v)
}

// BuildVersion is [Build] for a given version.
func BuildVersion(ctx context.Context, cacheDir, version string) (string, error) {
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return "", err
		}
		cacheDir = d
	}
	bin := filepath.Join(cacheDir, version)
	path := filepath.Join(bin, "nats-server")
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return path, nil
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "install", Module+"@"+version)
	// Outside any module, so the @version form builds exactly that version.
	cmd.Dir = bin
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=", "GOWORK=off")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("natsserver: go install %s@%s: %w\n%s", Module, version, err, out.String())
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("natsserver: go install %s@%s left no binary: %w", Module, version, err)
	}
	return path, nil
}

// Server is one nats-server process with JetStream on 127.0.0.1.
type Server struct {
	cmd  *exec.Cmd
	port int
	done chan struct{}
	err  error
	log  string
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs binary with JetStream on a free loopback port, its store in
// dir (which it creates) and its log in dir/nats-server.log, and waits
// until JetStream answers (at most 30 s). The process gets SIGKILL if
// this one dies; call Stop to end it.
func Start(ctx context.Context, binary, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{port: port, done: make(chan struct{}), log: filepath.Join(dir, "nats-server.log")}
	s.cmd = exec.Command(binary, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "store"), "-l", s.log)
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("natsserver: start %s: %w", binary, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("natsserver: %s exited while starting: %v (log %s)", binary, s.err, s.log)
		default:
		}
		if last = s.ping(ctx); last == nil {
			return s, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("natsserver: %s on port %d not ready: %w", binary, port, errors.Join(last, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) ping(ctx context.Context) error {
	nc, err := nats.Connect(s.URL(), nats.Timeout(time.Second), nats.NoReconnect(), nats.Name("evsnap-natsserver-probe"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(cctx)
	return err
}

// URL is the server's client URL.
func (s *Server) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// PID is the server's process id (for reading its CPU time in /proc).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// LogPath is the server's log file.
func (s *Server) LogPath() string { return s.log }

// Stop ends the server with SIGTERM, or SIGKILL after 10 s, and waits
// for it. It may be called more than once.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
