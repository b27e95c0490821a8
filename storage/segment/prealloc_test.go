package segment

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

func preallocOptions(t testing.TB, segSize, prealloc int64) Options {
	o := testOptions(t, segSize)
	o.Preallocate = prealloc
	return o
}

func fileSize(t testing.TB, fsys vfs.FS, name string) int64 {
	t.Helper()
	fi, err := fsys.Stat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// inprogress returns the name of the log's in-progress segment.
func inprogress(t testing.TB, fsys vfs.FS) string {
	t.Helper()
	for _, n := range segmentFiles(t, fsys) {
		if strings.HasPrefix(n, "log_inprogress_") {
			return n
		}
	}
	t.Fatalf("no in-progress segment in %v", segmentFiles(t, fsys))
	return ""
}

// appender appends one entry at a time and counts its frames' bytes.
type appender struct {
	t      testing.TB
	l      *Log
	m      *model
	frames int64
}

// size returns the frame size of the next entry.
func (a *appender) size() int64 { return int64(encodedSize(ent(a.m.last()+1, 1))) }

// add appends the next entry and returns its index.
func (a *appender) add() uint64 {
	i, n := a.m.last()+1, a.size()
	es := ents(i, i+1, 1)
	mustAppend(a.t, a.l, es)
	a.m.append(es)
	a.frames += n
	return i
}

// TestPreallocatedSpace follows the zeros after the frames: written with
// the first append, overwritten by later ones without growing the file,
// extended when an append does not fit, and cut when the segment closes
// and when the log is reopened.
func TestPreallocatedSpace(t *testing.T) {
	mem := vfs.NewMem()
	const segSize, prealloc = 16 << 10, 4 << 10
	l := mustOpen(t, mem, preallocOptions(t, segSize, prealloc))
	m := model{first: 1}

	a := &appender{t: t, l: l, m: &m}
	a.add()
	name := inprogress(t, mem)
	if got, want := fileSize(t, mem, name), a.frames+prealloc; got != want {
		t.Fatalf("after the first append the segment is %d bytes, want %d (frames and zeros)", got, want)
	}
	alloc := a.frames + prealloc
	for a.frames+a.size() <= alloc {
		if i, got := a.add(), fileSize(t, mem, name); got != alloc {
			t.Fatalf("append %d inside the zeros changed the size from %d to %d", i, alloc, got)
		}
	}
	// The next append does not fit: the zeros move on.
	a.add()
	frames := a.frames
	if got, want := fileSize(t, mem, name), frames+prealloc; got != want {
		t.Fatalf("after outgrowing the zeros the segment is %d bytes, want %d", got, want)
	}
	check(t, l, m)
	if !bytes.Equal(readAll(t, mem, name)[frames:], make([]byte, prealloc)) {
		t.Fatal("the preallocated space is not zeros")
	}

	// Reopening cuts the zeros, quietly, and appends go on.
	l.Close()
	var logs bytes.Buffer
	o := preallocOptions(t, segSize, prealloc)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	l = mustOpen(t, mem, o)
	check(t, l, m)
	if got := fileSize(t, mem, name); got != frames {
		t.Fatalf("reopened segment is %d bytes, want its %d bytes of frames", got, frames)
	}
	if strings.Contains(logs.String(), "torn") {
		t.Fatalf("preallocated space reported as a torn tail:\n%s", logs.String())
	}

	// Fill the segment until it closes: the closed file holds only frames,
	// and no zeros ever reach past SegmentSize.
	a = &appender{t: t, l: l, m: &m}
	for len(segmentFiles(t, mem)) < 2 {
		if i, got := a.add(), fileSize(t, mem, inprogress(t, mem)); got > segSize+int64(encodedSize(ent(i, 1))) {
			t.Fatalf("in-progress segment grew to %d bytes, past SegmentSize %d", got, segSize)
		}
	}
	check(t, l, m)
	for _, n := range segmentFiles(t, mem) {
		if strings.HasPrefix(n, "log_inprogress_") {
			continue
		}
		b := readAll(t, mem, n)
		if ents, end, err := scan(b, 1); err != nil || end != len(b) {
			t.Fatalf("closed segment %s: %d entries end at %d of %d bytes (%v)", n, len(ents), end, len(b), err)
		}
	}
	l.Close()
	l = mustOpen(t, mem, o)
	check(t, l, m)
}

// TestPreallocateOff checks that a negative Preallocate writes frames only.
func TestPreallocateOff(t *testing.T) {
	mem := vfs.NewMem()
	l := mustOpen(t, mem, preallocOptions(t, 1<<20, -1))
	mustAppend(t, l, ents(1, 4, 1))
	var want int64
	for _, e := range ents(1, 4, 1) {
		want += int64(encodedSize(e))
	}
	if got := fileSize(t, mem, inprogress(t, mem)); got != want {
		t.Fatalf("segment is %d bytes, want %d", got, want)
	}
}

// TestPreallocateLargeAppend: an append larger than an eighth of
// Preallocate is written alone, without zeros after it; a small append
// after it starts zeros again.
func TestPreallocateLargeAppend(t *testing.T) {
	mem := vfs.NewMem()
	const prealloc = 4 << 10
	l := mustOpen(t, mem, preallocOptions(t, 1<<20, prealloc))
	big := &raftpb.Entry{Index: 1, Term: 1, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL, Data: bytes.Repeat([]byte("b"), prealloc/8)}
	mustAppend(t, l, []*raftpb.Entry{big})
	frames := int64(encodedSize(big))
	name := inprogress(t, mem)
	if got := fileSize(t, mem, name); got != frames {
		t.Fatalf("after an append of %d bytes the segment is %d bytes, want %d (no zeros)", frames, got, frames)
	}
	small := ent(2, 1)
	mustAppend(t, l, []*raftpb.Entry{small})
	frames += int64(encodedSize(small))
	if got, want := fileSize(t, mem, name), frames+prealloc; got != want {
		t.Fatalf("after a small append the segment is %d bytes, want %d (frames and zeros)", got, want)
	}
	got, err := l.Entries(1, 3, 0)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0].Data, big.Data) || !bytes.Equal(got[1].Data, small.Data) {
		t.Fatalf("Entries(1, 3) = %d entries, %v; want the large and the small one", len(got), err)
	}
}

