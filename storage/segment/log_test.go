package segment

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

func TestAppendAndRestart(t *testing.T) {
	for _, fsName := range []string{"mem", "os"} {
		t.Run(fsName, func(t *testing.T) {
			var fsys vfs.FS = vfs.NewMem()
			d := dir
			if fsName == "os" {
				fsys, d = vfs.Default, t.TempDir()
			}
			l, err := Open(fsys, d, testOptions(t, 0))
			if err != nil {
				t.Fatal(err)
			}
			if l.FirstIndex() != 1 || l.LastIndex() != 0 {
				t.Fatalf("fresh log is [%d, %d], want [1, 0]", l.FirstIndex(), l.LastIndex())
			}
			if got, err := l.Entries(1, 1, 0); err != nil || len(got) != 0 {
				t.Fatalf("Entries(1, 1) = %v, %v", got, err)
			}
			if err := l.Append(nil); err != nil {
				t.Fatalf("Append(nil) = %v", err)
			}
			m := model{first: 1}
			for _, b := range [][2]uint64{{1, 2}, {2, 10}, {10, 11}, {11, 50}} {
				es := ents(b[0], b[1], 1+b[0]/10)
				if err := l.Append(es); err != nil {
					t.Fatal(err)
				}
				m.append(es)
			}
			check(t, l, m)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close = %v", err)
			}
			if _, err := l.Entries(1, 2, 0); !errors.Is(err, storage.ErrClosed) {
				t.Fatalf("Entries after Close = %v", err)
			}
			if err := l.Append(ents(50, 51, 5)); !errors.Is(err, storage.ErrClosed) {
				t.Fatalf("Append after Close = %v", err)
			}

			l, err = Open(fsys, d, testOptions(t, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.dir != d {
				t.Fatal("wrong dir")
			}
			check(t, l, m)
			es := ents(50, 60, 9)
			if err := l.Append(es); err != nil {
				t.Fatal(err)
			}
			m.append(es)
			check(t, l, m)
		})
	}
}

func TestAppendRejects(t *testing.T) {
	l := mustOpen(t, vfs.NewMem(), testOptions(t, 0))
	if err := l.Append(ents(2, 3, 1)); !errors.Is(err, storage.ErrOutOfRange) {
		t.Fatalf("Append at 2 of an empty log = %v, want ErrOutOfRange", err)
	}
	mustAppend(t, l, ents(1, 4, 1))
	for name, es := range map[string][]*raftpb.Entry{
		"gap":      ents(5, 6, 1),
		"overlap":  ents(3, 5, 1),
		"in batch": {ent(4, 1), ent(6, 1)},
	} {
		if err := l.Append(es); !errors.Is(err, storage.ErrOutOfRange) {
			t.Errorf("%s: Append = %v, want ErrOutOfRange", name, err)
		}
	}
	if err := l.Append([]*raftpb.Entry{nil}); err == nil {
		t.Error("Append of a nil entry succeeded")
	}
	check(t, l, model{first: 1, terms: []uint64{1, 1, 1}})
}

func TestReadErrors(t *testing.T) {
	l := mustOpen(t, vfs.NewMem(), testOptions(t, 0))
	mustAppend(t, l, ents(1, 11, 1))
	for _, r := range [][2]uint64{{0, 2}, {5, 12}, {6, 5}, {12, 12}} {
		if _, err := l.Entries(r[0], r[1], 0); !errors.Is(err, storage.ErrOutOfRange) {
			t.Errorf("Entries(%d, %d) = %v, want ErrOutOfRange", r[0], r[1], err)
		}
	}
	if got, err := l.Entries(11, 11, 0); err != nil || len(got) != 0 {
		t.Errorf("Entries(11, 11) = %v, %v; want empty", got, err)
	}
	if err := l.Reset(0); !errors.Is(err, storage.ErrOutOfRange) {
		t.Errorf("Reset(0) = %v", err)
	}
	if _, err := Open(vfs.NewMem(), dir, Options{SegmentSize: -1}); err == nil || !strings.Contains(err.Error(), "-1") {
		t.Errorf("Open with SegmentSize -1 = %v", err)
	}
	if DefaultOptions().SegmentSize != DefaultSegmentSize {
		t.Error("DefaultOptions")
	}
}

func TestEntriesMaxBytes(t *testing.T) {
	// Segments of a few entries, so limits cross segment boundaries.
	l := mustOpen(t, vfs.NewMem(), testOptions(t, 100))
	var es []*raftpb.Entry
	for i := uint64(1); i <= 40; i++ {
		es = append(es, &raftpb.Entry{Index: i, Term: 1, Data: make([]byte, 10)})
	}
	for i := 0; i < len(es); i += 3 {
		mustAppend(t, l, es[i:min(i+3, len(es))])
	}
	if n := len(segmentFiles(t, l.fs)); n < 5 {
		t.Fatalf("only %d segments", n)
	}
	for _, tc := range []struct {
		lo, hi, max uint64
		want        int
	}{
		{1, 41, 0, 40},
		{1, 41, 1, 1},   // at least one entry
		{1, 41, 10, 2},  // 20 > 10 after the second
		{1, 41, 19, 2},  // 20 > 19
		{1, 41, 20, 3},  // 30 > 20
		{5, 41, 95, 10}, // 100 > 95
		{5, 8, 1000, 3}, // hi bounds it
		{39, 41, 5, 1},
	} {
		got, err := l.Entries(tc.lo, tc.hi, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want {
			t.Errorf("Entries(%d, %d, %d) returned %d entries, want %d", tc.lo, tc.hi, tc.max, len(got), tc.want)
		}
		for i, e := range got {
			if e.Index != tc.lo+uint64(i) {
				t.Fatalf("entry %d has index %d", i, e.Index)
			}
		}
	}
}

func TestRollOver(t *testing.T) {
	mem := vfs.NewMem()
	l := mustOpen(t, mem, testOptions(t, 200))
	m := model{first: 1}
	for i := uint64(1); i <= 100; i += 5 {
		es := ents(i, i+5, i)
		mustAppend(t, l, es)
		m.append(es)
	}
	check(t, l, m)
	names := segmentFiles(t, mem)
	if len(names) < 5 {
		t.Fatalf("want several segments, got %v", names)
	}
	// Every segment but the last is closed and named for its range.
	next := uint64(1)
	for i, n := range names {
		first, last, inprogress, ok := parseName(n)
		if !ok || first != next || inprogress != (i == len(names)-1) {
			t.Fatalf("segments %v: %q out of place", names, n)
		}
		if !inprogress {
			next = last + 1
		}
	}
	l.Close()
	l = mustOpen(t, mem, testOptions(t, 200))
	check(t, l, m)
	// A bigger segment size on reopen keeps existing segments.
	l.Close()
	l = mustOpen(t, mem, testOptions(t, 0))
	check(t, l, m)
}

func TestTruncateSuffix(t *testing.T) {
	// Entry sizes vary, so roll-over points vary too; try every cut.
	for k := uint64(0); k <= 32; k++ {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			mem := vfs.NewMem()
			l := mustOpen(t, mem, testOptions(t, 150))
			m := model{first: 1}
			for i := uint64(1); i <= 30; i += 3 {
				es := ents(i, i+3, 1)
				mustAppend(t, l, es)
				m.append(es)
			}
			if err := l.TruncateSuffix(k); err != nil {
				t.Fatal(err)
			}
			m.truncateSuffix(k)
			check(t, l, m)
			es := ents(m.last()+1, m.last()+4, 2)
			mustAppend(t, l, es)
			m.append(es)
			check(t, l, m)
			l.Close()
			mem.Crash() // TruncateSuffix and Append are durable
			l = mustOpen(t, mem, testOptions(t, 150))
			check(t, l, m)
		})
	}
}

