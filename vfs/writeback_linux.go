package vfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func startWriteback(f File, off, n int64) error {
	of, ok := osFile(f)
	if !ok {
		return nil
	}
	return syncRange(of, off, n, unix.SYNC_FILE_RANGE_WRITE)
}

func dropWritten(f File, off, n int64) error {
	of, ok := osFile(f)
	if !ok {
		return nil
	}
	err := syncRange(of, off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	if err != nil {
		return err
	}
	if err := unix.Fadvise(int(of.Fd()), off, n, unix.FADV_DONTNEED); err != nil && !unsupported(err) {
		return &os.PathError{Op: "fadvise", Path: of.Name(), Err: err}
	}
	return nil
}

func syncRange(f *os.File, off, n int64, flags int) error {
	for {
		err := unix.SyncFileRange(int(f.Fd()), off, n, flags)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil && !unsupported(err) {
			return &os.PathError{Op: "sync_file_range", Path: f.Name(), Err: err}
		}
		return nil
	}
}

// unsupported reports whether err means that the file or filesystem does
// not take the call, which is then skipped: it is only advice.
func unsupported(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESPIPE)
}
