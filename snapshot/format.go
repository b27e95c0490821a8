package snapshot

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
)

// A meta file is one record: a 4-byte little-endian payload length, the
// payload's 4-byte little-endian CRC-32C, then the payload, a
// SnapshotMetaTable in protobuf form.
const (
	frameHeader = 8
	// maxMetaSize bounds the meta files this package reads or fetches.
	maxMetaSize = 64 << 20
	// sha256Size is the length of a SnapshotFile's sha256.
	sha256Size = 32
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// encodeTable returns the framed bytes of t.
func encodeTable(t *raftpb.SnapshotMetaTable) ([]byte, error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("snapshot: encode meta table: %w", err)
	}
	if len(payload) > maxMetaSize-frameHeader {
		return nil, fmt.Errorf("snapshot: meta table of %d bytes exceeds %d", len(payload), maxMetaSize-frameHeader)
	}
	b := make([]byte, frameHeader, frameHeader+len(payload))
	binary.LittleEndian.PutUint32(b, uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], crc32Checksum(payload))
	return append(b, payload...), nil
}

// decodeTable parses framed bytes and checks the table: a meta is
// present, and every file has a valid, unique name, a size >= 0 and a
// SHA-256. Every error wraps ErrCorrupt.
func decodeTable(b []byte) (*raftpb.SnapshotMetaTable, error) {
	if len(b) < frameHeader {
		return nil, fmt.Errorf("%w: %d bytes, short of a header", ErrCorrupt, len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) != uint64(len(b)-frameHeader) {
		return nil, fmt.Errorf("%w: payload length %d in %d bytes", ErrCorrupt, n, len(b))
	}
	payload := b[frameHeader:]
	if crc32Checksum(payload) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	t := new(raftpb.SnapshotMetaTable)
	if err := proto.Unmarshal(payload, t); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := checkTable(t); err != nil {
		return nil, err
	}
	return t, nil
}

// checkTable checks what decodeTable promises of a table.
func checkTable(t *raftpb.SnapshotMetaTable) error {
	if t.GetMeta() == nil {
		return fmt.Errorf("%w: meta table without meta", ErrCorrupt)
	}
	seen := make(map[string]bool, len(t.GetFiles()))
	for _, f := range t.GetFiles() {
		if err := validName(f.GetName()); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if seen[f.GetName()] {
			return fmt.Errorf("%w: file %q listed twice", ErrCorrupt, f.GetName())
		}
		seen[f.GetName()] = true
		if f.GetSize() < 0 {
			return fmt.Errorf("%w: file %q has size %d", ErrCorrupt, f.GetName(), f.GetSize())
		}
		if len(f.GetSha256()) != sha256Size {
			return fmt.Errorf("%w: file %q has a %d-byte checksum", ErrCorrupt, f.GetName(), len(f.GetSha256()))
		}
	}
	return nil
}

// crc32Checksum is the CRC-32C of b.
func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, crcTable) }
