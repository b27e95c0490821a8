package vfs

import "os"

// DirectAlign is the alignment, in bytes, of the memory, the file offset
// and the length of a write that DirectWriter sends past the page cache.
const DirectAlign = 4096

// DirectWriter writes a file that nobody will read soon, such as a
// downloaded snapshot file: a write whose memory, offset and length are
// multiples of DirectAlign goes straight to the disk (O_DIRECT on Linux),
// past the page cache; every other write, and every write when direct I/O
// is not available (not an operating-system file, see Unwrapper; another
// system; a filesystem that refuses it), goes through the file as usual.
// It makes nothing durable: Sync the file afterwards, as for any write.
type DirectWriter struct {
	file   File
	direct *os.File // a second descriptor, opened with O_DIRECT; nil: no direct I/O
}

// NewDirectWriter returns a DirectWriter for f, which must stay open
// while it is used. Close it before f.
func NewDirectWriter(f File) *DirectWriter {
	return &DirectWriter{file: f, direct: openDirect(f)}
}

// Direct reports whether w sends aligned writes past the page cache.
func (w *DirectWriter) Direct() bool { return w.direct != nil }

// WriteAt writes p at off, directly when p, off and len(p) are aligned.
func (w *DirectWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.direct != nil && len(p) > 0 && aligned(p, off) {
		n, err := w.direct.WriteAt(p, off)
		if err == nil || !refused(err) {
			return n, err
		}
		// The filesystem refuses this write (or all of them): write
		// through the page cache from now on.
		_ = w.direct.Close()
		w.direct = nil
		if n > 0 {
			m, err := w.file.WriteAt(p[n:], off+int64(n))
			return n + m, err
		}
	}
	return w.file.WriteAt(p, off)
}

// Close releases the direct descriptor; the file stays open.
func (w *DirectWriter) Close() error {
	if w.direct == nil {
		return nil
	}
	err := w.direct.Close()
	w.direct = nil
	return err
}
