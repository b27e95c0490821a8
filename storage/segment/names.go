package segment

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// File names in a log directory.
const (
	inprogressPrefix = "log_inprogress_"
	closedPrefix     = "log_"
	// markerName is the file recording the log's first index, written
	// by TruncatePrefix and Reset.
	markerName = "first_index"
	digits     = 20
)

func inprogressName(first uint64) string {
	return fmt.Sprintf("%s%020d", inprogressPrefix, first)
}

func closedName(first, last uint64) string {
	return fmt.Sprintf("%s%020d_%020d", closedPrefix, first, last)
}

func parseIndex(s string) (uint64, bool) {
	if len(s) != digits {
		return 0, false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

// parseName parses a segment file name. For an in-progress segment last
// is 0.
func parseName(name string) (first, last uint64, inprogress, ok bool) {
	if rest, found := strings.CutPrefix(name, inprogressPrefix); found {
		first, ok = parseIndex(rest)
		return first, 0, true, ok && first > 0
	}
	rest, found := strings.CutPrefix(name, closedPrefix)
	if !found || len(rest) != 2*digits+1 || rest[digits] != '_' {
		return 0, 0, false, false
	}
	first, ok1 := parseIndex(rest[:digits])
	last, ok2 := parseIndex(rest[digits+1:])
	return first, last, false, ok1 && ok2 && first > 0
}

// The marker holds one frame whose 8-byte payload is the first index,
// little-endian.
const markerSize = frameHeaderSize + 8

func encodeMarker(first uint64) []byte {
	b := make([]byte, markerSize)
	binary.LittleEndian.PutUint32(b, 8)
	binary.LittleEndian.PutUint64(b[frameHeaderSize:], first)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[frameHeaderSize:], crcTable))
	return b
}

func decodeMarker(b []byte) (uint64, error) {
	if len(b) != markerSize {
		return 0, fmt.Errorf("%w: %d bytes, want %d", errFrame, len(b), markerSize)
	}
	if n := binary.LittleEndian.Uint32(b); n != 8 {
		return 0, fmt.Errorf("%w: payload length %d, want 8", errFrame, n)
	}
	if crc32.Checksum(b[frameHeaderSize:], crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errFrame)
	}
	first := binary.LittleEndian.Uint64(b[frameHeaderSize:])
	if first == 0 {
		return 0, fmt.Errorf("%w: first index 0", errFrame)
	}
	return first, nil
}
