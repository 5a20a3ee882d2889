// Package toxiproxy runs Shopify's Toxiproxy (a TCP proxy that injects
// latency, stalls and resets) as a process of its own, for the chaos
// suite: [Ensure] builds toxiproxy-server once with go install at the
// pinned [Version] into a cache directory (the module is not a dependency
// of evsnap's), [Start] runs it on a free loopback port ([StartAt] on
// another address, in a network namespace), and [Server]
// creates proxies and adds and removes toxics through its HTTP API.
package toxiproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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

// Server is a running toxiproxy-server. Its methods are not safe for
// concurrent use with [Server.Restart].
type Server struct {
	path, logPath string
	host          string // where its API and (by default) its proxies listen
	port          int    // the API's port, kept across restarts
	wrap          func(string, []string) (string, []string)
	api           string
	http          *http.Client

	cmd     *exec.Cmd
	done    chan struct{}
	proxies []proxySpec // what Restart creates again, in order
}

// proxySpec is a proxy that the server was asked to create.
type proxySpec struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Upstream string `json:"upstream"`
	Enabled  bool   `json:"enabled"`
}

// Start runs the binary at path on a free loopback port, its output
// appended to logPath, and waits until its API answers.
func Start(ctx context.Context, path, logPath string) (*Server, error) {
	return StartAt(ctx, path, logPath, "127.0.0.1", nil)
}

// StartAt is [Start] with the API and the proxies on host, and the
// command line passed through wrap (nil: none) first: a wrap that runs
// it in a network namespace where host is an address (it must exec the
// server, so that stopping the process stops the server).
func StartAt(ctx context.Context, path, logPath, host string, wrap func(string, []string) (string, []string)) (*Server, error) {
	port, err := natsserver.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		path: path, logPath: logPath, host: host, port: port, wrap: wrap,
		api:  "http://" + net.JoinHostPort(host, strconv.Itoa(port)),
		http: &http.Client{Timeout: apiTimeout},
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// start runs the process and waits until its API answers.
func (s *Server) start(ctx context.Context) error {
	log, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	name, args := s.path, []string{"-host", s.host, "-port", strconv.Itoa(s.port)}
	if s.wrap != nil {
		name, args = s.wrap(name, args)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	for deadline := time.Now().Add(15 * time.Second); ; {
		if err := s.do(ctx, http.MethodGet, "/version", nil); err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("toxiproxy-server exited at start; see %s", s.logPath)
		case <-ctx.Done():
			s.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("toxiproxy-server did not answer within 15s; see %s", s.logPath)
		}
	}
}

// Stop kills the server and waits for it.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart kills the server and starts it again on the same API address,
// with every proxy it had on the same listen address and no toxics. The
// connections through the proxies are cut. It is the way out of a known
// Toxiproxy deadlock (Shopify/toxiproxy#558, in the pinned Version): when
// a client closes its connection while a latency toxic holds data for
// it, removing that toxic can wait forever on the dead connection, with
// the proxy's lock held, so the API answers 503 after 25 s and every
// later change to that proxy waits as well.
func (s *Server) Restart(ctx context.Context) error {
	s.Stop()
	if err := s.start(ctx); err != nil {
		return fmt.Errorf("restarting toxiproxy-server: %w", err)
	}
	for _, p := range s.proxies {
		if err := s.do(ctx, http.MethodPost, "/proxies", p); err != nil {
			return fmt.Errorf("restarting toxiproxy-server: proxy %s: %w", p.Name, err)
		}
	}
	return nil
}

// Proxy creates a proxy named name from a free port on the server's host
// (loopback for [Start]) to upstream (host:port) and returns the address
// it listens on.
func (s *Server) Proxy(ctx context.Context, name, upstream string) (string, error) {
	return s.ProxyAt(ctx, name, s.host, upstream)
}

// ProxyAt is [Server.Proxy] listening on host, an address of the
// server's machine (or network namespace).
func (s *Server) ProxyAt(ctx context.Context, name, host, upstream string) (string, error) {
	port, err := natsserver.FreePort()
	if err != nil {
		return "", err
	}
	p := proxySpec{Name: name, Listen: net.JoinHostPort(host, strconv.Itoa(port)), Upstream: upstream, Enabled: true}
	if err := s.do(ctx, http.MethodPost, "/proxies", p); err != nil {
		return "", err
	}
	s.proxies = append(s.proxies, p)
	return p.Listen, nil
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

// RemoveToxic removes the toxic named name from proxy. A toxic that is
// not there (404) is not an error.
func (s *Server) RemoveToxic(ctx context.Context, proxy, name string) error {
	err := s.do(ctx, http.MethodDelete, "/proxies/"+proxy+"/toxics/"+name, nil)
	if errors.Is(err, errNotFound) {
		return nil
	}
	return err
}

// RemoveToxics removes the toxics named names from every proxy of
// proxies. When a removal fails (Toxiproxy's deadlock, see
// [Server.Restart], answers 503 after 25 s; ctx may end it sooner) it
// restarts the server, so no toxic is left on and no proxy stays stuck,
// and returns the failure as restartedAfter; err is the restart's, if
// that failed too. The restart cuts every connection through the proxies.
func (s *Server) RemoveToxics(ctx context.Context, proxies, names []string) (restartedAfter, err error) {
	var errs []error
	for _, p := range proxies {
		for _, name := range names {
			errs = append(errs, s.RemoveToxic(ctx, p, name))
		}
	}
	if restartedAfter = errors.Join(errs...); restartedAfter == nil {
		return nil, nil
	}
	return restartedAfter, s.Restart(context.WithoutCancel(ctx))
}

// apiTimeout bounds one call to Toxiproxy's API. Adding or removing a
// toxic waits until every connection of the proxy takes the change, and a
// connection blocked writing to a peer that a partition cut off takes it
// only when the write drains: after the heal, up to the partition's
// length later (at most 10 s in the chaos suite). A shorter timeout gave
// up on calls that then took effect anyway.
const apiTimeout = 30 * time.Second

// errNotFound is the error of an API call answered 404.
var errNotFound = errors.New("not found")

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
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("toxiproxy %s %s: %w: %s", method, path, errNotFound, bytes.TrimSpace(msg))
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
