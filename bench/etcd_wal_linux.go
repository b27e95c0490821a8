package main

import (
	"os"
	"syscall"
)

// preallocate allocates size bytes for f and extends it to them, as etcd's
// fileutil.Preallocate does, so that appends do not change the file's size.
func preallocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if err == syscall.ENOTSUP || err == syscall.EOPNOTSUPP {
		return f.Truncate(size) // as etcd falls back to
	}
	return err
}
