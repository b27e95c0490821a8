package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

var (
	oldFiles = files{
		"data":          pattern(1, 10_000),
		"db/000001.sst": pattern(2, 3000),
		"db/CURRENT":    []byte("MANIFEST-1\n"),
		"empty":         nil,
	}
	newFiles = files{
		"data":          pattern(3, 12_000),
		"db/000001.sst": pattern(2, 3000),
		"db/000002.sst": pattern(4, 5000),
		"db/x/y/deep":   pattern(5, 100),
	}
)

func TestWriterReaderRoundTrip(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	if i, term := s.LastIndex(); i != 0 || term != 0 {
		t.Fatalf("LastIndex of an empty storage = %d, %d", i, term)
	}
	if r, err := s.Open(); r != nil || err != nil {
		t.Fatalf("Open of an empty storage = %v, %v", r, err)
	}
	writeSnapshot(t, s, 10, 3, oldFiles)
	if i, term := s.LastIndex(); i != 10 || term != 3 {
		t.Fatalf("LastIndex = %d, %d, want 10, 3", i, term)
	}
	r, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkReader(t, r, 10, oldFiles)
	if !proto.Equal(r.Meta(), testMeta(10, 3)) {
		t.Fatalf("Meta = %v, want %v", r.Meta(), testMeta(10, 3))
	}
	if want := filepath.Join("/snap", "snapshot_00000000000000000010"); r.Path() != want {
		t.Fatalf("Path = %s, want %s", r.Path(), want)
	}
	if _, ok := r.FileMeta("nope"); ok {
		t.Fatal("FileMeta of a missing file reports ok")
	}
	// The meta file is in place, and temp/ is gone.
	if !exists(t, mem, filepath.Join(r.Path(), MetaFileName)) || exists(t, mem, "/snap/temp") {
		t.Fatal("meta file missing or temp/ left behind")
	}
	// Callers cannot change the snapshot through returned values.
	r.Meta().Peers[0] = "changed"
	r.Table().Files[0].Name = "changed"
	fl := r.Files()
	fl[0] = "changed"
	um, _ := r.FileMeta("data")
	um[0] = 'X'
	checkReader(t, r, 10, oldFiles)

	// A fresh Storage on the same disk, after a crash, sees the same.
	mem.Crash()
	s2 := openStore(t, mem, "/snap")
	checkNewest(t, s2, 10, oldFiles)
	r2, _ := s2.Open()
	defer r2.Close()
	if !proto.Equal(r2.Meta(), testMeta(10, 3)) {
		t.Fatalf("Meta after reopen = %v", r2.Meta())
	}
}

func TestWriterStaleIndex(t *testing.T) {
	s := openStore(t, vfs.NewMem(), "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	for _, idx := range []uint64{5, 10} {
		w := prepareWriter(t, s, idx, 1, newFiles)
		if err := w.Close(); !errors.Is(err, ErrStale) {
			t.Fatalf("Close of snapshot %d over 10 = %v, want ErrStale", idx, err)
		}
		checkNewest(t, s, 10, oldFiles)
	}
	w, _ := s.Create()
	if err := w.Close(); err == nil {
		t.Fatal("Close without SetMeta succeeded")
	}
	if exists(t, s.fs, s.tempPath()) {
		t.Fatal("temp/ left after failed Close")
	}
}

func TestWriterLifecycle(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Create = %v, want ErrBusy", err)
	}
	writeFile(t, mem, filepath.Join(w.Path(), "a"), []byte("a"))
	if err := w.AddFile("a", nil); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if exists(t, mem, w.Path()) {
		t.Fatal("Abort left temp/")
	}
	w.Abort()
	if err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Close after Abort = %v", err)
	}
	if err := w.AddFile("a", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddFile after Abort = %v", err)
	}
	// Create removes what an earlier writer left in temp/.
	writeFile(t, mem, "/snap/temp/junk", []byte("junk"))
	w = prepareWriter(t, s, 7, 1, oldFiles)
	if exists(t, mem, filepath.Join(w.Path(), "junk")) {
		t.Fatal("Create kept an old temp/")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(); !errors.Is(err, ErrClosed) || !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Create after Close = %v", err)
	}
	if _, err := s.Open(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close = %v", err)
	}
}

