package vfs

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestFailIf(t *testing.T) {
	m := NewMem()
	var seen []string
	inj := FailIf(func(op Op, path string) bool {
		seen = append(seen, op.String()+" "+path)
		return op == OpSync && strings.HasSuffix(path, "bad")
	})
	fsys := WithInjector(m, inj)
	mustWrite(t, fsys, "/good", "x")

	f, err := fsys.Create("/bad")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	err = f.Sync()
	if !errors.Is(err, ErrInjected) {
		t.Fatalf("Sync = %v, want ErrInjected", err)
	}
	if !strings.Contains(err.Error(), "sync /bad") {
		t.Fatalf("error %q does not name the op and path", err)
	}
	if err := fsys.Rename("/good", "/bad"); err != nil {
		t.Fatalf("Rename = %v, want success", err)
	}
	want := []string{"create /good", "write /good", "sync /good", "create /bad", "write /bad", "sync /bad", "rename /bad"}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("injector saw %v, want %v", seen, want)
	}
}

func TestInjectorCoversEveryOp(t *testing.T) {
	dir := t.TempDir()
	seen := map[Op]bool{}
	fsys := WithInjector(Default, InjectorFunc(func(op Op, path string) error {
		seen[op] = true
		return nil
	}))
	p := filepath.Join(dir, "d", "f")
	if err := MkdirAllDurable(fsys, filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, fsys, p, "abc")
	f, err := fsys.OpenRW(p)
	if err != nil {
		t.Fatal(err)
	}
	f.ReadAt(make([]byte, 1), 0)
	f.Read(make([]byte, 1))
	f.WriteAt([]byte("x"), 0)
	f.Truncate(1)
	f.Stat()
	f.Close()
	fsys.Lstat(p)
	fsys.ReadDir(filepath.Dir(p))
	fsys.Link(p, p+"2")
	fsys.Rename(p+"2", p+"3")
	fsys.Remove(p + "3")
	fsys.RemoveAll(filepath.Join(dir, "d"))
	if ro, err := fsys.Open(dir); err == nil {
		ro.Close()
	}
	for op := OpCreate; op <= OpReadDir; op++ {
		if !seen[op] {
			t.Errorf("injector never asked about %v", op)
		}
	}
	if got := Op(99).String(); got != "Op(99)" {
		t.Errorf("Op(99).String() = %q", got)
	}
}

func TestInjectedErrorsFailEveryOp(t *testing.T) {
	m := NewMem()
	mustWrite(t, m, "/f", "x")
	syncDir(t, m, "/")
	var fail bool
	fsys := WithInjector(m, FailIf(func(Op, string) bool { return fail }))
	f, err := fsys.OpenRW("/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fail = true
	checks := map[string]error{}
	_, checks["Create"] = fsys.Create("/g")
	_, checks["Open"] = fsys.Open("/f")
	_, checks["OpenRW"] = fsys.OpenRW("/f")
	_, checks["OpenDir"] = fsys.OpenDir("/")
	checks["Remove"] = fsys.Remove("/f")
	checks["RemoveAll"] = fsys.RemoveAll("/f")
	checks["Rename"] = fsys.Rename("/f", "/g")
	checks["Link"] = fsys.Link("/f", "/g")
	checks["MkdirAll"] = fsys.MkdirAll("/d", 0o755)
	_, checks["Stat"] = fsys.Stat("/f")
	_, checks["Lstat"] = fsys.Lstat("/f")
	_, checks["ReadDir"] = fsys.ReadDir("/")
	_, checks["Read"] = f.Read(make([]byte, 1))
	_, checks["ReadAt"] = f.ReadAt(make([]byte, 1), 0)
	_, checks["Write"] = f.Write([]byte("y"))
	_, checks["WriteAt"] = f.WriteAt([]byte("y"), 0)
	checks["Sync"] = f.Sync()
	checks["Truncate"] = f.Truncate(0)
	_, checks["File.Stat"] = f.Stat()
	for name, err := range checks {
		if !errors.Is(err, ErrInjected) {
			t.Errorf("%s = %v, want ErrInjected", name, err)
		}
	}
	// Nothing reached the underlying filesystem.
	if got := readAll(t, m, "/f"); got != "x" {
		t.Fatalf("/f = %q", got)
	}
	if exists(t, m, "/g") || exists(t, m, "/d") {
		t.Fatal("a failed operation took effect")
	}
}

func TestDiskFull(t *testing.T) {
	var disk DiskFull
	fsys := WithInjector(NewMem(), &disk)
	mustWrite(t, fsys, "/f", "x")
	disk.SetFull(true)
	f, err := fsys.OpenRW("/f")
	if err != nil {
		t.Fatalf("OpenRW on a full disk: %v", err)
	}
	defer f.Close()
	_, err = f.Write([]byte("y"))
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrInjected) {
		t.Fatalf("Write on a full disk = %v, want ENOSPC and ErrInjected", err)
	}
	if _, err := fsys.Create("/g"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Create on a full disk = %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync on a full disk = %v", err)
	}
	if err := fsys.Remove("/f"); err != nil {
		t.Fatalf("Remove on a full disk = %v", err)
	}
	disk.SetFull(false)
	if _, err := f.Write([]byte("y")); err != nil {
		t.Fatalf("Write after freeing space: %v", err)
	}
}
