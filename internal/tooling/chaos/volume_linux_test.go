//go:build linux

package chaos

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A filled volume refuses new data with ENOSPC whatever its size, costs
// at most the margin to fill, and takes data again once freed; unmount
// leaves the directory empty. Mounting needs root.
func TestVolumeFillAndFree(t *testing.T) {
	if reason := (Config{}).DiskFullSkipReason(); reason != "" {
		t.Skip(reason)
	}
	dir := t.TempDir()
	v, err := mountVolume(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.unmount(); err != nil {
			t.Error(err)
		}
	})
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(data, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func() error {
		f, err := os.OpenFile(data, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Write(make([]byte, 256<<10))
		return err
	}
	filler, err := v.fill()
	if err != nil {
		t.Fatal(err)
	}
	if filler <= 0 || filler > fillMargin {
		t.Errorf("filler %d bytes, want some and at most the margin %d", filler, fillMargin)
	}
	if err := write(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write to a full volume: %v, want ENOSPC", err)
	}
	// Space freed by a server is taken again by the top-up.
	if err := os.Truncate(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if n, err := v.topUp(); err != nil || n < 1<<20 {
		t.Errorf("top-up wrote %d bytes (%v), want the 2 MiB freed", n, err)
	}
	if err := write(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write after the top-up: %v, want ENOSPC", err)
	}
	if err := v.free(); err != nil {
		t.Fatal(err)
	}
	if err := write(); err != nil {
		t.Fatalf("write after free: %v", err)
	}
	if _, err := os.Stat(v.filler); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("filler still there after free: %v", err)
	}
	if err := v.unmount(); err != nil {
		t.Fatal(err)
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), " "+dir+" ") {
		t.Errorf("%s still mounted", dir)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%s holds %d entries after the unmount", dir, len(entries))
	}
}