func TestAddFileBadNames(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	writeFile(t, mem, filepath.Join(w.Path(), "ok"), []byte("x"))
	writeFile(t, mem, filepath.Join(w.Path(), "sub", "f"), []byte("x"))
	writeFile(t, mem, "/etc/passwd", []byte("root"))
	for _, name := range []string{
		"../etc/passwd", "/abs", "/snap/temp/ok", "a/../../b", "sub/../ok", "a\x00b", MetaFileName,
		progressFileName, "__raft_x", "", ".", "..", "./ok", "ok/", "sub//f", "missing", "sub",
	} {
		if err := w.AddFile(name, nil); !errors.Is(err, ErrBadName) {
			t.Errorf("AddFile(%q) = %v, want ErrBadName", name, err)
		}
	}
	if err := w.AddFile("ok", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("sub/f", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("ok", nil); !errors.Is(err, ErrBadName) {
		t.Fatalf("AddFile twice = %v, want ErrBadName", err)
	}
}

func TestAddFileRejectsSymlinks(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, vfs.Default, filepath.Join(dir, "snap"))
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	outside := filepath.Join(dir, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(w.Path(), "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(w.Path(), "linkdir")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"link", "linkdir/secret", "linkdir"} {
		if err := w.AddFile(name, nil); !errors.Is(err, ErrBadName) {
			t.Errorf("AddFile(%q) = %v, want ErrBadName", name, err)
		}
	}
	// A file replaced by a symlink after AddFile fails Close.
	if err := os.WriteFile(filepath.Join(w.Path(), "f"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("f", nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(w.Path(), "f")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(w.Path(), "f")); err != nil {
		t.Fatal(err)
	}
	w.SetMeta(testMeta(1, 1))
	if err := w.Close(); !errors.Is(err, ErrBadName) {
		t.Fatalf("Close with a symlinked file = %v, want ErrBadName", err)
	}
	if i, _ := s.LastIndex(); i != 0 {
		t.Fatalf("LastIndex = %d after failed Close", i)
	}
}

// closeOps runs Close of a snapshot 20 over a storage holding snapshot 10,
// on a filesystem whose operations during Close go through inj.
type closeRun struct {
	mem   *vfs.MemFS
	s     *Storage
	err   error
	count int64
}

// runClose saves snapshot 10, then closes a writer of snapshot 20 with
// onOp consulted (with the op's 1-based number) before each filesystem
// operation Close makes.
func runClose(t *testing.T, onOp func(n int64, mem *vfs.MemFS, op vfs.Op, path string) error) closeRun {
	t.Helper()
	mem := vfs.NewMem()
	var armed atomic.Bool
	var count atomic.Int64
	fsys := vfs.WithInjector(mem, vfs.InjectorFunc(func(op vfs.Op, path string) error {
		if !armed.Load() {
			return nil
		}
		return onOp(count.Add(1), mem, op, path)
	}))
	s, err := Open("/snap", Options{FS: fsys, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	writeSnapshot(t, s, 10, 1, oldFiles)
	w := prepareWriter(t, s, 20, 2, newFiles)
	armed.Store(true)
	err = w.Close()
	armed.Store(false)
	return closeRun{mem: mem, s: s, err: err, count: count.Load()}
}

func TestCloseFailureAtEachStep(t *testing.T) {
	total := runClose(t, func(int64, *vfs.MemFS, vfs.Op, string) error { return nil }).count
	if total < 10 {
		t.Fatalf("Close made only %d filesystem operations", total)
	}
	failures := 0
	for k := int64(1); k <= total; k++ {
		var failed string
		run := runClose(t, func(n int64, _ *vfs.MemFS, op vfs.Op, path string) error {
			if n == k {
				failed = fmt.Sprintf("%s %s", op, path)
				return fmt.Errorf("%w: op %d", vfs.ErrInjected, n)
			}
			return nil
		})
		if run.err != nil {
			failures++
			if !errors.Is(run.err, vfs.ErrInjected) {
				t.Errorf("op %d (%s): Close = %v, want the injected error", k, failed, run.err)
			}
			checkNewest(t, run.s, 10, oldFiles)
			if exists(t, run.mem, "/snap/temp") {
				t.Errorf("op %d (%s): temp/ left after failed Close", k, failed)
			}
		} else {
			// Failures after the commit point (deleting the old
			// snapshot) do not fail the save.
			checkNewest(t, run.s, 20, newFiles)
		}
		// A restart (no crash) sees the same newest snapshot.
		want, wantFiles := uint64(10), oldFiles
		if run.err == nil {
			want, wantFiles = 20, newFiles
		}
		s2 := openStore(t, run.mem, "/snap")
		checkNewest(t, s2, want, wantFiles)
		if names, _ := run.mem.ReadDir("/snap"); len(names) != 1 {
			t.Errorf("op %d (%s): after restart the directory holds %q", k, failed, names)
		}
		_ = run.s.Close()
	}
	if failures == 0 {
		t.Fatal("no injected failure failed Close")
	}
	t.Logf("%d operations, %d of them fail Close", total, failures)
}

func TestCloseFailureNamedSteps(t *testing.T) {
	isData := func(op vfs.Op, path string) bool {
		return strings.HasPrefix(path, "/snap/temp/") && !strings.Contains(path, MetaFileName)
	}
	for _, tc := range []struct {
		name string
		fail func(op vfs.Op, path string) bool
	}{
		{"read data", func(op vfs.Op, path string) bool { return op == vfs.OpRead && isData(op, path) }},
		{"sync data", func(op vfs.Op, path string) bool { return op == vfs.OpSync && isData(op, path) }},
		{"sync subdir", func(op vfs.Op, path string) bool { return op == vfs.OpSync && path == "/snap/temp/db" }},
		{"meta create", func(op vfs.Op, path string) bool { return op == vfs.OpCreate && strings.Contains(path, MetaFileName) }},
		{"meta write", func(op vfs.Op, path string) bool { return op == vfs.OpWrite && strings.Contains(path, MetaFileName) }},
		{"meta sync", func(op vfs.Op, path string) bool { return op == vfs.OpSync && strings.Contains(path, MetaFileName) }},
		{"meta rename", func(op vfs.Op, path string) bool {
			return op == vfs.OpRename && strings.HasSuffix(path, MetaFileName)
		}},
		{"temp dir sync", func(op vfs.Op, path string) bool { return op == vfs.OpSync && path == "/snap/temp" }},
		{"rename temp", func(op vfs.Op, path string) bool { return op == vfs.OpRename && strings.Contains(path, "snapshot_") }},
		{"parent dir sync", func(op vfs.Op, path string) bool { return op == vfs.OpSync && path == "/snap" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hit := false
			run := runClose(t, func(_ int64, _ *vfs.MemFS, op vfs.Op, path string) error {
				if tc.fail(op, path) {
					hit = true
					return fmt.Errorf("%w: %s %s", vfs.ErrInjected, op, path)
				}
				return nil
			})
			if !hit {
				t.Fatal("the step never ran")
			}
			if !errors.Is(run.err, vfs.ErrInjected) {
				t.Fatalf("Close = %v, want the injected error", run.err)
			}
			checkNewest(t, run.s, 10, oldFiles)
			_ = run.s.Close()
			checkNewest(t, openStore(t, run.mem, "/snap"), 10, oldFiles)
		})
	}
}

func TestCloseDiskFull(t *testing.T) {
	mem := vfs.NewMem()
	var full vfs.DiskFull
	s := openStore(t, vfs.WithInjector(mem, &full), "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	w := prepareWriter(t, s, 20, 2, newFiles)
	full.SetFull(true)
	err := w.Close()
	full.SetFull(false)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close on a full disk = %v, want ENOSPC", err)
	}
	checkNewest(t, s, 10, oldFiles)
	// With space again, a new save works.
	writeSnapshot(t, s, 20, 2, newFiles)
	checkNewest(t, s, 20, newFiles)
}

var errCrashed = errors.New("process crashed")

func TestCrashAtEachStepOfClose(t *testing.T) {
	total := runClose(t, func(int64, *vfs.MemFS, vfs.Op, string) error { return nil }).count
	sawOld, sawNew := false, false
	for k := int64(1); k <= total+1; k++ {
		var at string
		run := runClose(t, func(n int64, mem *vfs.MemFS, op vfs.Op, path string) error {
			switch {
			case n == k:
				at = fmt.Sprintf("%s %s", op, path)
				mem.Crash()
				return errCrashed
			case n > k:
				return errCrashed // the process is gone
			}
			return nil
		})
		crashed := run.count >= k
		if !crashed {
			if run.err != nil {
				t.Fatalf("Close without a crash: %v", run.err)
			}
			run.mem.Crash() // crash right after Close returned
			at = "after Close"
		}
		s2, err := Open("/snap", Options{FS: run.mem, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("crash at op %d (%s): reopen: %v", k, at, err)
		}
		idx, _ := s2.LastIndex()
		switch idx {
		case 10:
			sawOld = true
			if run.err == nil {
				t.Fatalf("crash at op %d (%s): Close succeeded but the new snapshot was lost", k, at)
			}
			checkNewest(t, s2, 10, oldFiles)
		case 20:
			sawNew = true
			checkNewest(t, s2, 20, newFiles)
		default:
			t.Fatalf("crash at op %d (%s): LastIndex %d after reopen", k, at, idx)
		}
		if names, _ := run.mem.ReadDir("/snap"); len(names) != 1 {
			t.Fatalf("crash at op %d (%s): directory holds %q after reopen", k, at, names)
		}
		_ = s2.Close()
		_ = run.s.Close()
	}
	if !sawOld || !sawNew {
		t.Fatalf("crashes never left the old (%v) or the new (%v) snapshot", sawOld, sawNew)
	}
}

func TestReaderKeepsOldSnapshot(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	r1, _ := s.Open()
	r2 := r1.Ref()
	writeSnapshot(t, s, 20, 2, newFiles)
	old := filepath.Join("/snap", snapshotDirName(10))
	if !exists(t, mem, old) {
		t.Fatal("old snapshot deleted while readers hold it")
	}
	checkReader(t, r1, 10, oldFiles)
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(); err != nil { // idempotent: must not drop r2's ref
		t.Fatal(err)
	}
	if !exists(t, mem, old) {
		t.Fatal("old snapshot deleted while a Ref holds it")
	}
	checkReader(t, r2, 10, oldFiles)
	_ = r2.Close()
	if exists(t, mem, old) {
		t.Fatal("old snapshot not deleted after its last reader closed")
	}
	// The newest snapshot survives its readers.
	r3, _ := s.Open()
	_ = r3.Close()
	checkNewest(t, s, 20, newFiles)
	// A snapshot with no reader is deleted as soon as it is replaced.
	writeSnapshot(t, s, 30, 2, oldFiles)
	if exists(t, mem, filepath.Join("/snap", snapshotDirName(20))) {
		t.Fatal("unreferenced old snapshot kept")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Ref of a closed Reader did not panic")
			}
		}()
		r3.Ref()
	}()
}

func TestOpenCleansUp(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	r, _ := s.Open() // keeps 10 on disk; the process dies holding it
	writeSnapshot(t, s, 20, 2, newFiles)
	writeFile(t, mem, "/snap/temp/partial", []byte("half a save"))
	_ = s.Close()
	defer r.Close()

	s2 := openStore(t, mem, "/snap")
	checkNewest(t, s2, 20, newFiles)
	names, _ := mem.ReadDir("/snap")
	if !slices.Equal(names, []string{snapshotDirName(20)}) {
		t.Fatalf("after Open the directory holds %q", names)
	}

	// temp/ with progress of a newer snapshot is kept for resume; with
	// progress of an older one, or garbage, it is removed.
	for _, tc := range []struct {
		name     string
		progress []byte
		keep     bool
	}{
		{"newer", mustEncode(t, &raftpb.SnapshotMetaTable{Meta: testMeta(30, 3)}), true},
		{"older", mustEncode(t, &raftpb.SnapshotMetaTable{Meta: testMeta(15, 3)}), false},
		{"same", mustEncode(t, &raftpb.SnapshotMetaTable{Meta: testMeta(20, 3)}), false},
		{"garbage", []byte("garbage"), false},
	} {
		writeFile(t, mem, "/snap/temp/"+progressFileName, tc.progress)
		writeFile(t, mem, "/snap/temp/f", []byte("f"))
		openStore(t, mem, "/snap")
		if got := exists(t, mem, "/snap/temp/f"); got != tc.keep {
			t.Errorf("%s progress: temp kept = %v, want %v", tc.name, got, tc.keep)
		}
	}
}

func mustEncode(t testing.TB, tab *raftpb.SnapshotMetaTable) []byte {
	t.Helper()
	b, err := encodeTable(tab)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenCorruptNewest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(mem *vfs.MemFS, dir string)
	}{
		{"flipped byte", func(mem *vfs.MemFS, dir string) {
			p := filepath.Join(dir, MetaFileName)
			b := readFile(t, mem, p)
			b[len(b)-1] ^= 1
			writeFile(t, mem, p, b)
		}},
		{"truncated meta", func(mem *vfs.MemFS, dir string) {
			p := filepath.Join(dir, MetaFileName)
			writeFile(t, mem, p, readFile(t, mem, p)[:5])
		}},
		{"missing meta", func(mem *vfs.MemFS, dir string) {
			_ = mem.Remove(filepath.Join(dir, MetaFileName))
		}},
		{"missing file", func(mem *vfs.MemFS, dir string) {
			_ = mem.Remove(filepath.Join(dir, "db", "000002.sst"))
		}},
		{"short file", func(mem *vfs.MemFS, dir string) {
			writeFile(t, mem, filepath.Join(dir, "data"), []byte("short"))
		}},
		{"wrong index", func(mem *vfs.MemFS, dir string) {
			_ = mem.Rename(dir, filepath.Join("/snap", snapshotDirName(25)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			s := openStore(t, mem, "/snap")
			writeSnapshot(t, s, 10, 1, oldFiles)
			r, _ := s.Open()
			writeSnapshot(t, s, 20, 2, newFiles)
			_ = r // keep 10 on disk, as after a crash
			tc.corrupt(mem, filepath.Join("/snap", snapshotDirName(20)))
			_, err := Open("/snap", Options{FS: mem})
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
			// Nothing was removed: the operator decides.
			if !exists(t, mem, filepath.Join("/snap", snapshotDirName(10))) {
				t.Fatal("Open removed the older snapshot despite a corrupt newest")
			}
		})
	}
}

func TestReaderVerify(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.Path(), "data"), []byte("hello, snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("data", nil); err != nil {
		t.Fatal(err)
	}
	w.SetMeta(&raftpb.SnapshotMeta{LastIncludedIndex: 5, LastIncludedTerm: 1, Peers: []string{"a=h:1"}})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		t.Fatalf("Verify on an intact snapshot: %v", err)
	}
	// Flip one byte, keeping the size: only the checksum can tell.
	p := filepath.Join(r.Path(), "data")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[3] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "data") {
		t.Fatalf("Verify on a flipped byte: %v, want ErrCorrupt naming the file", err)
	}
}

func TestDiscard(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	save := func(index uint64, content string) {
		t.Helper()
		w, err := s.Create()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(w.Path(), "data"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := w.AddFile("data", nil); err != nil {
			t.Fatal(err)
		}
		w.SetMeta(&raftpb.SnapshotMeta{LastIncludedIndex: index, LastIncludedTerm: 1, Peers: []string{"a=h:1"}})
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	save(5, "five")
	r, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Discard(4); err == nil {
		t.Fatal("Discard of an index that is not the newest succeeded")
	}
	if err := s.Discard(5); err != nil {
		t.Fatal(err)
	}
	if idx, _ := s.LastIndex(); idx != 0 {
		t.Fatalf("LastIndex after Discard = %d, want 0", idx)
	}
	if r2, err := s.Open(); r2 != nil || err != nil {
		t.Fatalf("Open after Discard = %v, %v; want nil, nil", r2, err)
	}
	// The open Reader keeps the directory until it is closed.
	if _, err := os.Stat(r.Path()); err != nil {
		t.Fatalf("discarded snapshot removed while a Reader holds it: %v", err)
	}
	r.Close()
	if _, err := os.Stat(r.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("discarded snapshot still on disk after its last Reader closed: %v", err)
	}
	// Saving goes on as if there had never been a snapshot, even at a
	// lower index than the discarded one.
	save(3, "three")
	if idx, _ := s.LastIndex(); idx != 3 {
		t.Fatalf("LastIndex after a new save = %d, want 3", idx)
	}
	if err := s.Discard(3); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, snapshotDirName(3))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("discarded snapshot without readers still on disk: %v", err)
	}
}
