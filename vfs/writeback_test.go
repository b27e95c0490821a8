package vfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteback: writes handed to the disk early and dropped from the
// page cache read back the same once synced, on the operating system's
// files and on others (where both calls do nothing).
func TestWriteback(t *testing.T) {
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i*31 + i>>12)
	}
	for _, c := range []struct {
		name string
		fs   FS
		dir  string
	}{
		{"os", Default, t.TempDir()},
		{"mem", NewMem(), "/d"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.fs.MkdirAll(c.dir, 0o755); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(c.dir, "f")
			f, err := c.fs.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			const step = 1 << 20
			for off := int64(0); off < int64(len(data)); off += step {
				if _, err := f.WriteAt(data[off:off+step], off); err != nil {
					t.Fatal(err)
				}
				if err := StartWriteback(f, off, step); err != nil {
					t.Fatalf("StartWriteback at %d: %v", off, err)
				}
				if off >= step {
					if err := DropWritten(f, off-step, step); err != nil {
						t.Fatalf("DropWritten at %d: %v", off-step, err)
					}
				}
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
	// A file that is not the system's or not open for writing: advice
	// only, no error.
	r, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := StartWriteback(r, 0, 1<<20); err != nil {
		t.Errorf("StartWriteback on %s: %v", os.DevNull, err)
	}
	if err := DropWritten(r, 0, 1<<20); err != nil {
		t.Errorf("DropWritten on %s: %v", os.DevNull, err)
	}
}

type unwrapping struct{ File }

func (u unwrapping) Unwrap() File { return u.File }

func TestOSFileUnwraps(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, ok := osFile(unwrapping{unwrapping{f}}); !ok || got != f {
		t.Errorf("osFile of a twice-wrapped *os.File = %v, %v", got, ok)
	}
	m := NewMem()
	mf, err := m.Create("/x")
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	if got, ok := osFile(unwrapping{mf}); ok {
		t.Errorf("osFile of a wrapped MemFS file = %v, want none", got)
	}
}
