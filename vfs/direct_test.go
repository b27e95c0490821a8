package vfs

import (
	"bytes"
	"path/filepath"
	"testing"
	"unsafe"
)

// alignedBuf returns n bytes starting at a multiple of DirectAlign.
func alignedBuf(n int) []byte {
	b := make([]byte, n+DirectAlign)
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (DirectAlign - 1))
	return b[skip : skip+n]
}

type wrapped struct{ File }

func (w wrapped) Unwrap() File { return w.File }

// TestDirectWriter: aligned writes, writes from unaligned memory or of
// unaligned lengths, and writes after Close all land, on the system's
// files (directly where aligned, if the filesystem takes O_DIRECT) and on
// others (where nothing is direct).
func TestDirectWriter(t *testing.T) {
	const mib = 1 << 20
	data := alignedBuf(3*mib + 1000)
	dir := t.TempDir()
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	for _, c := range []struct {
		name   string
		fs     FS
		dir    string
		wrap   bool
		direct bool
	}{
		{"os", Default, dir, false, canDirect(dir)},
		{"os-wrapped", Default, dir, true, canDirect(dir)},
		{"mem", NewMem(), "/d", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.fs.MkdirAll(c.dir, 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := c.fs.Create(filepath.Join(c.dir, c.name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var target File = f
			if c.wrap {
				target = wrapped{f}
			}
			w := NewDirectWriter(target)
			if w.Direct() != c.direct {
				t.Fatalf("Direct() = %v, want %v", w.Direct(), c.direct)
			}
			writes := []struct{ from, to int }{
				{0, mib},             // aligned: direct
				{mib + 1, 2 * mib},   // unaligned memory and offset
				{mib, mib + 1},       // one byte
				{2 * mib, 3 * mib},   // aligned again
				{3 * mib, len(data)}, // the unaligned tail
			}
			for _, wr := range writes {
				if n, err := w.WriteAt(data[wr.from:wr.to], int64(wr.from)); err != nil || n != wr.to-wr.from {
					t.Fatalf("WriteAt [%d, %d) = %d, %v", wr.from, wr.to, n, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if w.Direct() {
				t.Fatal("Direct after Close")
			}
			// After Close, writes go through the file.
			if _, err := w.WriteAt(data[:mib], 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data)+1)
			n, _ := f.ReadAt(got, 0)
			if !bytes.Equal(got[:n], data) {
				t.Fatalf("read back %d bytes, not the %d written", n, len(data))
			}
		})
	}
}
