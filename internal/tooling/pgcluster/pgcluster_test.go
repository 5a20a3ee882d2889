//go:build unix

package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/leakcheck"
	"github.com/evsnap/evsnap/internal/tooling/pgcluster"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// cluster initialises and starts a cluster that is removed when the test
// ends. Without PostgreSQL's server binaries it skips, unless
// EVSNAP_REQUIRE_SERVICES=1.
func cluster(t *testing.T, o pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Init(ctx, o)
	if err != nil && strings.Contains(err.Error(), "no PostgreSQL server binaries") && os.Getenv("EVSNAP_REQUIRE_SERVICES") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
		if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after Remove: %v", c.Dir(), err)
		}
	})
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func connect(t *testing.T, ctx context.Context, c *pgcluster.Cluster) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Every stop mode keeps what was committed and drops what was not; the
// next start runs crash recovery after an immediate shutdown and after
// SIGKILL, and nothing of the old server is left running.
func TestStopModesKeepCommittedWork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := cluster(t, pgcluster.Options{})
	setup := connect(t, ctx, c)
	if _, err := setup.Exec(ctx, "CREATE TABLE t (mode text NOT NULL, committed bool NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)
	for _, mode := range []pgcluster.StopMode{pgcluster.Fast, pgcluster.Immediate, pgcluster.Kill} {
		committer := connect(t, ctx, c)
		if _, err := committer.Exec(ctx, "INSERT INTO t VALUES ($1, true)", mode.String()); err != nil {
			t.Fatal(err)
		}
		// A session in the middle of a transaction, and one running a query.
		open := connect(t, ctx, c)
		tx, err := open.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1, false)", mode.String()); err != nil {
			t.Fatal(err)
		}
		busy := connect(t, ctx, c)
		sleepDone := make(chan error, 1)
		go func() {
			_, err := busy.Exec(ctx, "SELECT pg_sleep(30)")
			sleepDone <- err
		}()
		time.Sleep(100 * time.Millisecond) // let the sleep start
		pid := c.PID()

		st, err := c.Stop(ctx, mode)
		if err != nil {
			t.Fatalf("stop %s: %v", mode, err)
		}
		if c.Running() || c.PID() != 0 {
			t.Fatalf("stop %s: still running", mode)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("stop %s: postmaster %d still exists: %v", mode, pid, err)
		}
		if mode != pgcluster.Kill && st.Leftovers != 0 {
			t.Errorf("stop %s left %d processes", mode, st.Leftovers)
		}
		if gone, how := c.ExitedUnexpectedly(); gone {
			t.Errorf("stop %s counted as an unexpected exit: %s", mode, how)
		}
		select {
		case err := <-sleepDone:
			if err == nil {
				t.Errorf("stop %s: the running query succeeded", mode)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("stop %s: the running query did not fail", mode)
		}
		if mode == pgcluster.Kill {
			if _, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid")); err != nil {
				t.Errorf("SIGKILL: want a stale postmaster.pid, got %v", err)
			}
		}

		res, err := c.Start(ctx)
		if err != nil {
			t.Fatalf("start after %s: %v", mode, err)
		}
		if want := mode != pgcluster.Fast; res.CrashRecovery != want {
			t.Errorf("start after %s: crash recovery %v, want %v", mode, res.CrashRecovery, want)
		}
		if res.StaleLockRemoved {
			t.Errorf("start after %s removed postmaster.pid; the server should have handled it", mode)
		}
		t.Logf("stop %s took %v (%d leftovers, %d killed); start took %v (crash recovery %v)",
			mode, st.Took, st.Leftovers, st.LeftoversKilled, res.Took, res.CrashRecovery)
		if _, err := committer.Exec(ctx, "SELECT 1"); err == nil {
			t.Errorf("a connection to the stopped server still works after %s", mode)
		}
	}
	check := connect(t, ctx, c)
	var committed, uncommitted int
	if err := check.QueryRow(ctx, "SELECT count(*) FILTER (WHERE committed), count(*) FILTER (WHERE NOT committed) FROM t").Scan(&committed, &uncommitted); err != nil {
		t.Fatal(err)
	}
	if committed != 3 || uncommitted != 0 {
		t.Errorf("after three stops: %d committed rows (want 3), %d uncommitted (want 0)", committed, uncommitted)
	}
}

// A backend busy computing does not notice that its postmaster was
// killed; Stop kills it after LeftoverWait, and the cluster starts again.
func TestKillReapsWhatThePostmasterLeft(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("finding a cluster's processes needs /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := cluster(t, pgcluster.Options{LeftoverWait: 500 * time.Millisecond})
	procs := c.Processes()
	if !slices.Contains(procs, c.PID()) || len(procs) < 3 {
		t.Fatalf("Processes() = %v: want the postmaster %d and its auxiliary processes", procs, c.PID())
	}
	busy := connect(t, ctx, c)
	queryDone := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctx, "SELECT count(*) FROM generate_series(1, 10000000000)")
		queryDone <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the query start
	st, err := c.Stop(ctx, pgcluster.Kill)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leftovers < 1 || st.LeftoversKilled < 1 {
		t.Errorf("SIGKILL with a query computing: %d leftovers, %d killed; want the busy backend among both", st.Leftovers, st.LeftoversKilled)
	}
	if left := c.Processes(); len(left) > 0 {
		t.Fatalf("processes %v survive Stop(Kill)", left)
	}
	if err := <-queryDone; err == nil {
		t.Error("the query of a killed backend succeeded")
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// A postmaster.pid that names a live process which is not the cluster's
// (a recycled pid) stops the server from starting; Start removes it and
// starts.
func TestStartRemovesALockFileOfAnotherProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := cluster(t, pgcluster.Options{})
	if _, err := c.Stop(ctx, pgcluster.Kill); err != nil {
		t.Fatal(err)
	}
	// A process the server's OS user may signal, so it counts as alive.
	sleeper := exec.Command("sleep", "60")
	if os.Geteuid() == 0 {
		st, err := os.Stat(c.DataDir())
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: sys.Uid, Gid: sys.Gid}}
	}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	lock := filepath.Join(c.DataDir(), "postmaster.pid")
	b, err := os.ReadFile(lock)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 2)
	if err := os.WriteFile(lock, []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"+lines[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := c.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.StaleLockRemoved {
		t.Errorf("start: StaleLockRemoved false; the server started despite a lock file naming live pid %d", sleeper.Process.Pid)
	}
	var one int
	if err := connect(t, ctx, c).QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
}