func TestTruncatePrefix(t *testing.T) {
	for _, f := range []uint64{1, 2, 7, 15, 29, 30, 31, 32, 50} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			mem := vfs.NewMem()
			l := mustOpen(t, mem, testOptions(t, 150))
			m := model{first: 1}
			for i := uint64(1); i <= 30; i += 3 {
				es := ents(i, i+3, 1)
				mustAppend(t, l, es)
				m.append(es)
			}
			before := len(segmentFiles(t, mem))
			if err := l.TruncatePrefix(f); err != nil {
				t.Fatal(err)
			}
			m.truncatePrefix(f)
			check(t, l, m)
			if f > 15 && len(segmentFiles(t, mem)) >= before {
				t.Errorf("TruncatePrefix(%d) removed no segment", f)
			}
			if err := l.TruncatePrefix(f - 1); err != nil {
				t.Fatal(err)
			}
			check(t, l, m)

			l.Close()
			mem.Crash()
			l = mustOpen(t, mem, testOptions(t, 150))
			check(t, l, m)
			es := ents(m.last()+1, m.last()+5, 3)
			mustAppend(t, l, es)
			m.append(es)
			check(t, l, m)
			l.Close()
			l = mustOpen(t, mem, testOptions(t, 150))
			check(t, l, m)
			// Cutting the suffix below the first index empties the log.
			if err := l.TruncateSuffix(0); err != nil {
				t.Fatal(err)
			}
			m.truncateSuffix(0)
			check(t, l, m)
			es = ents(m.last()+1, m.last()+3, 4)
			mustAppend(t, l, es)
			m.append(es)
			l.Close()
			l = mustOpen(t, mem, testOptions(t, 150))
			check(t, l, m)
		})
	}
}

func TestReset(t *testing.T) {
	for _, n := range []uint64{1, 5, 12, 20, 21, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			mem := vfs.NewMem()
			l := mustOpen(t, mem, testOptions(t, 100))
			mustAppend(t, l, ents(1, 21, 1))
			if err := l.TruncatePrefix(8); err != nil {
				t.Fatal(err)
			}
			if err := l.Reset(n); err != nil {
				t.Fatal(err)
			}
			m := model{first: n}
			check(t, l, m)
			if got := segmentFiles(t, mem); len(got) != 0 {
				t.Fatalf("segments left after Reset: %v", got)
			}
			l.Close()
			mem.Crash()
			l = mustOpen(t, mem, testOptions(t, 100))
			check(t, l, m)
			es := ents(n, n+10, 2)
			mustAppend(t, l, es)
			m.append(es)
			l.Close()
			l = mustOpen(t, mem, testOptions(t, 100))
			check(t, l, m)
		})
	}
}

func TestOpenIgnoresAndCleans(t *testing.T) {
	mem := vfs.NewMem()
	l := mustOpen(t, mem, testOptions(t, 0))
	mustAppend(t, l, ents(1, 4, 1))
	l.Close()
	writeFile(t, mem, "README", []byte("not a segment"))
	writeFile(t, mem, "log_notanumber", nil)
	writeFile(t, mem, markerName+vfs.TempSuffix, []byte("half a marker"))
	l = mustOpen(t, mem, testOptions(t, 0))
	check(t, l, model{first: 1, terms: []uint64{1, 1, 1}})
	if _, err := mem.Stat(dir + "/" + markerName + vfs.TempSuffix); err == nil {
		t.Error("leftover marker temp file not removed")
	}
	if _, err := mem.Stat(dir + "/README"); err != nil {
		t.Error("unrelated file removed")
	}
}
