package vfs

import (
	"os"
	"path/filepath"
	"syscall"
)

// canDirect reports whether the filesystem of dir takes O_DIRECT opens.
func canDirect(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o644)
	if err != nil {
		return false
	}
	_ = f.Close()
	return os.Remove(f.Name()) == nil
}
