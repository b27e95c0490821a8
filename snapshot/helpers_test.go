package snapshot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/vfs"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// testLogger logs through the test's output.
func testLogger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func openStore(t testing.TB, fsys vfs.FS, dir string) *Storage {
	t.Helper()
	s, err := Open(dir, Options{FS: fsys, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testMeta(index, term uint64) *raftpb.SnapshotMeta {
	return &raftpb.SnapshotMeta{
		LastIncludedIndex: index,
		LastIncludedTerm:  term,
		Peers:             []string{"n1:1", "n2:1", "n3:1"},
		OldPeers:          []string{"n1:1", "n2:1"},
		Learners:          []string{"l1:1"},
	}
}

// writeFile writes data to name on fsys, creating parents, without
// syncing (a state machine's write).
func writeFile(t testing.TB, fsys vfs.FS, name string, data []byte) {
	t.Helper()
	if err := fsys.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, fsys vfs.FS, name string) []byte {
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
	return b
}

func exists(t testing.TB, fsys vfs.FS, name string) bool {
	t.Helper()
	_, err := fsys.Stat(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// files is a snapshot's content: name → data.
type files map[string][]byte

// userMeta is the user data the tests store with a file.
func userMeta(name string) []byte { return []byte("meta of " + name) }

// writeSnapshot saves a snapshot of fs at index with the given files.
func writeSnapshot(t testing.TB, s *Storage, index, term uint64, fs files) {
	t.Helper()
	w := prepareWriter(t, s, index, term, fs)
	if err := w.Close(); err != nil {
		t.Fatalf("Close of snapshot %d: %v", index, err)
	}
}

// prepareWriter returns a Writer of a snapshot holding fs, not closed.
func prepareWriter(t testing.TB, s *Storage, index, term uint64, fs files) *Writer {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		writeFile(t, s.fs, filepath.Join(w.Path(), filepath.FromSlash(name)), fs[name])
		if err := w.AddFile(name, userMeta(name)); err != nil {
			t.Fatalf("AddFile(%q): %v", name, err)
		}
	}
	w.SetMeta(testMeta(index, term))
	return w
}

// checkReader checks that r is snapshot index holding exactly want.
func checkReader(t testing.TB, r *Reader, index uint64, want files) {
	t.Helper()
	if r == nil {
		t.Fatalf("no snapshot, want %d", index)
	}
	if got := r.Meta().GetLastIncludedIndex(); got != index {
		t.Fatalf("snapshot index %d, want %d", got, index)
	}
	if got, w := r.Files(), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Fatalf("files %q, want %q", got, w)
	}
	tab := r.Table()
	for _, f := range tab.GetFiles() {
		data := readFile(t, r.s.fs, filepath.Join(r.Path(), filepath.FromSlash(f.GetName())))
		if !bytes.Equal(data, want[f.GetName()]) {
			t.Fatalf("snapshot %d file %q: %d bytes differ from the %d written", index, f.GetName(), len(data), len(want[f.GetName()]))
		}
		sum := sha256.Sum256(data)
		if f.GetSize() != int64(len(data)) || !bytes.Equal(f.GetSha256(), sum[:]) {
			t.Fatalf("snapshot %d file %q: table has size %d sha %x, content %d %x", index, f.GetName(), f.GetSize(), f.GetSha256(), len(data), sum)
		}
		if crc := crc32Checksum(data); f.Crc32C == nil || f.GetCrc32C() != crc {
			t.Fatalf("snapshot %d file %q: table has crc32c %v, content %08x", index, f.GetName(), f.Crc32C, crc)
		}
		if um, ok := r.FileMeta(f.GetName()); !ok || !bytes.Equal(um, userMeta(f.GetName())) {
			t.Fatalf("FileMeta(%q) = %q, %v", f.GetName(), um, ok)
		}
	}
}

// checkNewest checks that s's newest snapshot is index holding want.
func checkNewest(t testing.TB, s *Storage, index uint64, want files) {
	t.Helper()
	if got, _ := s.LastIndex(); got != index {
		t.Fatalf("LastIndex = %d, want %d", got, index)
	}
	r, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkReader(t, r, index, want)
}

// pattern returns n bytes of a pattern that depends on seed.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
