//go:build unix

// Package pgcluster runs a throwaway PostgreSQL cluster of its own: initdb
// into a directory, the postmaster on a free loopback port, and the three
// ways a server goes down — a clean (fast) shutdown, an immediate shutdown
// that leaves crash recovery to the next start, and SIGKILL of the
// postmaster alone. The chaos suite restarts and crashes it under load;
// the shared server on 5432 is never touched.
//
//	c, err := pgcluster.Init(ctx, pgcluster.Options{}) // initdb into a temp dir
//	defer c.Remove()
//	err = c.Start(ctx)                                  // waits until it accepts connections
//	pool, err := pgxpool.New(ctx, c.URL("postgres"))
//	st, err := c.Stop(ctx, pgcluster.Immediate)         // then Start: crash recovery
//
// # Processes and users
//
// The postmaster is a child of the calling process, started the way
// pg_ctl start would start it (postgres -D ... -p ... -k ...) but not
// daemonized: it runs in its own process group (a Ctrl-C on the terminal
// does not reach it), the kernel kills it if the caller dies (Linux), and
// the caller sees its exit. The stop modes send the signals pg_ctl stop
// sends (SIGINT for -m fast, SIGQUIT for -m immediate). initdb and the
// server refuse to run as root: when the caller is root they run as the OS
// user Options.OSUser ("postgres"), and the directory is given to it.
//
// # After SIGKILL
//
// Killing the postmaster alone leaves its children (backends, the
// checkpointer, ...) behind; PostgreSQL's documentation warns that they
// may have to be killed by hand, that the shared memory stays allocated,
// and that postmaster.pid stays in place. [Cluster.Stop] with [Kill]
// finds them (every process whose working directory is the data
// directory, Linux only), waits for them to notice the postmaster's death
// and exit, and kills those that do not; the server itself then removes
// the stale shared memory segment at the next start. [Cluster.Start]
// removes a stale postmaster.pid only when the server refuses to start
// because of it and no process of the cluster is left.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/natsserver"
	"github.com/jackc/pgx/v5"
)

// Superuser is the cluster's superuser (initdb -U), who connects without a
// password over TCP on loopback and the socket (initdb -A trust).
const Superuser = "postgres"

// DefaultSettings are the server settings of a small, fast cluster; the
// caller's Options.Settings come after them and win. Durability is
// PostgreSQL's default (fsync and synchronous_commit on), so a commit the
// server acknowledged survives every stop mode.
var DefaultSettings = []string{
	"shared_buffers=32MB",
	"max_connections=100",
	"wal_level=minimal",
	"max_wal_senders=0",
	"log_line_prefix=%m [%p] %a ",
	"log_checkpoints=on",
	"log_min_messages=warning",
	"log_min_error_statement=panic",
}

// Options configure [Init].
type Options struct {
	// BinDir holds initdb and postgres. "" finds them: the directory of
	// initdb in PATH (symbolic links resolved), else the newest
	// /usr/lib/postgresql/<version>/bin.
	BinDir string
	// Dir is the cluster's own directory: the data directory, the
	// socket directory and the server log go in it, and [Cluster.Remove]
	// deletes it. It must not exist or be empty. "" makes a new one under
	// the system's temporary directory.
	Dir string
	// DataDir is the data directory (initdb -D, pg_wal included); ""
	// means <Dir>/data. Give one on a file system of its own (a mount
	// point, which must be empty) to make the server's disk a thing of
	// its own: the chaos suite fills a small tmpfs there. Init gives it
	// to the server's OS user and mode 0700; [Cluster.Remove] deletes
	// what it holds but not the directory itself, which belongs to the
	// caller. The log and the socket stay in Dir.
	DataDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// OSUser runs initdb and the server when the caller is root (both
	// refuse to run as root); "" means "postgres". Ignored otherwise.
	OSUser string
	// Settings are more "name=value" server settings (postgres -c).
	Settings []string
	// ReadyTimeout bounds [Cluster.Start]'s wait for the server to accept
	// connections (crash recovery included); 0 means 2 minutes.
	ReadyTimeout time.Duration
	// LeftoverWait is how long [Cluster.Stop] lets the processes a killed
	// postmaster left behind exit on their own before it kills them; 0
	// means 10 seconds. A backend notices the postmaster's death when it
	// waits (for the client, a lock, a sleep), not while it computes.
	LeftoverWait time.Duration
}

// StopMode is how [Cluster.Stop] takes the server down.
type StopMode int

