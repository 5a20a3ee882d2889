//go:build unix && !linux

package chaos

import "errors"

// volume stands for the tmpfs of volume_linux.go, which needs Linux.
type volume struct{ dir string }

var errNoTmpfs = errors.New("the disk-full faults mount a tmpfs, which needs Linux")

func mountVolume(string, int64) (*volume, error) { return nil, errNoTmpfs }
func (v *volume) fill() (int64, error)           { return 0, errNoTmpfs }
func (v *volume) topUp() (int64, error)          { return 0, errNoTmpfs }
func (v *volume) free() error                    { return errNoTmpfs }
func (v *volume) unmount() error                 { return errNoTmpfs }

// DiskFullSkipReason says why a run has no disk-full faults.
func (c Config) DiskFullSkipReason() string { return errNoTmpfs.Error() }
