package vfs

import "os"

// Unwrapper is implemented by a File that wraps another (to count or time
// its calls, say). StartWriteback and DropWritten, which are advice about
// the operating system's file, look through it.
type Unwrapper interface {
	Unwrap() File
}

// osFile returns the *os.File under f's wrappers, if there is one.
func osFile(f File) (*os.File, bool) {
	for {
		switch v := f.(type) {
		case *os.File:
			return v, true
		case Unwrapper:
			f = v.Unwrap()
		default:
			return nil, false
		}
	}
}

// StartWriteback asks the kernel to start writing f's dirty pages in
// [off, off+n) to the disk, and returns without waiting:
// sync_file_range(SYNC_FILE_RANGE_WRITE) when f is (or wraps, see
// Unwrapper) an *os.File on Linux; nothing for other files or systems,
// or filesystems that refuse it. It makes nothing durable (Sync does). A
// writer of a large file calls it as it goes, so that the disk works
// while the writer does and the final Sync has little left to write.
func StartWriteback(f File, off, n int64) error {
	return startWriteback(f, off, n)
}

// DropWritten waits until f's pages in [off, off+n) are on the disk and
// drops them from the page cache: sync_file_range with
// SYNC_FILE_RANGE_WAIT_BEFORE|WRITE|WAIT_AFTER, then
// posix_fadvise(POSIX_FADV_DONTNEED), when f is (or wraps) an *os.File on
// Linux; nothing for other files or systems, or filesystems that refuse
// it. It makes nothing durable (Sync does). An error writing the pages is
// returned here, and a later Sync of the same handle may no longer report
// it: treat it as a failed write.
//
// A writer of a large file that nobody reads soon calls it on what it
// wrote a step earlier: its next writes then reuse the pages it freed,
// where otherwise the kernel reclaims memory from the rest of the page
// cache for every page written, at the writer's expense.
func DropWritten(f File, off, n int64) error {
	return dropWritten(f, off, n)
}
