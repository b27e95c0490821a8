package vfs

import (
	"errors"
	"io"
	"os"
)

// Errors returned by this package's implementations. Test with errors.Is.
var (
	// ErrInjected is wrapped by every error an injector made by FailIf or
	// DiskFull returns, so tests can tell injected failures from real ones.
	ErrInjected = errors.New("vfs: injected error")
	// ErrCrashed is returned by a MemFS File opened before MemFS.Crash.
	ErrCrashed = errors.New("vfs: file invalidated by a simulated crash")
)

// File is an open file.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	io.Closer
	// Sync makes the file's contents durable.
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Stat returns the file's metadata.
	Stat() (os.FileInfo, error)
	// Name returns the path the file was opened with.
	Name() string
}

// FS is a filesystem. Paths are the host's.
type FS interface {
	// Create creates or truncates the named file for reading and writing.
	Create(name string) (File, error)
	// Open opens the named file for reading.
	Open(name string) (File, error)
	// OpenRW opens an existing file for reading and writing, without
	// truncating it.
	OpenRW(name string) (File, error)
	// OpenDir opens a directory so that Sync makes its entries durable.
	OpenDir(name string) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// RemoveAll removes a path and everything below it.
	RemoveAll(name string) error
	// Rename renames oldname to newname, replacing newname if it exists.
	Rename(oldname, newname string) error
	// Link creates newname as a hard link to oldname.
	Link(oldname, newname string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(name string, perm os.FileMode) error
	// Stat returns a path's metadata; Lstat does not follow a symlink.
	Stat(name string) (os.FileInfo, error)
	Lstat(name string) (os.FileInfo, error)
	// ReadDir lists a directory's entry names, sorted.
	ReadDir(name string) ([]string, error)
}
