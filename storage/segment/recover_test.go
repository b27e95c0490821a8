package segment

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

// frameOffsets returns the offset of each of es's frames in a segment that
// starts with es[0].
func frameOffsets(n int, first uint64, term uint64) []int {
	var offs []int
	off := 0
	for i := range n {
		offs = append(offs, off)
		off += encodedSize(ent(first+uint64(i), term))
	}
	return append(offs, off)
}

// segmentBytes returns the contents of an in-progress segment holding
// entries [1, n] in term 1.
func segmentBytes(n uint64) []byte {
	var b []byte
	for _, e := range ents(1, n+1, 1) {
		b = appendEntry(b, e)
	}
	return b
}

// withSegment returns a MemFS whose log directory holds name with b.
func withSegment(t testing.TB, name string, b []byte) *vfs.MemFS {
	mem := vfs.NewMem()
	if err := vfs.MkdirAllDurable(mem, dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, mem, name, b)
	return mem
}

func TestTornTailEveryOffset(t *testing.T) {
	const n = 5
	full := segmentBytes(n)
	offs := frameOffsets(n, 1, 1)
	name := inprogressName(1)
	want := model{first: 1, terms: []uint64{1, 1, 1, 1}}
	for cut := offs[n-1]; cut < len(full); cut++ {
		mem := withSegment(t, name, full[:cut])
		l := mustOpen(t, mem, testOptions(t, 0))
		check(t, l, want)
		if got := len(readAll(t, mem, name)); got != offs[n-1] {
			t.Fatalf("cut %d: segment is %d bytes after recovery, want %d", cut, got, offs[n-1])
		}
		mustAppend(t, l, ents(n, n+1, 2))
		l.Close()
		l = mustOpen(t, mem, testOptions(t, 0))
		check(t, l, model{first: 1, terms: []uint64{1, 1, 1, 1, 2}})
		l.Close()
	}
}

func TestTornTailGarbage(t *testing.T) {
	const n = 5
	full := segmentBytes(n)
	offs := frameOffsets(n, 1, 1)
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 300)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	flipped := bytes.Clone(full)
	flipped[len(flipped)-1] ^= 0x40

	for name, tc := range map[string]struct {
		b    []byte
		want int // entries recovered
	}{
		"zeros after last frame":  {append(bytes.Clone(full), make([]byte, 4096)...), n},
		"random after last frame": {append(bytes.Clone(full), random...), n},
		"last frame bad checksum": {flipped, n - 1},
		"last frame zeroed":       {append(bytes.Clone(full[:offs[n-1]]), make([]byte, offs[n]-offs[n-1])...), n - 1},
		"last frame then zeros":   {append(bytes.Clone(flipped), make([]byte, 100)...), n - 1},
		"empty file":              {nil, 0},
	} {
		t.Run(name, func(t *testing.T) {
			mem := withSegment(t, inprogressName(1), tc.b)
			l := mustOpen(t, mem, testOptions(t, 0))
			m := model{first: 1}
			for range tc.want {
				m.terms = append(m.terms, 1)
			}
			check(t, l, m)
		})
	}
}

// wantCorrupt opens the log and checks the error names file and offset.
func wantCorrupt(t *testing.T, fsys vfs.FS, file string, off int) {
	t.Helper()
	l, err := Open(fsys, dir, testOptions(t, 0))
	if err == nil {
		l.Close()
		t.Fatalf("Open succeeded, want ErrCorrupt in %s at %d", file, off)
	}
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, filepath.Join(dir, file)) || (off >= 0 && !strings.Contains(msg, fmt.Sprintf("offset %d:", off))) {
		t.Fatalf("Open = %q, want it to name %s at offset %d", msg, file, off)
	}
	t.Log(msg)
}

