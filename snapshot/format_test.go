package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
)

func sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func sampleTable() *raftpb.SnapshotMetaTable {
	return &raftpb.SnapshotMetaTable{
		Meta: testMeta(42, 7),
		Files: []*raftpb.SnapshotFile{
			{Name: "a", Size: 3, Sha256: sum([]byte("abc")), UserMeta: []byte("u")},
			{Name: "db/b", Size: 0, Sha256: sum(nil)},
		},
	}
}

func TestTableRoundTrip(t *testing.T) {
	for _, tab := range []*raftpb.SnapshotMetaTable{
		sampleTable(),
		{Meta: &raftpb.SnapshotMeta{}},
		{Meta: testMeta(1, 1)},
	} {
		b, err := encodeTable(tab)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeTable(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !proto.Equal(got, tab) {
			t.Fatalf("round trip: %v, want %v", got, tab)
		}
	}
}

func TestDecodeTableRejects(t *testing.T) {
	good := mustEncode(t, sampleTable())
	frame := func(tab *raftpb.SnapshotMetaTable) []byte {
		// Frame without the encoder's checks.
		payload, _ := proto.Marshal(tab)
		b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
		b = binary.LittleEndian.AppendUint32(b, crc32Checksum(payload))
		return append(b, payload...)
	}
	withFile := func(f *raftpb.SnapshotFile) []byte {
		tab := sampleTable()
		tab.Files = append(tab.Files, f)
		return frame(tab)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-3] ^= 1
	badLen := bytes.Clone(good)
	badLen[0]++
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short header":   good[:5],
		"truncated":      good[:len(good)-1],
		"trailing byte":  append(bytes.Clone(good), 0),
		"flipped byte":   flipped,
		"bad length":     badLen,
		"not a proto":    frame2([]byte{0xff, 0xff, 0xff}),
		"no meta":        frame(&raftpb.SnapshotMetaTable{}),
		"dotdot name":    withFile(&raftpb.SnapshotFile{Name: "../x", Sha256: sum(nil)}),
		"absolute name":  withFile(&raftpb.SnapshotFile{Name: "/x", Sha256: sum(nil)}),
		"reserved name":  withFile(&raftpb.SnapshotFile{Name: MetaFileName, Sha256: sum(nil)}),
		"duplicate":      withFile(&raftpb.SnapshotFile{Name: "a", Size: 3, Sha256: sum([]byte("abc"))}),
		"negative size":  withFile(&raftpb.SnapshotFile{Name: "n", Size: -1, Sha256: sum(nil)}),
		"no checksum":    withFile(&raftpb.SnapshotFile{Name: "n"}),
		"short checksum": withFile(&raftpb.SnapshotFile{Name: "n", Sha256: []byte{1, 2}}),
	} {
		if _, err := decodeTable(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decode = %v, want ErrCorrupt", name, err)
		}
	}
}

// frame2 frames raw payload bytes.
func frame2(payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32Checksum(payload))
	return append(b, payload...)
}

func FuzzDecodeMetaTable(f *testing.F) {
	for _, tab := range []*raftpb.SnapshotMetaTable{sampleTable(), {Meta: &raftpb.SnapshotMeta{}}} {
		b, err := encodeTable(tab)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add(frame2(nil))
	f.Add(frame2([]byte{0x0a, 0x02, 0x08, 0x01}))
	f.Fuzz(func(t *testing.T, b []byte) {
		// b as a whole file, and b as a payload in a valid frame (the
		// checksum would make the fuzzer's payloads rare otherwise).
		checkDecode(t, b)
		checkDecode(t, frame2(b))
	})
}

func checkDecode(t *testing.T, b []byte) {
	tab, err := decodeTable(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
		}
		return
	}
	// What decodes is valid, and survives a round trip.
	if err := checkTable(tab); err != nil {
		t.Fatal(err)
	}
	enc, err := encodeTable(tab)
	if err != nil {
		t.Fatal(err)
	}
	again, err := decodeTable(enc)
	if err != nil || !proto.Equal(again, tab) {
		t.Fatalf("round trip of a decoded table: %v, %v", again, err)
	}
}
