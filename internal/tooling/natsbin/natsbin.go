// Package natsbin provides the nats-server binary of the version go.mod
// pins, for the programs that run nats-server as a separate process (the
// chaos suite's cluster, the benchmark harness). Tests that need NATS
// embed the server package instead (internal/tooling/natstest) and need no binary.
//
// [Ensure] builds the binary once with go build from the evsnap module,
// so the version and the checksums are exactly go.mod's and go.sum's, into
// a cache directory, and reuses it afterwards:
//
//	bin, err := natsbin.Ensure(ctx, repoDir, "") // "": DefaultCacheDir
//	// bin.Path is <cache>/nats-server-v2.15.2; bin.Built and bin.Took say
//	// whether this call built it and how long that took.
//
// The machine's own nats-server (Debian's 2.9.10 at /usr/sbin/nats-server)
// is the oldest version evsnap supports, and CI's integration tests run
// against it; benchmarks and the chaos suite use the pinned one.
package natsbin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Module is the nats-server module path, whose main package is the
// server binary.
const Module = "github.com/nats-io/nats-server/v2"

// EnvCacheDir overrides [DefaultCacheDir].
const EnvCacheDir = "EVSNAP_NATS_SERVER_CACHE"

// Binary is a nats-server binary provided by [Ensure].
type Binary struct {
	// Path is the binary's absolute path.
	Path string
	// Version is the version go.mod pins, e.g. "v2.15.2".
	Version string
	// Built reports whether this call built the binary (false: it was in
	// the cache already).
	Built bool
	// Took is how long Ensure took, building included.
	Took time.Duration
}

// DefaultCacheDir is where [Ensure] keeps the binaries when it is given no
// directory: $EVSNAP_NATS_SERVER_CACHE if set, else
// <user cache dir>/evsnap/nats-server (for example
// ~/.cache/evsnap/nats-server).
func DefaultCacheDir() (string, error) {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return filepath.Abs(d)
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("natsbin: no cache directory (set %s): %w", EnvCacheDir, err)
	}
	return filepath.Join(d, "evsnap", "nats-server"), nil
}

// PinnedVersion returns the version of nats-server that the module at
// repoDir requires (go list -m).
func PinnedVersion(ctx context.Context, repoDir string) (string, error) {
	out, err := goCmd(ctx, repoDir, "list", "-m", "-f", "{{.Version}}", Module)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(out)
	if v == "" {
		return "", fmt.Errorf("natsbin: go list -m %s in %s printed no version", Module, repoDir)
	}
	return v, nil
}

// Ensure returns the nats-server binary of the version the module at
// repoDir pins, from cacheDir ("" means [DefaultCacheDir]) when it is
// there, and otherwise builds it there first (go build from the module
// cache: seconds; it downloads the module if the cache lacks it). A
// concurrent Ensure in another process is harmless: each builds into a
// temporary file and renames it into place.
func Ensure(ctx context.Context, repoDir, cacheDir string) (Binary, error) {
	start := time.Now()
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return Binary{}, err
		}
		cacheDir = d
	}
	version, err := PinnedVersion(ctx, repoDir)
	if err != nil {
		return Binary{}, err
	}
	b := Binary{Path: filepath.Join(cacheDir, "nats-server-"+version), Version: version}
	if err := checkVersion(ctx, b.Path, version); err == nil {
		b.Took = time.Since(start)
		return b, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		// A damaged or foreign file: rebuild over it.
		_ = os.Remove(b.Path)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Binary{}, fmt.Errorf("natsbin: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".nats-server-*")
	if err != nil {
		return Binary{}, fmt.Errorf("natsbin: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := goCmd(ctx, repoDir, "build", "-o", tmp.Name(), Module); err != nil {
		return Binary{}, err
	}
	if err := checkVersion(ctx, tmp.Name(), version); err != nil {
		return Binary{}, err
	}
	if err := os.Rename(tmp.Name(), b.Path); err != nil {
		return Binary{}, fmt.Errorf("natsbin: %w", err)
	}
	b.Built, b.Took = true, time.Since(start)
	return b, nil
}

// checkVersion runs path --version and checks it reports version; a
// missing file is an error matching os.ErrNotExist.
func checkVersion(ctx context.Context, path, version string) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, path, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("natsbin: %s --version: %v: %s", path, err, bytes.TrimSpace(out))
	}
	if got := strings.TrimSpace(string(out)); got != "nats-server: "+version {
		return fmt.Errorf("natsbin: %s --version says %q, want nats-server: %s", path, got, version)
	}
	return nil
}

func goCmd(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("natsbin: go %s (in %s): %v: %s", strings.Join(args, " "), dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}