// TestPreallocateNoRoom fails the write of the zeros, as a disk with room
// for the frames but not for the space after them would: the append
// succeeds with the frames alone, and appends try again only once another
// Preallocate bytes of frames are in.
func TestPreallocateNoRoom(t *testing.T) {
	mem := vfs.NewMem()
	var armed atomic.Bool
	var writes atomic.Int32
	fsys := vfs.WithInjector(mem, vfs.FailIf(func(op vfs.Op, _ string) bool {
		return op == vfs.OpWrite && armed.Load() && writes.Add(1) == 2
	}))
	const prealloc = 4 << 10
	l := mustOpen(t, fsys, preallocOptions(t, 1<<20, prealloc))
	m := model{first: 1}
	armed.Store(true)
	mustAppend(t, l, ents(1, 3, 1))
	m.append(ents(1, 3, 1))
	armed.Store(false)
	frames := int64(encodedSize(ent(1, 1)) + encodedSize(ent(2, 1)))
	name := inprogress(t, mem)
	if got := fileSize(t, mem, name); got != frames {
		t.Fatalf("after the failed preallocation the segment is %d bytes, want its %d bytes of frames", got, frames)
	}
	// No new attempt until another Preallocate bytes of frames are in.
	a := &appender{t: t, l: l, m: &m, frames: frames}
	for retry := frames + prealloc; a.frames+a.size() < retry; {
		if i, got := a.add(), fileSize(t, mem, name); got != a.frames {
			t.Fatalf("append %d right after the failure left %d bytes, want its %d bytes of frames", i, got, a.frames)
		}
	}
	a.add()
	if got := fileSize(t, mem, name); got != a.frames+prealloc {
		t.Fatalf("the next append left %d bytes, want %d", got, a.frames+prealloc)
	}
	check(t, l, m)
	l.Close()
	check(t, mustOpen(t, mem, preallocOptions(t, 1<<20, prealloc)), m)
}

// TestZerosThenData checks that what follows the zeros still decides
// whether the tail is torn or the segment corrupt.
func TestZerosThenData(t *testing.T) {
	build := func(after []byte) (*vfs.MemFS, string) {
		mem := vfs.NewMem()
		l := mustOpen(t, mem, preallocOptions(t, 1<<20, 4<<10))
		mustAppend(t, l, ents(1, 4, 1))
		l.Close()
		name := inprogress(t, mem)
		b := readAll(t, mem, name)
		copy(b[len(b)-len(after):], after)
		writeFile(t, mem, name, b)
		return mem, name
	}
	t.Run("garbage", func(t *testing.T) {
		mem, _ := build([]byte("garbage"))
		var logs bytes.Buffer
		o := preallocOptions(t, 1<<20, 4<<10)
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		l := mustOpen(t, mem, o)
		check(t, l, model{first: 1, terms: []uint64{1, 1, 1}})
		if !strings.Contains(logs.String(), "torn tail") {
			t.Fatalf("garbage after the zeros not reported as a torn tail:\n%s", logs.String())
		}
	})
	t.Run("later entry", func(t *testing.T) {
		mem, name := build(appendEntry(nil, ent(9, 1)))
		_, err := Open(mem, dir, preallocOptions(t, 1<<20, 4<<10))
		if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), name) {
			t.Fatalf("Open with entry 9 after the zeros = %v, want ErrCorrupt naming %s", err, name)
		}
	})
}

// TestPreallocatedOnDisk runs appends inside and past the zeros on the
// operating system's filesystem, where they use fdatasync.
func TestPreallocatedOnDisk(t *testing.T) {
	d := t.TempDir()
	o := preallocOptions(t, 64<<10, 8<<10)
	l, err := Open(vfs.Default, d, o)
	if err != nil {
		t.Fatal(err)
	}
	m := model{first: 1}
	for i := uint64(1); i < 2000; i += 10 {
		mustAppend(t, l, ents(i, i+10, 2))
		m.append(ents(i, i+10, 2))
	}
	check(t, l, m)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err = Open(vfs.Default, d, o); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	check(t, l, m)
}
