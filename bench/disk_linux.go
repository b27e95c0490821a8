package main

import (
	"os"
	"syscall"
	"unsafe"
)

var fdatasync = func(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// seqWriteDirect writes total bytes in 1 MiB O_DIRECT writes and fsyncs
// once at the end, as `dd bs=1M oflag=direct conv=fsync` does, and
// returns MiB/s: the disk's sequential write bandwidth without the page
// cache.
func seqWriteDirect(name string, total int64) (float64, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_DIRECT, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	const align = 4096
	raw := make([]byte, 1<<20+align)
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(raw))) & (align - 1))
	return timeWrites(f, raw[skip:skip+1<<20], total, false)
}
