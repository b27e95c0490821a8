package vfs_test

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/graft-raft/graft/vfs"
)

func ExampleMemFS_Crash() {
	mem := vfs.NewMem()
	f, _ := mem.Create("/synced")
	f.Write([]byte("kept"))
	f.Sync()
	f.Close()
	g, _ := mem.Create("/unsynced")
	g.Close()
	_ = vfs.SyncDir(mem, "/") // both names are durable now...
	h, _ := mem.Create("/lost")
	h.Close() // ...but not this one

	mem.Crash()
	fi, _ := mem.Stat("/synced")
	fmt.Println("synced:", fi.Size(), "bytes")
	_, err := mem.Stat("/lost")
	fmt.Println("lost exists:", !errors.Is(err, fs.ErrNotExist))
	// Output:
	// synced: 4 bytes
	// lost exists: false
}

func ExampleWithInjector() {
	var disk vfs.DiskFull
	fsys := vfs.WithInjector(vfs.NewMem(), &disk)
	disk.SetFull(true)
	_, err := fsys.Create("/f")
	fmt.Println(errors.Is(err, vfs.ErrInjected))
	// Output: true
}