// A postmaster that dies without being asked to is reported, and its
// cluster starts again.
func TestUnexpectedExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := cluster(t, pgcluster.Options{})
	if gone, _ := c.ExitedUnexpectedly(); gone {
		t.Fatal("running cluster reported as exited")
	}
	if _, err := c.Start(ctx); err == nil || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("second Start: %v, want an error saying the postmaster is running", err)
	}
	if err := syscall.Kill(c.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Running() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	gone, how := c.ExitedUnexpectedly()
	if !gone || !strings.Contains(how, "killed") {
		t.Fatalf("ExitedUnexpectedly = %v, %q; want true, killed", gone, how)
	}
	if _, err := c.Stop(ctx, pgcluster.Kill); err != nil { // reaps what the postmaster left
		t.Fatal(err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if gone, _ := c.ExitedUnexpectedly(); gone {
		t.Error("restarted cluster still reported as exited")
	}
}

func TestInitErrors(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	if _, err := pgcluster.Init(ctx, pgcluster.Options{BinDir: empty}); err == nil || !strings.Contains(err.Error(), "initdb and postgres") {
		t.Errorf("BinDir without binaries: %v", err)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pgcluster.Init(ctx, pgcluster.Options{Dir: full}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty Dir: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "c")
	if _, err := pgcluster.Init(ctx, pgcluster.Options{Dir: dir, Settings: []string{"fsync"}}); err == nil || !strings.Contains(err.Error(), `"fsync"`) {
		t.Errorf("setting without a value: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Init left %s behind: %v", dir, err)
	}
	if os.Geteuid() == 0 {
		if _, err := pgcluster.Init(ctx, pgcluster.Options{OSUser: "no-such-user-evsnap"}); err == nil || !strings.Contains(err.Error(), "no-such-user-evsnap") {
			t.Errorf("unknown OS user: %v", err)
		}
	}
}

// A data directory of the caller's holds the cluster's data (pg_wal
// included), and Remove empties it but leaves it to the caller; a
// non-empty one is refused.
func TestOwnDataDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := t.TempDir()
	if err := os.Chmod(filepath.Dir(data), 0o755); err != nil { // the server's OS user must reach it
		t.Fatal(err)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pgcluster.Init(ctx, pgcluster.Options{DataDir: full}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty DataDir: %v", err)
	}
	c := cluster(t, pgcluster.Options{DataDir: data})
	if real, _ := filepath.EvalSymlinks(data); c.DataDir() != real {
		t.Errorf("DataDir %s, want %s", c.DataDir(), real)
	}
	for _, p := range []string{"PG_VERSION", "pg_wal", "postmaster.pid"} {
		if _, err := os.Stat(filepath.Join(data, p)); err != nil {
			t.Errorf("the data directory has no %s: %v", p, err)
		}
	}
	var one int
	if err := connect(t, ctx, c).QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(data)
	if err != nil || len(entries) > 0 {
		t.Errorf("after Remove the data directory holds %d entries (%v); want it there and empty", len(entries), err)
	}
}

func TestStopModeString(t *testing.T) {
	for m, want := range map[pgcluster.StopMode]string{pgcluster.Fast: "fast", pgcluster.Immediate: "immediate", pgcluster.Kill: "SIGKILL", 7: "StopMode(7)"} {
		if got := m.String(); got != want {
			t.Errorf("%d: %q, want %q", int(m), got, want)
		}
	}
}

// Options.Settings replace the defaults of the same name, and the command
// StartCommand prints starts the stopped cluster with them.
func TestSettingsAndStartCommand(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := cluster(t, pgcluster.Options{Settings: []string{"max_connections=50", "work_mem=8MB"}})
	show := func(name string) string {
		t.Helper()
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := show("max_connections"); got != "50" {
		t.Errorf("max_connections %s, want 50", got)
	}
	cmd := c.StartCommand()
	if strings.Count(cmd, "max_connections=") != 1 || !strings.Contains(cmd, "work_mem=8MB") {
		t.Errorf("StartCommand %q: want max_connections once and work_mem", cmd)
	}
	if _, err := c.Stop(ctx, pgcluster.Fast); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	// pg_ctl start returns once the server accepts connections.
	if got := show("log_line_prefix"); got != "%m [%p] %a " {
		t.Errorf("log_line_prefix %q after StartCommand, want the default with its spaces", got)
	}
	stop := strings.Replace(cmd, " start", " stop -m fast", 1)
	if out, err := exec.CommandContext(ctx, "sh", "-c", stop).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", stop, err, out)
	}
}
