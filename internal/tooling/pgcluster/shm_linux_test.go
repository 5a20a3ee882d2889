package pgcluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/tooling/pgcluster"
)

// shmRDOnly is SHM_RDONLY of <sys/shm.h>, which package syscall lacks.
const shmRDOnly = 0o10000

// shmID reads the shared memory segment's id from postmaster.pid (its
// seventh line: the key and the id).
func shmID(t *testing.T, dataDir string) uintptr {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		t.Fatalf("postmaster.pid has %d lines:\n%s", len(lines), b)
	}
	f := strings.Fields(lines[6])
	if len(f) != 2 {
		t.Fatalf("postmaster.pid's shared memory line %q", lines[6])
	}
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return uintptr(id)
}

// A killed postmaster's shared memory segment that something still holds
// attached makes the server refuse to start; Start waits for it to be
// released. The test holds the segment itself, and lets it go half a
// second after the cluster's processes are gone.
func TestStartWaitsForAttachedSharedMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := cluster(t, pgcluster.Options{})
	id := shmID(t, c.DataDir())
	addr, _, errno := syscall.Syscall(syscall.SYS_SHMAT, id, 0, shmRDOnly)
	if errno != 0 {
		t.Fatalf("shmat %d: %v", id, errno)
	}
	if err := syscall.Kill(c.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, pgcluster.Kill); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(500 * time.Millisecond)
		if _, _, errno := syscall.Syscall(syscall.SYS_SHMDT, addr, 0, 0); errno != 0 {
			t.Errorf("shmdt: %v", errno)
		}
	}()
	res, err := c.Start(ctx)
	<-released
	if err != nil {
		t.Fatal(err)
	}
	if res.SharedMemoryWaits == 0 {
		t.Errorf("Start: SharedMemoryWaits 0; the server started while the old segment was attached")
	}
	t.Logf("started after %d waits for the old segment", res.SharedMemoryWaits)
}