// The stop modes.
const (
	// Fast is a clean shutdown (pg_ctl stop -m fast, SIGINT): sessions are
	// terminated, open transactions roll back, a shutdown checkpoint is
	// written, and the next start needs no recovery.
	Fast StopMode = iota
	// Immediate is an immediate shutdown (pg_ctl stop -m immediate,
	// SIGQUIT): every process exits at once without a checkpoint, and the
	// next start runs crash recovery from the WAL.
	Immediate
	// Kill sends SIGKILL to the postmaster alone, as a crash or the OOM
	// killer would; its children are found and reaped (see the package
	// documentation), and the next start runs crash recovery.
	Kill
)

// String names the mode.
func (m StopMode) String() string {
	switch m {
	case Fast:
		return "fast"
	case Immediate:
		return "immediate"
	case Kill:
		return "SIGKILL"
	}
	return "StopMode(" + strconv.Itoa(int(m)) + ")"
}

// StopResult is what [Cluster.Stop] did.
type StopResult struct {
	// Took is from the signal to the postmaster's exit (and, for Kill,
	// the exit of every process it left behind).
	Took time.Duration
	// Leftovers counts the cluster's processes still running after the
	// postmaster exited (Linux; only Kill should leave any).
	Leftovers int
	// LeftoversKilled counts those that had not exited on their own
	// within the wait and were killed with SIGKILL.
	LeftoversKilled int
}

// StartResult is what [Cluster.Start] did.
type StartResult struct {
	// Took is from the exec to the first successful query.
	Took time.Duration
	// CrashRecovery reports that the server logged automatic recovery
	// (it had not been shut down cleanly).
	CrashRecovery bool
	// StaleLockRemoved reports that the server refused to start because
	// of a postmaster.pid left behind, which Start then removed.
	StaleLockRemoved bool
	// SharedMemoryWaits counts the starts the server refused because the
	// shared memory segment of a killed postmaster was still attached,
	// after which Start waited and tried again (see Cluster.Start).
	SharedMemoryWaits int
}

// Cluster is one PostgreSQL cluster created by [Init]. Its methods are
// safe for concurrent use, but starts and stops must take turns.
type Cluster struct {
	binDir   string
	dir      string
	dataDir  string
	ownData  bool // the caller gave the data directory (Options.DataDir)
	sockDir  string
	logPath  string
	port     int
	cred     *syscall.Credential
	settings []string
	ready    time.Duration
	leftWait time.Duration
	env      []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current postmaster has exited
	state    *os.ProcessState
	expected bool // the current postmaster was asked to exit
}

// Init runs initdb into a new cluster directory (see [Options]) and returns
// the cluster, not started. On error nothing is left behind.
func Init(ctx context.Context, o Options) (*Cluster, error) {
	binDir, err := findBinDir(o.BinDir)
	if err != nil {
		return nil, err
	}
	for _, s := range o.Settings {
		if k, _, ok := strings.Cut(s, "="); !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("pgcluster: setting %q: want name=value", s)
		}
	}
	cred, err := credential(o.OSUser)
	if err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "evsnap-pg-*"); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
	} else if err := makeEmptyDir(dir); err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err == nil {
		dir, err = filepath.EvalSymlinks(dir) // processes report their working directory resolved
	}
	if err != nil {
		return nil, fmt.Errorf("pgcluster: directory: %w", err)
	}
	port := o.Port
	if port == 0 {
		if port, err = natsserver.FreePort(); err != nil {
			return nil, fmt.Errorf("pgcluster: free port: %w", err)
		}
	}
	dataDir, ownData := filepath.Join(dir, "data"), false
	if o.DataDir != "" {
		if dataDir, err = ownDataDir(o.DataDir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		ownData = true
	}
	c := &Cluster{
		binDir: binDir, dir: dir, dataDir: dataDir, ownData: ownData, sockDir: filepath.Join(dir, "sock"),
		logPath: filepath.Join(dir, "postgres.log"), port: port, cred: cred,
		settings: mergeSettings(DefaultSettings, o.Settings), ready: o.ReadyTimeout, leftWait: o.LeftoverWait, env: serverEnv(),
	}
	if c.ready <= 0 {
		c.ready = 2 * time.Minute
	}
	if c.leftWait <= 0 {
		c.leftWait = 10 * time.Second
	}
	if err := c.initdb(ctx); err != nil {
		os.RemoveAll(dir)
		if ownData {
			removeContents(dataDir)
		}
		return nil, err
	}
	return c, nil
}

