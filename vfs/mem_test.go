package vfs

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
)

func exists(t *testing.T, fsys FS, name string) bool {
	t.Helper()
	_, err := fsys.Stat(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func syncDir(t *testing.T, fsys FS, dir string) {
	t.Helper()
	if err := SyncDir(fsys, dir); err != nil {
		t.Fatal(err)
	}
}

func TestMemCrashLosesUnsyncedData(t *testing.T) {
	m := NewMem()
	f, err := m.Create("/f")
	if err != nil {
		t.Fatal(err)
	}
	syncDir(t, m, "/")
	f.Write([]byte("durable"))
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(" lost"))
	f.WriteAt([]byte("D"), 0) // overwrite of synced bytes: copy on write
	if got := readAll(t, m, "/f"); got != "Durable lost" {
		t.Fatalf("before crash: %q", got)
	}
	m.Crash()
	if got := readAll(t, m, "/f"); got != "durable" {
		t.Fatalf("after crash: %q, want %q", got, "durable")
	}

	// The old handle is invalid; Close still succeeds.
	if _, err := f.Write([]byte("x")); !errors.Is(err, ErrCrashed) {
		t.Fatalf("Write on crashed handle = %v, want ErrCrashed", err)
	}
	if err := f.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("Sync on crashed handle = %v, want ErrCrashed", err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("ReadAt on crashed handle = %v, want ErrCrashed", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close on crashed handle = %v", err)
	}
	if err := f.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
}

func TestMemCrashTruncateAndRegrow(t *testing.T) {
	m := NewMem()
	mustWrite(t, m, "/f", "0123456789")
	syncDir(t, m, "/")
	f, err := m.OpenRW("/f")
	if err != nil {
		t.Fatal(err)
	}
	// Shrink, then grow past the old end: the synced bytes must not be
	// zeroed through the shared array.
	if err := f.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("xy"), 12); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, m, "/f"); got != "01"+string(make([]byte, 10))+"xy" {
		t.Fatalf("before crash: %q", got)
	}
	m.Crash()
	if got := readAll(t, m, "/f"); got != "0123456789" {
		t.Fatalf("after crash: %q", got)
	}

	// A synced truncation survives.
	f, err = m.OpenRW("/f")
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(4)
	f.Sync()
	f.Close()
	m.Crash()
	if got := readAll(t, m, "/f"); got != "0123" {
		t.Fatalf("after synced truncate and crash: %q", got)
	}
}

func TestMemCrashDirectoryEntries(t *testing.T) {
	m := NewMem()
	if err := m.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, "/d/f", "x") // file synced, but no entry is durable
	m.Crash()
	if exists(t, m, "/d") {
		t.Fatal("/d survived a crash without a sync of /")
	}

	if err := MkdirAllDurable(m, "/d", 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, "/d/f", "x")
	m.Crash()
	if !exists(t, m, "/d") || exists(t, m, "/d/f") {
		t.Fatal("want /d without /d/f after a crash without a sync of /d")
	}

	mustWrite(t, m, "/d/f", "x")
	syncDir(t, m, "/d")
	m.Crash()
	if got := readAll(t, m, "/d/f"); got != "x" {
		t.Fatalf("/d/f = %q after synced create", got)
	}

	// Rename, link and remove revert without a directory sync.
	mustWrite(t, m, "/d/g", "g")
	syncDir(t, m, "/d")
	if err := m.Rename("/d/f", "/d/g"); err != nil {
		t.Fatal(err)
	}
	if err := m.Link("/d/g", "/d/h"); err != nil {
		t.Fatal(err)
	}
	m.Crash()
	if readAll(t, m, "/d/f") != "x" || readAll(t, m, "/d/g") != "g" || exists(t, m, "/d/h") {
		t.Fatal("unsynced rename or link survived a crash")
	}
	if err := m.Remove("/d/g"); err != nil {
		t.Fatal(err)
	}
	m.Crash()
	if !exists(t, m, "/d/g") {
		t.Fatal("unsynced remove survived a crash")
	}

	// Synced, they stick.
	if err := m.Rename("/d/f", "/d/g"); err != nil {
		t.Fatal(err)
	}
	if err := m.Link("/d/g", "/d/h"); err != nil {
		t.Fatal(err)
	}
	syncDir(t, m, "/d")
	m.Crash()
	if exists(t, m, "/d/f") || readAll(t, m, "/d/g") != "x" || readAll(t, m, "/d/h") != "x" {
		t.Fatal("synced rename or link lost in a crash")
	}
}

func TestMemCreateBeforeSyncLeavesEmptyFile(t *testing.T) {
	m := NewMem()
	f, err := m.Create("/f")
	if err != nil {
		t.Fatal(err)
	}
	syncDir(t, m, "/")
	f.Write([]byte("never synced"))
	m.Crash()
	if got := readAll(t, m, "/f"); got != "" {
		t.Fatalf("got %q, want an empty file", got)
	}
}

func TestMemLinkSharesContents(t *testing.T) {
	m := NewMem()
	mustWrite(t, m, "/a", "1")
	if err := m.Link("/a", "/b"); err != nil {
		t.Fatal(err)
	}
	f, _ := m.OpenRW("/b")
	f.WriteAt([]byte("2"), 0)
	f.Close()
	if got := readAll(t, m, "/a"); got != "2" {
		t.Fatalf("/a = %q through link", got)
	}
}

func TestMemErrors(t *testing.T) {
	m := NewMem()
	mustWrite(t, m, "/f", "x")
	if err := m.MkdirAll("/f/g", 0o755); err == nil {
		t.Error("MkdirAll through a file succeeded")
	}
	if _, err := m.Create("/"); err == nil {
		t.Error("Create of / succeeded")
	}
	if _, err := m.Create("/missing/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Create in missing dir = %v", err)
	}
	if err := m.Rename("/missing", "/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Rename of missing = %v", err)
	}
	m.MkdirAll("/d/e", 0o755)
	if err := m.Rename("/d", "/d/e/x"); err == nil {
		t.Error("Rename of a directory into itself succeeded")
	}
	if err := m.Rename("/f", "/d"); err == nil {
		t.Error("Rename of a file over a directory succeeded")
	}
	if _, err := m.OpenRW("/d"); err == nil {
		t.Error("OpenRW of a directory succeeded")
	}
	d, err := m.OpenDir("/d")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Read(make([]byte, 1)); err == nil {
		t.Error("Read of a directory succeeded")
	}
	d.Close()
	if _, err := m.ReadDir("/f"); err == nil {
		t.Error("ReadDir of a file succeeded")
	}
	if _, err := m.Stat("/../x"); err == nil {
		t.Error("Stat of /../x succeeded")
	}
	fi, err := m.Stat("/")
	if err != nil || !fi.IsDir() {
		t.Errorf("Stat / = %v, %v", fi, err)
	}
}

// TestMemConcurrent exercises MemFS from many goroutines, with crashes,
// under the race detector.
func TestMemConcurrent(t *testing.T) {
	m := NewMem()
	if err := MkdirAllDurable(m, "/d", 0o755); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				name := fmt.Sprintf("/d/f%d-%d", g, i%5)
				f, err := m.Create(name)
				if err != nil {
					continue // a crash may race with Create
				}
				f.Write([]byte(name))
				f.Sync()
				f.ReadAt(make([]byte, 4), 0)
				f.Close()
				_ = SyncDir(m, "/d")
				_, _ = m.ReadDir("/d")
				_ = m.Rename(name, name+"r")
				if g == 0 && i%10 == 0 {
					m.Crash()
				}
			}
		})
	}
	wg.Wait()
}
