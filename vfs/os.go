package vfs

import (
	"os"
	"syscall"
)

// Default is the operating system's filesystem. It is stateless and safe
// for concurrent use; its files are *os.File values.
var Default FS = osFS{}

// osFS implements FS with package os.
type osFS struct{}

var _ FS = osFS{}

// Create creates or truncates name with mode 0666 (before umask).
func (osFS) Create(name string) (File, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// Open opens name read-only.
func (osFS) Open(name string) (File, error) {
	return os.Open(name)
}

// OpenRW opens an existing file for reading and writing.
func (osFS) OpenRW(name string) (File, error) {
	return os.OpenFile(name, os.O_RDWR, 0)
}

// OpenDir opens a directory read-only; fsync on such a descriptor makes
// the directory's entries durable.
func (osFS) OpenDir(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !fi.IsDir() {
		_ = f.Close()
		return nil, &os.PathError{Op: "opendir", Path: name, Err: syscall.ENOTDIR}
	}
	return f, nil
}

func (osFS) Remove(name string) error               { return os.Remove(name) }
func (osFS) RemoveAll(name string) error            { return os.RemoveAll(name) }
func (osFS) Rename(oldname, newname string) error   { return os.Rename(oldname, newname) }
func (osFS) Link(oldname, newname string) error     { return os.Link(oldname, newname) }
func (osFS) Stat(name string) (os.FileInfo, error)  { return os.Stat(name) }
func (osFS) Lstat(name string) (os.FileInfo, error) { return os.Lstat(name) }

func (osFS) MkdirAll(name string, perm os.FileMode) error {
	return os.MkdirAll(name, perm)
}

// ReadDir returns the names in directory name, sorted.
func (osFS) ReadDir(name string) ([]string, error) {
	ents, err := os.ReadDir(name) // sorted by name
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}