// ownDataDir checks a caller's data directory (it must exist and be
// empty) and returns its absolute path, symbolic links resolved.
func ownDataDir(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("pgcluster: data directory: %w", err)
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("pgcluster: data directory %s is not empty", dir)
	}
	if dir, err = filepath.Abs(dir); err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return "", fmt.Errorf("pgcluster: data directory: %w", err)
	}
	return dir, nil
}

// removeContents deletes everything in dir, not dir itself.
func removeContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}

// mergeSettings returns the defaults with each setting of more replacing
// the one of the same name, in order.
func mergeSettings(defaults, more []string) []string {
	out := slices.Clone(defaults)
	for _, s := range more {
		name, _, _ := strings.Cut(s, "=")
		i := slices.IndexFunc(out, func(d string) bool {
			d, _, _ = strings.Cut(d, "=")
			return strings.TrimSpace(d) == strings.TrimSpace(name)
		})
		if i >= 0 {
			out[i] = s
		} else {
			out = append(out, s)
		}
	}
	return out
}

func makeEmptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("pgcluster: directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("pgcluster: directory %s is not empty: the cluster needs one of its own", dir)
	}
	return nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	if err := os.Mkdir(c.sockDir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	dirs := []string{c.dir, c.sockDir}
	if c.ownData {
		// initdb sets the mode of a directory that exists, if it owns it.
		dirs = append(dirs, c.dataDir)
	}
	if c.cred != nil {
		for _, d := range dirs {
			if err := os.Chown(d, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return fmt.Errorf("pgcluster: give %s to uid %d: %w", d, c.cred.Uid, err)
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, filepath.Join(c.binDir, "initdb"),
		"-D", c.dataDir, "-U", Superuser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Env = c.env
	cmd.Dir = c.dir
	cmd.SysProcAttr = sysProcAttr(c.cred)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: %s: %w\n%s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// findBinDir returns the directory of initdb and postgres.
func findBinDir(dir string) (string, error) {
	has := func(d string) bool {
		for _, p := range []string{"initdb", "postgres"} {
			if st, err := os.Stat(filepath.Join(d, p)); err != nil || st.IsDir() {
				return false
			}
		}
		return true
	}
	if dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("pgcluster: %s does not hold both initdb and postgres", dir)
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", errors.New("pgcluster: no PostgreSQL server binaries: initdb is not in PATH and /usr/lib/postgresql/*/bin has none (install the postgresql package)")
}

// versionOf is the major version in /usr/lib/postgresql/<version>/bin.
func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// credential is the OS user to run as when the caller is root, else nil.
func credential(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: initdb and postgres refuse to run as root, and there is no OS user %q to run them as: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, fmt.Errorf("pgcluster: OS user %q has uid %s gid %s: want a user other than root", name, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// serverEnv is the caller's environment without PG* variables (PGDATA,
// PGPORT, ... would override the command line), in the C locale so that
// messages are in English.
func serverEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "LC_ALL=C")
}

// URL returns the URL of database on the cluster, as the superuser over
// TCP: postgres://postgres@127.0.0.1:<port>/<database>?sslmode=disable.
func (c *Cluster) URL(database string) string {
	u := url.URL{Scheme: "postgres", User: url.User(Superuser), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path: "/" + database, RawQuery: "sslmode=disable"}
	return u.String()
}

// Port is the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir is the cluster's directory; SocketDir and LogPath are in it, and
// DataDir unless Options.DataDir put it elsewhere.
func (c *Cluster) Dir() string { return c.dir }

// DataDir is the data directory (postgres -D).
func (c *Cluster) DataDir() string { return c.dataDir }

// SocketDir is the directory of the Unix socket (postgres -k).
func (c *Cluster) SocketDir() string { return c.sockDir }

// LogPath is the server log: every postmaster's standard error, appended.
func (c *Cluster) LogPath() string { return c.logPath }

// BinDir is the directory of the server binaries in use.
func (c *Cluster) BinDir() string { return c.binDir }

// StartCommand is a shell command that starts the cluster again after the
// caller is gone (to look at what a kept cluster holds).
func (c *Cluster) StartCommand() string {
	var opts []string
	for _, a := range c.serverArgs() {
		if strings.ContainsAny(a, " '\"$[]%") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		opts = append(opts, a)
	}
	cmd := fmt.Sprintf("%s -D %s -l %s -o \"%s\" start", filepath.Join(c.binDir, "pg_ctl"), c.dataDir, c.logPath, strings.Join(opts, " "))
	if c.cred != nil {
		if u, err := user.LookupId(strconv.Itoa(int(c.cred.Uid))); err == nil {
			cmd = "runuser -u " + u.Username + " -- " + cmd
		}
	}
	return cmd
}

// serverArgs are the postmaster's options after -D.
func (c *Cluster) serverArgs() []string {
	args := []string{"-p", strconv.Itoa(c.port), "-k", c.sockDir, "-c", "listen_addresses=127.0.0.1"}
	for _, s := range c.settings {
		args = append(args, "-c", s)
	}
	return args
}

// Start starts the postmaster and waits until it accepts connections
// (after crash recovery, when the last stop left it to do), at most
// Options.ReadyTimeout. It fails if a postmaster of this Cluster is running.
func (c *Cluster) Start(ctx context.Context) (StartResult, error) {
	res, err := c.start(ctx)
	// After a SIGKILL of the postmaster its old shared memory segment can
	// stay attached for a moment after the last process of the cluster is
	// gone from /proc (the kernel tears an exiting process's memory down
	// only once nothing holds it), and the server refuses to start while
	// it is: wait for it, as an operator would, at most leftWait.
	waits := 0
	var shmErr *sharedMemoryBusyError
	for deadline := time.Now().Add(c.leftWait); errors.As(err, &shmErr) && len(c.Processes()) == 0 && time.Now().Before(deadline); {
		if !sleepCtx(ctx, 100*time.Millisecond) {
			break
		}
		waits++
		res, err = c.start(ctx)
	}
	res.SharedMemoryWaits = waits
	var lockErr *staleLockError
	if errors.As(err, &lockErr) {
		// The server found a postmaster.pid naming a live process that is
		// not one of the cluster's (a recycled pid): remove it, as the
		// documentation says, once sure no server of this cluster runs.
		if left := c.Processes(); len(left) > 0 {
			return res, fmt.Errorf("%w; processes %v still run in the data directory", err, left)
		}
		if rerr := os.Remove(filepath.Join(c.dataDir, "postmaster.pid")); rerr != nil {
			return res, errors.Join(err, rerr)
		}
		res, err = c.start(ctx)
		res.StaleLockRemoved = true
	}
	return res, err
}

// staleLockError: the server refused to start because of postmaster.pid.
type staleLockError struct{ log string }

func (e *staleLockError) Error() string {
	return "pgcluster: the server refused to start because of a lock file: " + e.log
}

// sharedMemoryBusyError: the server refused to start because the shared
// memory segment of an earlier postmaster was still in use.
type sharedMemoryBusyError struct{ log string }

func (e *sharedMemoryBusyError) Error() string {
	return "pgcluster: the server refused to start because an earlier postmaster's shared memory is still in use: " + e.log
}

// sleepCtx sleeps for d or until ctx ends, and reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Cluster) start(ctx context.Context) (StartResult, error) {
	c.mu.Lock()
	if c.done != nil {
		select {
		case <-c.done:
		default:
			pid := c.cmd.Process.Pid
			c.mu.Unlock()
			return StartResult{}, fmt.Errorf("pgcluster: start: the postmaster (pid %d) is running", pid)
		}
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.mu.Unlock()
		return StartResult{}, fmt.Errorf("pgcluster: log: %w", err)
	}
	if c.cred != nil { // so that the server's OS user can write it too (pg_ctl -l)
		_ = logf.Chown(int(c.cred.Uid), int(c.cred.Gid))
	}
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), append([]string{"-D", c.dataDir}, c.serverArgs()...)...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr(c.cred)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.mu.Unlock()
		return StartResult{}, fmt.Errorf("pgcluster: start %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	c.cmd, c.done, c.state, c.expected = cmd, done, nil, false
	c.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		logf.Close()
		c.mu.Lock()
		c.state = cmd.ProcessState
		c.mu.Unlock()
		close(done)
	}()

	var res StartResult
	deadline := time.Now().Add(c.ready)
	var last error
	for {
		select {
		case <-done:
			log := c.logSince(logStart)
			if strings.Contains(log, `lock file "postmaster.pid" already exists`) {
				return res, &staleLockError{log: lastLines(log, 3)}
			}
			if strings.Contains(log, "pre-existing shared memory block") && strings.Contains(log, "is still in use") {
				return res, &sharedMemoryBusyError{log: lastLines(log, 2)}
			}
			return res, fmt.Errorf("pgcluster: the server exited while starting (%s); its log:\n%s", c.describeExit(), lastLines(log, 10))
		default:
		}
		if last = c.ping(ctx); last == nil {
			res.Took = time.Since(start)
			res.CrashRecovery = strings.Contains(c.logSince(logStart), "automatic recovery in progress")
			return res, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			c.signal(syscall.SIGQUIT)
			<-done
			return res, fmt.Errorf("pgcluster: the server on port %d did not accept connections within %v: %w; its log:\n%s",
				c.port, c.ready, errors.Join(last, ctx.Err()), lastLines(c.logSince(logStart), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping connects to the postgres database and runs a query.
func (c *Cluster) ping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, c.URL("postgres")+"&application_name=pgcluster")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(cctx))
	var one int
	return conn.QueryRow(cctx, "SELECT 1").Scan(&one)
}

// Stop takes the server down as mode says and waits until the postmaster
// (and, for Kill, every process it left) has exited, at most a minute
// (then it escalates to SIGQUIT and SIGKILL and reports an error). Stopping
// a cluster that is not running does nothing.
func (c *Cluster) Stop(ctx context.Context, mode StopMode) (StopResult, error) {
	sig := map[StopMode]syscall.Signal{Fast: syscall.SIGINT, Immediate: syscall.SIGQUIT, Kill: syscall.SIGKILL}[mode]
	if sig == 0 {
		return StopResult{}, fmt.Errorf("pgcluster: unknown stop mode %d", int(mode))
	}
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done == nil || !c.Running() {
		return StopResult{}, nil
	}
	start := time.Now()
	c.signal(sig)
	var res StopResult
	var errs []error
	if !waitDone(ctx, done, time.Minute) {
		errs = append(errs, fmt.Errorf("pgcluster: the postmaster did not exit within a minute of %s (%v)", mode, ctx.Err()))
		c.signal(syscall.SIGQUIT)
		if !waitDone(context.WithoutCancel(ctx), done, 10*time.Second) {
			c.signal(syscall.SIGKILL)
			<-done
		}
	}
	// What the postmaster left behind: nothing after a clean or immediate
	// shutdown, which wait for every child; after SIGKILL its children run
	// on until they notice.
	left := c.Processes()
	res.Leftovers = len(left)
	for deadline := time.Now().Add(c.leftWait); len(left) > 0 && time.Now().Before(deadline); left = c.Processes() {
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range left {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			res.LeftoversKilled++
		}
	}
	for deadline := time.Now().Add(10 * time.Second); len(left) > 0; left = c.Processes() {
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("pgcluster: processes %v of the cluster survive SIGKILL", left))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.Took = time.Since(start)
	return res, errors.Join(errs...)
}

func waitDone(ctx context.Context, done <-chan struct{}, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// signal marks the postmaster's exit as asked for and sends it sig.
func (c *Cluster) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	c.expected = true
	_ = c.cmd.Process.Signal(sig)
}

// Running reports whether the postmaster runs.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// PID is the running postmaster's process id (0 when it is not running).
func (c *Cluster) PID() int {
	if !c.Running() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd.Process.Pid
}

// ExitedUnexpectedly reports whether the last postmaster exited without
// being asked to (Stop or Remove), and how.
func (c *Cluster) ExitedUnexpectedly() (bool, string) {
	if c.Running() {
		return false, ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil || c.expected {
		return false, ""
	}
	return true, c.describeExitLocked()
}

func (c *Cluster) describeExit() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.describeExitLocked()
}

func (c *Cluster) describeExitLocked() string {
	if c.state == nil {
		return "exit status unknown"
	}
	if ws, ok := c.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", c.state.ExitCode())
}

// Remove stops the server (fast, escalating if it hangs) and deletes the
// cluster's directory (and what a data directory of the caller's holds).
// It may be called more than once.
func (c *Cluster) Remove() error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, err := c.Stop(ctx, Fast)
	if c.ownData {
		if rerr := removeContents(c.dataDir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("pgcluster: empty %s: %w", c.dataDir, rerr))
		}
	}
	if rerr := os.RemoveAll(c.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("pgcluster: remove %s: %w", c.dir, rerr))
	}
	return err
}

// logSince returns the server log from offset on.
func (c *Cluster) logSince(offset int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "(" + err.Error() + ")"
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// lastLines returns the last n lines of s, indented.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t| " + strings.Join(lines, "\n\t| ")
}
