package snapshot

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/graft-raft/graft/vfs"
)

// stripCRC rewrites the meta table of s's newest snapshot without CRC-32C,
// as a snapshot made before graft recorded them, and returns the path of
// the snapshot's directory. Reopen s to see it.
func stripCRC(t testing.TB, s *Storage) string {
	t.Helper()
	idx, _ := s.LastIndex()
	dir := filepath.Join(s.dir, snapshotDirName(idx))
	p := filepath.Join(dir, MetaFileName)
	tab, err := readTable(s.fs, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tab.GetFiles() {
		f.Crc32C = nil
	}
	if err := vfs.WriteFileAtomic(s.fs, p, mustEncode(t, tab)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVerifyChecksOldTablesBySHA256(t *testing.T) {
	for _, old := range []bool{false, true} {
		name := map[bool]string{false: "crc32c", true: "sha256"}[old]
		t.Run(name, func(t *testing.T) {
			mem := vfs.NewMem()
			s := openStore(t, mem, "/snap")
			writeSnapshot(t, s, 5, 1, oldFiles)
			if old {
				stripCRC(t, s)
				_ = s.Close()
				s = openStore(t, mem, "/snap")
			}
			r, err := s.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := r.Verify(); err != nil {
				t.Fatalf("Verify on an intact snapshot: %v", err)
			}
			p := filepath.Join(r.Path(), "data")
			b := readFile(t, mem, p)
			b[len(b)/2] ^= 0x01
			writeFile(t, mem, p, b)
			err = r.Verify()
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "data") {
				t.Fatalf("Verify on a flipped bit: %v, want ErrCorrupt naming the file and the %s", err, name)
			}
		})
	}
}

func TestCopyChecksOldTablesBySHA256(t *testing.T) {
	e := newMemCopyEnv(t)
	fs := files{"a": pattern(1, 10_000), "b": pattern(2, 5000)}
	writeSnapshot(t, e.leader, 20, 2, fs)
	stripCRC(t, e.leader)
	r, err := e.leader.Open()
	if err != nil {
		t.Fatal(err)
	}
	uri, _ := e.files.Register(r, "leader")
	want := testMeta(20, 2)

	// A corrupt chunk fails the SHA-256 and is fetched again.
	opts := e.opts(t)
	tr, flips := flipper(e.tr, "a", 1)
	opts.Transport = tr
	got, err := e.copy(t, context.Background(), uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	if flips.Load() != 1 {
		t.Fatalf("%d flips", flips.Load())
	}
	if p := opts.Progress.Snapshot(); p.BytesFetched != size(fs)+int64(len(fs["a"])) {
		t.Fatalf("progress %+v, want a fetched twice", p)
	}
	// The installed table is the remote's: without CRC-32C, so the
	// follower checks its files by SHA-256 too.
	for _, f := range got.Table().GetFiles() {
		if f.Crc32C != nil {
			t.Fatalf("file %s got a CRC-32C the remote table does not have", f.GetName())
		}
	}
	if err := got.Verify(); err != nil {
		t.Fatal(err)
	}
	for name, data := range fs {
		if b := readFile(t, e.follower.fs, filepath.Join(got.Path(), name)); string(b) != string(data) {
			t.Fatalf("%s differs", name)
		}
	}
}

func TestCopyCorruptChunkNamesCRC(t *testing.T) {
	e := newMemCopyEnv(t)
	uri, want := e.serve(t, 20, 2, files{"a": pattern(1, 10_000)})
	opts := e.opts(t)
	opts.Retries = -1
	tr, _ := flipper(e.tr, "a", -1)
	opts.Transport = tr
	_, err := e.copy(t, context.Background(), uri, want, opts)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "crc32c") {
		t.Fatalf("Copy = %v, want ErrChecksum on the CRC-32C", err)
	}
}

// A file hard-linked from a snapshot whose table has no CRC-32C is read
// again on save, so that the new table has both checksums.
func TestSaveComputesCRCMissingFromPrevious(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	writeSnapshot(t, s, 5, 1, files{"sst": pattern(7, 5000)})
	prevDir := stripCRC(t, s)
	_ = s.Close()
	s = openStore(t, mem, "/snap")

	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.Link(filepath.Join(prevDir, "sst"), filepath.Join(w.Path(), "sst")); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("sst", userMeta("sst")); err != nil {
		t.Fatal(err)
	}
	w.SetMeta(testMeta(6, 1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkReader(t, r, 6, files{"sst": pattern(7, 5000)})
}

// Verify reads files in parallel but reports the first bad file in table
// order, as reading them one by one would.
func TestVerifyReportsFirstBadFileInTableOrder(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	fs := files{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		fs[n] = pattern(n[0], 3000)
	}
	writeSnapshot(t, s, 5, 1, fs)
	r, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tab := r.Table().GetFiles()
	for _, i := range []int{2, 5} {
		p := filepath.Join(r.Path(), tab[i].GetName())
		b := readFile(t, mem, p)
		b[0] ^= 0x80
		writeFile(t, mem, p, b)
	}
	err = r.Verify()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Join(r.Path(), tab[2].GetName())+" ") {
		t.Fatalf("Verify = %v, want ErrCorrupt naming %s", err, tab[2].GetName())
	}
}
