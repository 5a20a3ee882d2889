//go:build unix

package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is one child program, restartable. Every incarnation runs in
// its own process group (so a Ctrl-C on the terminal reaches only the
// suite, which shuts the children down itself) and gets SIGKILL if the
// suite dies. Output is appended to a log file.
type process struct {
	name    string
	path    string
	args    []string
	env     []string
	dir     string
	logPath string
	// stdoutPath, when set, receives the standard output instead of the
	// log; stdoutTee, when set, receives a copy of it.
	stdoutPath string
	stdoutTee  io.Writer

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current incarnation has exited
	state    *os.ProcessState
	waitErr  error
	expected bool // the suite asked the current incarnation to exit
	starts   int
	exitedAt time.Time
}

// start starts a new incarnation; the previous one must have exited.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s: start: still running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log: %w", p.name, err)
	}
	p.starts++
	fmt.Fprintf(f, "=== evsnap-chaos: %s start #%d at %s\n", p.name, p.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stderr = f
	var stdout io.Writer = f
	var outFile *os.File
	if p.stdoutPath != "" {
		if outFile, err = os.OpenFile(p.stdoutPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			f.Close()
			return fmt.Errorf("%s: stdout: %w", p.name, err)
		}
		stdout = outFile
	}
	if p.stdoutTee != nil {
		stdout = io.MultiWriter(stdout, p.stdoutTee)
	}
	cmd.Stdout = stdout
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		f.Close()
		if outFile != nil {
			outFile.Close()
		}
		return fmt.Errorf("%s: start %s: %w", p.name, p.path, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.state, p.waitErr, p.expected, p.exitedAt = cmd, done, nil, nil, false, time.Time{}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.state, p.waitErr, p.exitedAt = cmd.ProcessState, err, time.Now()
		fmt.Fprintf(f, "=== evsnap-chaos: %s exited at %s: %v\n", p.name, p.exitedAt.Format(time.RFC3339Nano), describeExit(cmd.ProcessState, err))
		f.Close()
		if outFile != nil {
			outFile.Close()
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// exitTime returns when the current incarnation exited (zero if it runs).
func (p *process) exitTime() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitedAt
}

// running reports whether the current incarnation is alive.
func (p *process) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
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

// exitedUnexpectedly reports whether the current incarnation exited
// without the suite asking it to, and how.
func (p *process) exitedUnexpectedly() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil || p.expected {
		return false, ""
	}
	select {
	case <-p.done:
		return true, describeExit(p.state, p.waitErr)
	default:
		return false, ""
	}
}

// signal marks the exit as expected and signals the process (its group
// for SIGKILL, so nothing it started survives).
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return fmt.Errorf("%s: not started", p.name)
	}
	p.expected = true
	select {
	case <-p.done:
		return nil
	default:
	}
	pid := p.cmd.Process.Pid
	if sig == syscall.SIGKILL {
		if err := syscall.Kill(-pid, sig); err == nil {
			return nil
		}
	}
	return syscall.Kill(pid, sig)
}

// wait waits up to timeout for the current incarnation to exit and returns
// its exit code (-1 when killed by a signal) and whether it exited.
func (p *process) wait(timeout time.Duration) (code int, exited bool) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return 0, true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.ExitCode(), true
}

// stop asks the process to exit with sig and waits up to timeout, then
// kills it. It returns the exit code of the exit it asked for (-1 for a
// signal), whether that happened in time, and how long it took.
func (p *process) stop(sig syscall.Signal, timeout time.Duration) (code int, inTime bool, took time.Duration) {
	start := time.Now()
	if !p.running() {
		c, _ := p.wait(0)
		return c, true, 0
	}
	if err := p.signal(sig); err != nil {
		return -1, false, 0
	}
	code, inTime = p.wait(timeout)
	took = time.Since(start)
	if !inTime {
		p.kill()
	}
	return code, inTime, took
}

// kill sends SIGKILL to the process group and waits for the exit.
func (p *process) kill() {
	if p.running() {
		_ = p.signal(syscall.SIGKILL)
	}
	p.wait(10 * time.Second)
}

// pid returns the current incarnation's process id (0 if never started).
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func describeExit(st *os.ProcessState, err error) string {
	if st == nil {
		if err != nil {
			return err.Error()
		}
		return "unknown"
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	s := fmt.Sprintf("exit status %d", st.ExitCode())
	if err != nil && !errors.As(err, new(*exec.ExitError)) {
		s += " (" + err.Error() + ")"
	}
	return s
}

// runOnce runs a program to completion within timeout and returns its
// standard output, standard error and exit code.
func runOnce(ctx context.Context, timeout time.Duration, dir string, env []string, path string, args ...string) (stdout, stderr string, code int, err error) {
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return "", "", -1, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err = <-done:
	case <-t.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.String(), errb.String(), -1, fmt.Errorf("%s %v: timed out after %v", path, args, timeout)
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.String(), errb.String(), -1, fmt.Errorf("%s %v: %w", path, args, ctx.Err())
	}
	if err != nil && !errors.As(err, new(*exec.ExitError)) {
		return out.String(), errb.String(), -1, err
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode(), nil
}
