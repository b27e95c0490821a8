package vfs

import (
	"errors"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openDirect opens f again, through /proc/self/fd, with O_DIRECT: a new
// open file description, so f's own flags do not change.
func openDirect(f File) *os.File {
	of, ok := osFile(f)
	if !ok {
		return nil
	}
	d, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(of.Fd())), os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return d
}

func aligned(p []byte, off int64) bool {
	return off%DirectAlign == 0 && len(p)%DirectAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%DirectAlign == 0
}

// refused reports whether a direct write failed because the file or the
// filesystem does not take direct I/O (or these addresses), so that a
// write through the page cache can do it.
func refused(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)
}
