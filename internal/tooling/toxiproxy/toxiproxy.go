// Package toxiproxy runs Shopify's Toxiproxy (a TCP proxy that injects
// latency, stalls and resets) as a process of its own, for the chaos
// suite: [Ensure] builds toxiproxy-server once with go install at the
// pinned [Version] into a cache directory (the module is not a dependency
// of evsnap's), [Start] runs it on a free loopback port, and [Server]
// creates proxies and adds and removes toxics through its HTTP API.
package toxiproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/natsserver"
)

// Module and Version name the toxiproxy-server that [Ensure] builds.
const (
	Module  = "github.com/Shopify/toxiproxy/v2/cmd/server"
	Version = "v2.5.0"
)

// Ensure returns the path of toxiproxy-server Version, building it into
// cacheDir ("" for <user cache dir>/evsnap/toxiproxy) with go install the
// first time; built says whether this call built it.
func Ensure(ctx context.Context, cacheDir string) (path string, built bool, err error) {
	if cacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return "", false, err
		}
		cacheDir = filepath.Join(d, "evsnap", "toxiproxy")
	}
	dir := filepath.Join(cacheDir, Version)
	path = filepath.Join(dir, "server")
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	cmd := exec.CommandContext(ctx, "go", "install", Module+"@"+Version)
	// Outside any module, so evsnap's go.mod is not involved.
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("go install %s@%s: %v: %s", Module, Version, err, bytes.TrimSpace(out))
	}
	return path, true, nil
}

// Server is a running toxiproxy-server.
type Server struct {
	cmd  *exec.Cmd
	api  string
	done chan struct{}
	http *http.Client
}

// Start runs the binary at path on a free loopback port, its output
// appended to logPath, and waits until its API answers.
func Start(ctx context.Context, path, logPath string) (*Server, error) {
	port, err := natsserver.FreePort()
	if err != nil {
		return nil, err
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "-host", "127.0.0.1", "-port", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	s := &Server{cmd: cmd, api: "http://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{}), http: &http.Client{Timeout: 5 * time.Second}}
	go func() { _ = cmd.Wait(); log.Close(); close(s.done) }()
	for deadline := time.Now().Add(15 * time.Second); ; {
		if err := s.do(ctx, http.MethodGet, "/version", nil); err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("toxiproxy-server exited at start; see %s", logPath)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("toxiproxy-server did not answer within 15s; see %s", logPath)
		}
	}
}

// Stop kills the server and waits for it.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Proxy creates a proxy named name from a free loopback port to upstream
// (host:port) and returns the address it listens on.
func (s *Server) Proxy(ctx context.Context, name, upstream string) (string, error) {
	port, err := natsserver.FreePort()
	if err != nil {
		return "", err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	return listen, s.do(ctx, http.MethodPost, "/proxies", map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true})
}

// Toxic is one toxic: Type is latency, reset_peer, timeout, ...;
// Stream is upstream or downstream; Attributes are the type's.
type Toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float64        `json:"toxicity"`
	Attributes map[string]int `json:"attributes"`
}

// AddToxic adds t to proxy.
func (s *Server) AddToxic(ctx context.Context, proxy string, t Toxic) error {
	if t.Toxicity == 0 {
		t.Toxicity = 1
	}
	return s.do(ctx, http.MethodPost, "/proxies/"+proxy+"/toxics", t)
}

// RemoveToxic removes the toxic named name from proxy.
func (s *Server) RemoveToxic(ctx context.Context, proxy, name string) error {
	return s.do(ctx, http.MethodDelete, "/proxies/"+proxy+"/toxics/"+name, nil)
}

func (s *Server) do(ctx context.Context, method, path string, body any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.api+path, r)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
