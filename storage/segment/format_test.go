package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"testing"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

var formatSeeds = []*raftpb.Entry{
	{Term: 1, Index: 1, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL, Data: []byte("hello")},
	{Term: 0, Index: 0},
	{Term: math.MaxUint64, Index: math.MaxUint64, Type: raftpb.EntryType(-1), Data: bytes.Repeat([]byte{0xff}, 300)},
	{Term: 300, Index: 1 << 40, Type: raftpb.EntryType_ENTRY_TYPE_CONFIGURATION},
}

func TestEncodeDecode(t *testing.T) {
	for _, want := range formatSeeds {
		b := appendEntry([]byte("prefix"), want)
		if len(b)-len("prefix") != encodedSize(want) {
			t.Fatalf("encodedSize = %d, encoded %d", encodedSize(want), len(b)-len("prefix"))
		}
		payload, size, _, err := frameAt(b[len("prefix"):])
		if err != nil || size != encodedSize(want) {
			t.Fatalf("frameAt = %d, %v", size, err)
		}
		var got raftpb.Entry
		if err := decodeEntry(payload, &got); err != nil {
			t.Fatal(err)
		}
		if got.Term != want.Term || got.Index != want.Index || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("decoded %v, want %v", &got, want)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	b := appendEntry(nil, formatSeeds[0])
	var e raftpb.Entry
	allocs := testing.AllocsPerRun(100, func() {
		payload, _, _, _ := frameAt(b)
		_ = decodeEntry(payload, &e)
	})
	if allocs != 0 {
		t.Fatalf("decoding allocates %v times", allocs)
	}
	buf := make([]byte, 0, 1024)
	allocs = testing.AllocsPerRun(100, func() { buf = appendEntry(buf[:0], formatSeeds[0]) })
	if allocs != 0 {
		t.Fatalf("encoding allocates %v times", allocs)
	}
}

// FuzzDecode checks that the frame and entry decoders never panic and
// accept only what the encoder produces.
func FuzzDecode(f *testing.F) {
	for _, e := range formatSeeds {
		b := appendEntry(nil, e)
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add(make([]byte, 16))
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80})
	f.Add(encodeMarker(7))
	f.Fuzz(func(t *testing.T, b []byte) {
		// b as it is, and b as the payload of a valid frame: the checksum
		// would make the fuzzer's payloads rare otherwise.
		checkDecode(t, b)
		checkDecode(t, frameRaw(b))
	})
}

// frameRaw frames an arbitrary payload with a correct length and checksum.
func frameRaw(payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

func checkDecode(t *testing.T, b []byte) {
	_, _ = decodeMarker(b)
	payload, size, _, err := frameAt(b)
	if err != nil {
		return
	}
	var e raftpb.Entry
	err = decodeEntry(payload, &e)
	term, index, cerr := checkPayload(payload)
	if (err == nil) != (cerr == nil) {
		t.Fatalf("decodeEntry = %v but checkPayload = %v", err, cerr)
	}
	if err != nil {
		if !errors.Is(err, errFrame) {
			t.Fatalf("error %v does not wrap errFrame", err)
		}
		return
	}
	if term != e.Term || index != e.Index {
		t.Fatalf("checkPayload = %d/%d, decodeEntry = %d/%d", term, index, e.Term, e.Index)
	}
	if re := appendEntry(nil, &e); !bytes.Equal(re, b[:size]) {
		t.Fatalf("re-encoding gives %x, want %x", re, b[:size])
	}
}

// FuzzOpen checks that opening a directory holding an arbitrary segment
// file either fails with ErrCorrupt or yields a log that works.
func FuzzOpen(f *testing.F) {
	full := segmentBytes(6)
	f.Add(full, uint16(1), false)
	f.Add(full, uint16(1), true)
	f.Add(full[:len(full)-5], uint16(1), false)
	f.Add(append(bytes.Clone(full), 0, 0, 0, 0), uint16(1), false)
	f.Add(full, uint16(3), false)
	f.Add([]byte{}, uint16(1), false)
	f.Fuzz(func(t *testing.T, b []byte, first uint16, closed bool) {
		mem := vfs.NewMem()
		if err := vfs.MkdirAllDurable(mem, dir, 0o755); err != nil {
			t.Fatal(err)
		}
		lo := max(uint64(first), 1)
		name := inprogressName(lo)
		if closed {
			name = closedName(lo, lo+5)
		}
		writeFile(t, mem, name, b)
		l, err := Open(mem, dir, Options{SegmentSize: 1 << 20})
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
			return
		}
		defer l.Close()
		before := readEntries(t, l)
		next := l.LastIndex() + 1
		es := ents(next, next+2, 1)
		if err := l.Append(es); err != nil {
			t.Fatalf("Append after Open: %v", err)
		}
		l.Close()
		l, err = Open(mem, dir, Options{SegmentSize: 1 << 20})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer l.Close()
		after := readEntries(t, l)
		want := append(before, es...)
		if len(after) != len(want) {
			t.Fatalf("reopened log holds %d entries, want %d", len(after), len(want))
		}
		for i, e := range after {
			w := want[i]
			if e.Index != w.Index || e.Term != w.Term || e.Type != w.Type || !bytes.Equal(e.Data, w.Data) {
				t.Fatalf("entry %d = %v, want %v", i, e, w)
			}
		}
	})
}

// readEntries returns every entry of l, checking indexes and Term.
func readEntries(t *testing.T, l *Log) []*raftpb.Entry {
	t.Helper()
	first, last := l.FirstIndex(), l.LastIndex()
	if first == 0 || last+1 < first {
		t.Fatalf("log is [%d, %d]", first, last)
	}
	es, err := l.Entries(first, last+1, 0)
	if err != nil {
		t.Fatalf("Entries(%d, %d): %v", first, last+1, err)
	}
	if len(es) != int(last+1-first) {
		t.Fatalf("Entries returned %d entries for [%d, %d]", len(es), first, last)
	}
	for i, e := range es {
		if e.Index != first+uint64(i) {
			t.Fatalf("entry %d has index %d", first+uint64(i), e.Index)
		}
		if term, err := l.Term(e.Index); err != nil || term != e.Term {
			t.Fatalf("Term(%d) = %d, %v; entry has %d", e.Index, term, err, e.Term)
		}
	}
	return es
}
