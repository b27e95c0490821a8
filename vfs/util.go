package vfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// TempSuffix is appended to a file's name to form the temporary name that
// WriteFileAtomic writes before renaming it into place. A file with this
// suffix found when a store opens is a leftover of an interrupted write.
const TempSuffix = ".tmp"

// SyncDir makes the entries of directory dir durable: files created,
// renamed or removed in it survive a crash once SyncDir returns.
func SyncDir(fs FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// MkdirAllDurable creates dir and any missing parents, like FS.MkdirAll,
// and syncs the parent of every directory it creates so they survive a
// crash. An existing directory is left alone.
func MkdirAllDurable(fs FS, dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; {
		fi, err := fs.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return &os.PathError{Op: "mkdir", Path: d, Err: syscall.ENOTDIR}
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	if len(missing) == 0 {
		return nil
	}
	if err := fs.MkdirAll(dir, perm); err != nil {
		return err
	}
	// missing runs from dir up; sync each created directory's parent.
	for _, d := range missing {
		if err := SyncDir(fs, filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// WriteFileAtomic durably replaces the contents of name with data: it
// writes name+TempSuffix, syncs it, renames it over name and syncs the
// parent directory. After a crash, name holds either its old contents or
// data, never a mixture; a leftover temporary file may remain.
func WriteFileAtomic(fs FS, name string, data []byte) error {
	tmp := name + TempSuffix
	f, err := fs.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = fs.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = fs.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		_ = fs.Remove(tmp)
		return err
	}
	if err := fs.Rename(tmp, name); err != nil {
		_ = fs.Remove(tmp)
		return err
	}
	if err := SyncDir(fs, filepath.Dir(name)); err != nil {
		return fmt.Errorf("sync directory of %s: %w", name, err)
	}
	return nil
}
