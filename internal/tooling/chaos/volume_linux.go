//go:build linux

package chaos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// volume is a tmpfs of the run's own under a server's store: the disk a
// disk-full fault fills. It is mounted with a size far above what a run
// writes (a tmpfs takes memory only for what it holds). To fill it, the
// fault first shrinks it to what is in use plus fillMargin and then
// writes a filler file until the kernel says ENOSPC, so a fill costs at
// most that margin of memory whatever the size; freeing it deletes the
// filler and gives the size back.
type volume struct {
	dir    string
	size   int64
	filler string

	mu        sync.Mutex
	f         *os.File // the filler while the volume is full
	unmounted bool
}

// volumeSource is the source name of the suite's mounts: what
// /proc/mounts shows for them (grep evsnap-chaos /proc/mounts finds any
// left by a suite that was killed).
const volumeSource = "evsnap-chaos"

// fillMargin is what a fill leaves free before the filler takes it.
const fillMargin = 1 << 20

const volumeFlags = syscall.MS_NOSUID | syscall.MS_NODEV

// mountVolume mounts a tmpfs of size bytes on dir, which must exist.
func mountVolume(dir string, size int64) (*volume, error) {
	if err := syscall.Mount(volumeSource, dir, "tmpfs", volumeFlags, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return nil, fmt.Errorf("mount a tmpfs on %s: %w", dir, err)
	}
	return &volume{dir: dir, size: size, filler: filepath.Join(dir, ".evsnap-chaos-filler")}, nil
}

// used is how many bytes the volume's files take.
func (v *volume) used() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(v.dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", v.dir, err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, nil
}

func (v *volume) resize(size int64) error {
	if err := syscall.Mount(volumeSource, v.dir, "tmpfs", syscall.MS_REMOUNT|volumeFlags, fmt.Sprintf("size=%d", size)); err != nil {
		return fmt.Errorf("resize the tmpfs on %s to %d bytes: %w", v.dir, size, err)
	}
	return nil
}

// fill shrinks the volume to what is in use plus fillMargin and writes
// the filler until the file system is full (ENOSPC). It returns the
// filler's size.
func (v *volume) fill() (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.f != nil {
		return 0, fmt.Errorf("%s is full already", v.dir)
	}
	// The servers write on: what is in use may grow between the statfs
	// and the remount, which then refuses a size below it (EINVAL).
	for attempt := 0; ; attempt++ {
		used, err := v.used()
		if err != nil {
			return 0, err
		}
		err = v.resize(used + fillMargin)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EINVAL) || attempt == 20 {
			return 0, err
		}
	}
	f, err := os.OpenFile(v.filler, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("filler: %w", err)
	}
	v.f = f
	return v.topUpLocked()
}

// topUp writes to the filler until the file system is full again (a
// server may have deleted files meanwhile) and returns how much it
// wrote. It does nothing unless the volume is full.
func (v *volume) topUp() (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.topUpLocked()
}

var zeros = make([]byte, 64<<10)

func (v *volume) topUpLocked() (int64, error) {
	if v.f == nil {
		return 0, nil
	}
	var total int64
	for {
		n, err := v.f.Write(zeros)
		total += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("filler: %w", err)
		}
		if total > 1<<30 {
			return total, fmt.Errorf("filler: wrote %d bytes to %s and it is not full", total, v.dir)
		}
	}
}

// free deletes the filler and gives the volume its size back.
func (v *volume) free() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var errs []error
	if v.f != nil {
		errs = append(errs, v.f.Close())
		v.f = nil
	}
	if err := os.Remove(v.filler); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	errs = append(errs, v.resize(v.size))
	return errors.Join(errs...)
}

// unmount frees the volume and unmounts it, lazily if a process still
// uses it (one the suite could not stop). It may be called more than
// once.
func (v *volume) unmount() error {
	v.mu.Lock()
	done := v.unmounted
	v.unmounted = true
	v.mu.Unlock()
	if done {
		return nil
	}
	_ = v.free()
	err := syscall.Unmount(v.dir, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(v.dir, syscall.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("unmount the tmpfs on %s: %w", v.dir, err)
	}
	return nil
}

var (
	tmpfsOnce   sync.Once
	tmpfsReason string
)

// DiskFullSkipReason says why a run has no disk-full faults ("" when it
// has them): they mount a tmpfs under the servers' stores, which needs
// root (CAP_SYS_ADMIN). It tries once, with a tmpfs of a few pages.
func (c Config) DiskFullSkipReason() string {
	tmpfsOnce.Do(func() {
		if os.Geteuid() != 0 {
			tmpfsReason = "mounting a tmpfs under the stores needs root"
			return
		}
		dir, err := os.MkdirTemp("", "evsnap-chaos-probe-*")
		if err != nil {
			tmpfsReason = err.Error()
			return
		}
		defer os.Remove(dir)
		v, err := mountVolume(dir, 64<<10)
		if err != nil {
			tmpfsReason = err.Error()
			return
		}
		if err := v.unmount(); err != nil {
			tmpfsReason = err.Error()
		}
	})
	return tmpfsReason
}
