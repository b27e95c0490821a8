package vfs

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// Op names a filesystem operation, for an Injector.
type Op int

// Operations an Injector is asked about.
const (
	// OpCreate is FS.Create.
	OpCreate Op = iota + 1
	// OpOpen is FS.Open and FS.OpenRW.
	OpOpen
	// OpOpenDir is FS.OpenDir.
	OpOpenDir
	// OpRead is File.Read and File.ReadAt.
	OpRead
	// OpWrite is File.Write and File.WriteAt.
	OpWrite
	// OpSync is File.Sync, on a file or a directory.
	OpSync
	// OpTruncate is File.Truncate.
	OpTruncate
	// OpStat is FS.Stat, FS.Lstat and File.Stat.
	OpStat
	// OpRename is FS.Rename; the path is the new name.
	OpRename
	// OpLink is FS.Link; the path is the new name.
	OpLink
	// OpRemove is FS.Remove and FS.RemoveAll.
	OpRemove
	// OpMkdir is FS.MkdirAll.
	OpMkdir
	// OpReadDir is FS.ReadDir.
	OpReadDir
)

var opNames = [...]string{
	OpCreate:   "create",
	OpOpen:     "open",
	OpOpenDir:  "opendir",
	OpRead:     "read",
	OpWrite:    "write",
	OpSync:     "sync",
	OpTruncate: "truncate",
	OpStat:     "stat",
	OpRename:   "rename",
	OpLink:     "link",
	OpRemove:   "remove",
	OpMkdir:    "mkdir",
	OpReadDir:  "readdir",
}

// String returns the operation's lower-case name, such as "sync".
func (o Op) String() string {
	if o > 0 && int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Injector decides whether a filesystem operation fails. MaybeError is
// called before op runs on path (the new name, for Rename and Link); a
// non-nil error is returned to the caller instead of running op. It may
// be called from several goroutines at once.
type Injector interface {
	MaybeError(op Op, path string) error
}

// InjectorFunc adapts a function to the Injector interface.
type InjectorFunc func(op Op, path string) error

// MaybeError calls f(op, path).
func (f InjectorFunc) MaybeError(op Op, path string) error { return f(op, path) }

// FailIf returns an Injector that fails every operation for which pred
// returns true with an error wrapping ErrInjected. pred may be called
// concurrently.
func FailIf(pred func(op Op, path string) bool) Injector {
	return InjectorFunc(func(op Op, path string) error {
		if pred(op, path) {
			return fmt.Errorf("%w: %s %s", ErrInjected, op, path)
		}
		return nil
	})
}

// DiskFull is an Injector that, while full, fails the operations that need
// free space (OpCreate, OpWrite, OpMkdir, OpLink) with an error wrapping
// both syscall.ENOSPC and ErrInjected. Truncate, which a writer uses to
// roll back a failed write, still works, as do removals, which free
// space. The zero value is a disk with space. It is safe for concurrent
// use.
type DiskFull struct {
	full atomic.Bool
}

// SetFull fills (true) or frees (false) the disk.
func (d *DiskFull) SetFull(full bool) { d.full.Store(full) }

// MaybeError implements Injector.
func (d *DiskFull) MaybeError(op Op, path string) error {
	if !d.full.Load() {
		return nil
	}
	switch op {
	case OpCreate, OpWrite, OpMkdir, OpLink:
		return fmt.Errorf("%w: %s %s: %w", ErrInjected, op, path, syscall.ENOSPC)
	}
	return nil
}

// WithInjector returns fs with inj consulted before every operation,
// including operations on the Files it opens. The result is safe for
// concurrent use if fs and inj are.
func WithInjector(fs FS, inj Injector) FS {
	return &injectFS{fs: fs, inj: inj}
}

type injectFS struct {
	fs  FS
	inj Injector
}

func (f *injectFS) wrap(file File, err error) (File, error) {
	if err != nil {
		return nil, err
	}
	return &injectFile{File: file, inj: f.inj}, nil
}

func (f *injectFS) Create(name string) (File, error) {
	if err := f.inj.MaybeError(OpCreate, name); err != nil {
		return nil, err
	}
	return f.wrap(f.fs.Create(name))
}

func (f *injectFS) Open(name string) (File, error) {
	if err := f.inj.MaybeError(OpOpen, name); err != nil {
		return nil, err
	}
	return f.wrap(f.fs.Open(name))
}

func (f *injectFS) OpenRW(name string) (File, error) {
	if err := f.inj.MaybeError(OpOpen, name); err != nil {
		return nil, err
	}
	return f.wrap(f.fs.OpenRW(name))
}

func (f *injectFS) OpenDir(name string) (File, error) {
	if err := f.inj.MaybeError(OpOpenDir, name); err != nil {
		return nil, err
	}
	return f.wrap(f.fs.OpenDir(name))
}

func (f *injectFS) Remove(name string) error {
	if err := f.inj.MaybeError(OpRemove, name); err != nil {
		return err
	}
	return f.fs.Remove(name)
}

func (f *injectFS) RemoveAll(name string) error {
	if err := f.inj.MaybeError(OpRemove, name); err != nil {
		return err
	}
	return f.fs.RemoveAll(name)
}

func (f *injectFS) Rename(oldname, newname string) error {
	if err := f.inj.MaybeError(OpRename, newname); err != nil {
		return err
	}
	return f.fs.Rename(oldname, newname)
}

func (f *injectFS) Link(oldname, newname string) error {
	if err := f.inj.MaybeError(OpLink, newname); err != nil {
		return err
	}
	return f.fs.Link(oldname, newname)
}

func (f *injectFS) MkdirAll(name string, perm os.FileMode) error {
	if err := f.inj.MaybeError(OpMkdir, name); err != nil {
		return err
	}
	return f.fs.MkdirAll(name, perm)
}

func (f *injectFS) Stat(name string) (os.FileInfo, error) {
	if err := f.inj.MaybeError(OpStat, name); err != nil {
		return nil, err
	}
	return f.fs.Stat(name)
}

func (f *injectFS) Lstat(name string) (os.FileInfo, error) {
	if err := f.inj.MaybeError(OpStat, name); err != nil {
		return nil, err
	}
	return f.fs.Lstat(name)
}

func (f *injectFS) ReadDir(name string) ([]string, error) {
	if err := f.inj.MaybeError(OpReadDir, name); err != nil {
		return nil, err
	}
	return f.fs.ReadDir(name)
}

// injectFile consults inj before each operation on File. Close is never
// failed, so callers can always release the underlying file.
type injectFile struct {
	File
	inj Injector
}

func (f *injectFile) Read(p []byte) (int, error) {
	if err := f.inj.MaybeError(OpRead, f.Name()); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}

func (f *injectFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.inj.MaybeError(OpRead, f.Name()); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *injectFile) Write(p []byte) (int, error) {
	if err := f.inj.MaybeError(OpWrite, f.Name()); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *injectFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.inj.MaybeError(OpWrite, f.Name()); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *injectFile) Sync() error {
	if err := f.inj.MaybeError(OpSync, f.Name()); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *injectFile) Truncate(size int64) error {
	if err := f.inj.MaybeError(OpTruncate, f.Name()); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

func (f *injectFile) Stat() (os.FileInfo, error) {
	if err := f.inj.MaybeError(OpStat, f.Name()); err != nil {
		return nil, err
	}
	return f.File.Stat()
}
