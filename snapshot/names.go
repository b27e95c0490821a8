package snapshot

import (
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// MetaFileName is the name of the meta file in every snapshot directory:
// the snapshot's SnapshotMeta and its file table, framed with a length and
// a CRC-32C.
const MetaFileName = "__raft_snapshot_meta"

const (
	// reservedPrefix starts the names graft keeps for itself at the top
	// of a snapshot directory.
	reservedPrefix = "__raft_"
	// progressFileName records, in temp/, the files of a download that
	// are complete, so an interrupted Copy can resume.
	progressFileName = "__raft_copy_progress"
	// tempDirName is the directory a Writer or a Copy works in.
	tempDirName = "temp"
	// snapshotDirPrefix starts the name of every complete snapshot.
	snapshotDirPrefix = "snapshot_"
	// indexDigits is the width of the index in a snapshot directory name.
	indexDigits = 20
)

// snapshotDirName returns the directory name of the snapshot at index.
func snapshotDirName(index uint64) string {
	return fmt.Sprintf("%s%0*d", snapshotDirPrefix, indexDigits, index)
}

// parseSnapshotDirName returns the index a snapshot directory name holds.
func parseSnapshotDirName(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, snapshotDirPrefix)
	if !ok || len(digits) != indexDigits {
		return 0, false
	}
	for i := range len(digits) {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	idx, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || idx == 0 {
		return 0, false
	}
	return idx, true
}

// validName checks a snapshot file name: slash-separated, relative,
// clean, inside the snapshot directory, free of NUL, and not reserved.
// The error wraps ErrBadName.
func validName(name string) error {
	why := ""
	switch {
	case name == "":
		why = "empty"
	case strings.IndexByte(name, 0) >= 0:
		why = "holds a NUL byte"
	case path.IsAbs(name) || filepath.IsAbs(filepath.FromSlash(name)):
		why = "absolute"
	case name == "." || !filepath.IsLocal(filepath.FromSlash(name)):
		why = "outside the snapshot directory"
	case path.Clean(name) != name:
		why = "not clean"
	case strings.HasPrefix(name, reservedPrefix):
		why = "reserved for graft"
	}
	if why != "" {
		return fmt.Errorf("%w: %q is %s", ErrBadName, name, why)
	}
	return nil
}

// parentDirs returns the directories between name's directory and the
// snapshot root, deepest first, relative to the root ("a/b/c" → "a/b",
// "a").
func parentDirs(name string) []string {
	var dirs []string
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		dirs = append(dirs, d)
	}
	return dirs
}
