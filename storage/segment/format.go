package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"

	"github.com/graft-raft/graft/raftpb"
)

// On-disk format. A segment file is a sequence of frames and nothing else:
//
//	frame   = length:uint32le crc:uint32le payload[length]
//	payload = term:uvarint index:uvarint type:uvarint data
//
// crc is the CRC-32C (Castagnoli) of payload. Varints are the minimal
// encoding (encoding/binary's uvarint); type is the EntryType as a uint32.
// data runs to the end of the payload.
const (
	frameHeaderSize = 8
	// minPayload is the smallest valid payload: three one-byte varints.
	minPayload = 3
	// maxEntryOverhead bounds the bytes of a payload that are not data.
	maxEntryOverhead = 2*binary.MaxVarintLen64 + 5
	// maxPayload is the largest payload a frame's length can describe.
	maxPayload = math.MaxUint32
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errFrame is the cause wrapped by every frame or entry decoding failure.
var errFrame = errors.New("bad frame")

func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

// encodedSize returns the bytes appendEntry adds for e.
func encodedSize(e *raftpb.Entry) int {
	return frameHeaderSize + uvarintLen(e.Term) + uvarintLen(e.Index) +
		uvarintLen(uint64(uint32(e.Type))) + len(e.Data)
}

// appendEntry appends e's frame to buf.
func appendEntry(buf []byte, e *raftpb.Entry) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, frameHeaderSize)...)
	buf = binary.AppendUvarint(buf, e.Term)
	buf = binary.AppendUvarint(buf, e.Index)
	buf = binary.AppendUvarint(buf, uint64(uint32(e.Type)))
	buf = append(buf, e.Data...)
	payload := buf[start+frameHeaderSize:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, crcTable))
	return buf
}

// frameAt checks the frame at the start of b and returns its payload and
// total size. It reports io-level shortness (short is true: b ends inside
// the frame) separately from a bad frame.
func frameAt(b []byte) (payload []byte, size int, short bool, err error) {
	if len(b) < frameHeaderSize {
		return nil, 0, true, fmt.Errorf("%w: %d bytes, short of a frame header", errFrame, len(b))
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if n < minPayload {
		return nil, 0, false, fmt.Errorf("%w: payload length %d", errFrame, n)
	}
	if n > uint64(len(b)-frameHeaderSize) {
		return nil, 0, true, fmt.Errorf("%w: payload length %d runs past the end", errFrame, n)
	}
	payload = b[frameHeaderSize : frameHeaderSize+n]
	if crc := crc32.Checksum(payload, crcTable); crc != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0, false, fmt.Errorf("%w: checksum mismatch", errFrame)
	}
	return payload, frameHeaderSize + int(n), false, nil
}

// readUvarint decodes a minimally encoded uvarint.
func readUvarint(b []byte) (uint64, int, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n != uvarintLen(v) {
		return 0, 0, fmt.Errorf("%w: bad varint", errFrame)
	}
	return v, n, nil
}

// decodeHeader decodes the term and index of a payload.
func decodeHeader(p []byte) (term, index uint64, n int, err error) {
	term, n1, err := readUvarint(p)
	if err != nil {
		return 0, 0, 0, err
	}
	index, n2, err := readUvarint(p[n1:])
	if err != nil {
		return 0, 0, 0, err
	}
	return term, index, n1 + n2, nil
}

// decodeEntry decodes payload p into e. e.Data aliases p.
func decodeEntry(p []byte, e *raftpb.Entry) error {
	term, index, n, err := decodeHeader(p)
	if err != nil {
		return err
	}
	typ, n3, err := readUvarint(p[n:])
	if err != nil {
		return err
	}
	if typ > math.MaxUint32 {
		return fmt.Errorf("%w: entry type %d", errFrame, typ)
	}
	e.Term = term
	e.Index = index
	e.Type = raftpb.EntryType(int32(uint32(typ)))
	if data := p[n+n3:]; len(data) > 0 {
		e.Data = data[:len(data):len(data)]
	} else {
		e.Data = nil
	}
	return nil
}

// checkPayload validates payload p as decodeEntry would and returns its
// term and index, without building an Entry.
func checkPayload(p []byte) (term, index uint64, err error) {
	term, index, n, err := decodeHeader(p)
	if err != nil {
		return 0, 0, err
	}
	typ, _, err := readUvarint(p[n:])
	if err != nil {
		return 0, 0, err
	}
	if typ > math.MaxUint32 {
		return 0, 0, fmt.Errorf("%w: entry type %d", errFrame, typ)
	}
	return term, index, nil
}
