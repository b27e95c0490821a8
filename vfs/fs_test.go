package vfs

import (
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
)

// implementations returns each FS under test with a directory to work in.
func implementations(t *testing.T) map[string]func(t *testing.T) (FS, string) {
	return map[string]func(t *testing.T) (FS, string){
		"os":  func(t *testing.T) (FS, string) { return Default, t.TempDir() },
		"mem": func(t *testing.T) (FS, string) { return NewMem(), "/data" },
	}
}

func mustWrite(t *testing.T, fsys FS, name, data string) {
	t.Helper()
	f, err := fsys.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, fsys FS, name string) string {
	t.Helper()
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFSConformance runs the same operations against every implementation
// and checks they agree on results and errors.
func TestFSConformance(t *testing.T) {
	for name, mk := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			fsys, root := mk(t)
			dir := filepath.Join(root, "a", "b")
			if err := MkdirAllDurable(fsys, dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := MkdirAllDurable(fsys, dir, 0o755); err != nil {
				t.Fatalf("second MkdirAllDurable: %v", err)
			}
			p := filepath.Join(dir, "f")
			mustWrite(t, fsys, p, "hello world")
			if got := readAll(t, fsys, p); got != "hello world" {
				t.Fatalf("read %q", got)
			}

			// ReadAt, WriteAt, Truncate, Stat.
			f, err := fsys.OpenRW(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("W"), 6); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if n, err := f.ReadAt(buf, 6); n != 5 || err != nil {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
			if string(buf) != "World" {
				t.Fatalf("ReadAt read %q", buf)
			}
			if n, err := f.ReadAt(buf, 8); n != 3 || err != io.EOF {
				t.Fatalf("ReadAt past end = %d, %v; want 3, EOF", n, err)
			}
			if err := f.Truncate(5); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(7); err != nil {
				t.Fatal(err)
			}
			fi, err := f.Stat()
			if err != nil || fi.Size() != 7 || fi.IsDir() || fi.Name() != "f" {
				t.Fatalf("Stat = %v, %v", fi, err)
			}
			if f.Name() != p {
				t.Fatalf("Name = %q, want %q", f.Name(), p)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, fsys, p); got != "hello\x00\x00" {
				t.Fatalf("after truncate: %q", got)
			}

			// A read-only file refuses writes.
			ro, err := fsys.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ro.Write([]byte("x")); err == nil {
				t.Fatal("write to read-only file succeeded")
			}
			ro.Close()

			// ReadDir is sorted; Link and Rename.
			for _, n := range []string{"c", "b", "a"} {
				mustWrite(t, fsys, filepath.Join(dir, n), n)
			}
			if err := fsys.Link(filepath.Join(dir, "a"), filepath.Join(dir, "a2")); err != nil {
				t.Fatal(err)
			}
			if err := fsys.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Link onto existing = %v", err)
			}
			if err := fsys.Rename(filepath.Join(dir, "c"), filepath.Join(dir, "b")); err != nil {
				t.Fatal(err)
			}
			names, err := fsys.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"a", "a2", "b", "f"}; !slices.Equal(names, want) {
				t.Fatalf("ReadDir = %v, want %v", names, want)
			}
			if got := readAll(t, fsys, filepath.Join(dir, "b")); got != "c" {
				t.Fatalf("renamed file holds %q", got)
			}
			if got := readAll(t, fsys, filepath.Join(dir, "a2")); got != "a" {
				t.Fatalf("link holds %q", got)
			}

			// Errors.
			if _, err := fsys.Open(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Open missing = %v", err)
			}
			if _, err := fsys.Stat(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Stat missing = %v", err)
			}
			if _, err := fsys.OpenDir(p); err == nil {
				t.Fatal("OpenDir of a file succeeded")
			}
			if err := fsys.Remove(filepath.Join(root, "a")); err == nil {
				t.Fatal("Remove of non-empty dir succeeded")
			}
			if err := fsys.Remove(filepath.Join(dir, "a")); err != nil {
				t.Fatal(err)
			}
			if _, err := fsys.Lstat(filepath.Join(dir, "a")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Lstat removed = %v", err)
			}
			if err := SyncDir(fsys, dir); err != nil {
				t.Fatal(err)
			}

			// WriteFileAtomic replaces and leaves no temporary file.
			q := filepath.Join(dir, "atomic")
			for _, v := range []string{"one", "two"} {
				if err := WriteFileAtomic(fsys, q, []byte(v)); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, fsys, q); got != v {
					t.Fatalf("atomic file holds %q, want %q", got, v)
				}
			}
			if _, err := fsys.Stat(q + TempSuffix); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("temporary file left: %v", err)
			}

			if err := fsys.RemoveAll(filepath.Join(root, "a")); err != nil {
				t.Fatal(err)
			}
			if err := fsys.RemoveAll(filepath.Join(root, "a")); err != nil {
				t.Fatalf("RemoveAll of missing path: %v", err)
			}
			if _, err := fsys.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Stat after RemoveAll = %v", err)
			}
		})
	}
}