func TestCorruptInProgressMiddle(t *testing.T) {
	const n = 6
	full := segmentBytes(n)
	offs := frameOffsets(n, 1, 1)
	name := inprogressName(1)
	for _, tc := range []struct {
		what string
		at   int // byte to change
		x    byte
	}{
		{"payload", offs[2] + 9, 0x01},
		{"checksum", offs[2] + 5, 0x80},
		{"length grows", offs[2] + 2, 0x10},
		{"length shrinks", offs[2], 0x01},
		{"first frame", 3, 0x20},
	} {
		t.Run(tc.what, func(t *testing.T) {
			b := bytes.Clone(full)
			b[tc.at] ^= tc.x
			frame := 0
			for i, o := range offs {
				if o <= tc.at {
					frame = i
				}
			}
			wantCorrupt(t, withSegment(t, name, b), name, offs[frame])
		})
	}
}

// closedLog returns a MemFS holding a log of 30 entries in several closed
// segments and one in-progress segment, and the names of its segments.
func closedLog(t *testing.T) (*vfs.MemFS, []string) {
	mem := vfs.NewMem()
	l := mustOpen(t, mem, testOptions(t, 100))
	for i := uint64(1); i <= 30; i += 3 {
		mustAppend(t, l, ents(i, i+3, 1))
	}
	l.Close()
	names := segmentFiles(t, mem)
	if len(names) < 4 {
		t.Fatalf("segments %v", names)
	}
	return mem, names
}

func TestCorruptClosedSegment(t *testing.T) {
	t.Run("bad checksum in last frame", func(t *testing.T) {
		mem, names := closedLog(t)
		b := readAll(t, mem, names[1])
		b[len(b)-1] ^= 1
		writeFile(t, mem, names[1], b)
		first, last, _, _ := parseName(names[1])
		n := int(last - first + 1)
		offs := frameOffsets(n, first, 1)
		wantCorrupt(t, mem, names[1], offs[n-1])
	})
	t.Run("torn closed segment", func(t *testing.T) {
		mem, names := closedLog(t)
		b := readAll(t, mem, names[0])
		writeFile(t, mem, names[0], b[:len(b)-3])
		wantCorrupt(t, mem, names[0], -1)
	})
	t.Run("missing entries", func(t *testing.T) {
		mem, names := closedLog(t)
		first, _, _, _ := parseName(names[0])
		offs := frameOffsets(3, first, 1)
		b := readAll(t, mem, names[0])
		writeFile(t, mem, names[0], b[:offs[2]])
		wantCorrupt(t, mem, names[0], offs[2])
	})
	t.Run("gap", func(t *testing.T) {
		mem, names := closedLog(t)
		if err := mem.Remove(filepath.Join(dir, names[1])); err != nil {
			t.Fatal(err)
		}
		wantCorrupt(t, mem, names[2], 0)
	})
	t.Run("two in-progress", func(t *testing.T) {
		mem, names := closedLog(t)
		first, _, _, _ := parseName(names[0])
		if err := mem.Rename(filepath.Join(dir, names[0]), filepath.Join(dir, inprogressName(first))); err != nil {
			t.Fatal(err)
		}
		wantCorrupt(t, mem, inprogressName(first), 0)
	})
	t.Run("marker", func(t *testing.T) {
		mem, _ := closedLog(t)
		b := encodeMarker(5)
		b[9] ^= 1
		writeFile(t, mem, markerName, b)
		wantCorrupt(t, mem, markerName, 0)
	})
	t.Run("marker before first segment", func(t *testing.T) {
		mem, names := closedLog(t)
		writeFile(t, mem, markerName, encodeMarker(5))
		if err := mem.Remove(filepath.Join(dir, names[0])); err != nil {
			t.Fatal(err)
		}
		wantCorrupt(t, mem, names[1], 0)
	})
}

func TestCorruptionFoundByRead(t *testing.T) {
	mem := vfs.NewMem()
	l := mustOpen(t, mem, testOptions(t, 0))
	mustAppend(t, l, ents(1, 6, 1))
	name := inprogressName(1)
	offs := frameOffsets(5, 1, 1)
	f, err := mem.OpenRW(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{'!'}, int64(offs[3]+12))
	f.Close()
	if _, err := l.Entries(1, 3, 0); err != nil {
		t.Fatalf("Entries before the damage: %v", err)
	}
	_, err = l.Entries(1, 6, 0)
	if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("%s at offset %d", name, offs[3])) {
		t.Fatalf("Entries = %v, want ErrCorrupt naming the frame", err)
	}
}
