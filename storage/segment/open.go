package segment

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

// segFile is a segment file found by Open.
type segFile struct {
	name       string
	first      uint64
	last       uint64 // from the name; for in-progress, known after scanning
	inprogress bool
}

// Open opens the log in directory dir, creating the directory if needed,
// and recovers it:
//
//   - A torn tail of the in-progress segment (a frame cut short, or a bad
//     frame followed by nothing that parses as a later entry) is truncated
//     and logged. So is its preallocated space (zeros after the last
//     frame), which the next Append writes anew.
//   - A bad frame anywhere else, a closed segment whose entries do not
//     match its name, a gap between segments, or an unreadable first-index
//     marker is an error wrapping storage.ErrCorrupt naming the file and
//     offset.
//   - Segments that hold only entries before the first index (left by an
//     interrupted TruncatePrefix or Reset) are removed, as are leftover
//     temporary files.
//
// Open reads every segment to check its checksums and build the in-memory
// index, so it needs memory for the largest segment.
func Open(fsys vfs.FS, dir string, opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	l := &Log{fs: fsys, dir: dir, opts: opts, logger: opts.Logger.With("dir", dir)}
	if err := vfs.MkdirAllDurable(fsys, dir, 0o755); err != nil {
		return nil, fmt.Errorf("segment: create directory %s: %w", dir, err)
	}
	if err := l.recover(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) corrupt(name string, off int64, cause error) error {
	return fmt.Errorf("segment: %s at offset %d: %w: %w", l.path(name), off, cause, storage.ErrCorrupt)
}

// recover reads the directory and builds the log's state.
func (l *Log) recover() (err error) {
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("segment: read directory %s: %w", l.dir, err)
	}
	var (
		files     []segFile
		marker    uint64
		hasMarker bool
		garbage   []string // files to remove once the log is valid
	)
	for _, name := range names {
		switch {
		case name == markerName:
			b, err := readFile(l.fs, l.path(name), nil)
			if err != nil {
				return fmt.Errorf("segment: read %s: %w", l.path(name), err)
			}
			if marker, err = decodeMarker(b); err != nil {
				return l.corrupt(name, 0, err)
			}
			hasMarker = true
		case name == markerName+vfs.TempSuffix:
			garbage = append(garbage, name)
		default:
			first, last, inprogress, ok := parseName(name)
			if !ok {
				continue // not ours
			}
			if !inprogress && last < first {
				return l.corrupt(name, 0, errors.New("closed segment's last index precedes its first"))
			}
			files = append(files, segFile{name: name, first: first, last: last, inprogress: inprogress})
		}
	}
	slices.SortFunc(files, func(a, b segFile) int { return cmp.Compare(a.first, b.first) })
	for i, f := range files {
		if i > 0 && f.first == files[i-1].first {
			return l.corrupt(f.name, 0, fmt.Errorf("two segments start at index %d (%s)", f.first, files[i-1].name))
		}
		if f.inprogress && i != len(files)-1 {
			return l.corrupt(f.name, 0, fmt.Errorf("in-progress segment is followed by %s", files[i+1].name))
		}
	}

	first := uint64(1)
	switch {
	case hasMarker:
		first = marker
	case len(files) > 0:
		first = files[0].first
	}

	// Open and scan every segment not wholly before first. On any error,
	// close what was opened.
	var (
		segs   []*segment
		hidden []segFile
		buf    []byte
	)
	defer func() {
		if err != nil {
			closeAll(segs)
		}
	}()
	type torn struct {
		s     *segment
		end   int64
		was   int64
		zeros bool // only preallocated zeros follow the frames
	}
	var tail *torn
	for _, f := range files {
		if !f.inprogress && f.last < first {
			hidden = append(hidden, f)
			continue
		}
		file, err := l.fs.OpenRW(l.path(f.name))
		if err != nil {
			return fmt.Errorf("segment: open %s: %w", l.path(f.name), err)
		}
		s := &segment{first: f.first, f: file, name: f.name, closed: !f.inprogress}
		segs = append(segs, s)
		if buf, err = readFile(l.fs, l.path(f.name), file); err != nil {
			return fmt.Errorf("segment: read %s: %w", l.path(f.name), err)
		}
		ents, end, scanErr := scan(buf, f.first)
		s.ents, s.size, s.alloc = ents, int64(end), int64(end)
		if scanErr != nil {
			if !f.inprogress {
				return l.corrupt(f.name, int64(end), scanErr)
			}
			zeros := allZero(buf[end:])
			if !zeros {
				if off, idx, ok := validFrameAfter(buf, end, f.first+uint64(len(ents))); ok {
					return l.corrupt(f.name, int64(end), fmt.Errorf("%w, yet entry %d follows at offset %d", scanErr, idx, off))
				}
			}
			tail = &torn{s: s, end: int64(end), was: int64(len(buf)), zeros: zeros}
		}
		if !f.inprogress && s.last() != f.last {
			return l.corrupt(f.name, int64(end), fmt.Errorf("segment holds entries [%d, %d], its name says [%d, %d]", s.first, s.last(), f.first, f.last))
		}
		if f.inprogress && s.last() < first {
			// Only entries before first: drop it like a closed one.
			segs = segs[:len(segs)-1]
			_ = file.Close()
			hidden = append(hidden, f)
			if tail != nil && tail.s == s {
				tail = nil
			}
		}
	}
	for i, s := range segs {
		if i == 0 && s.first > first {
			return l.corrupt(s.name, 0, fmt.Errorf("first index is %d but the first segment starts at %d", first, s.first))
		}
		if i > 0 && s.first != segs[i-1].last()+1 {
			return l.corrupt(s.name, 0, fmt.Errorf("gap: previous segment %s ends at index %d, this one starts at %d", segs[i-1].name, segs[i-1].last(), s.first))
		}
	}

	// The log is valid: repair it.
	if tail != nil {
		if tail.zeros {
			l.logger.Debug("segment: cutting preallocated space", "file", tail.s.name, "offset", tail.end,
				"bytes", tail.was-tail.end, "index", tail.s.last())
		} else {
			l.logger.Warn("segment: truncating torn tail", "file", tail.s.name, "offset", tail.end,
				"bytes", tail.was-tail.end, "index", tail.s.last())
		}
		if err := tail.s.f.Truncate(tail.end); err != nil {
			return fmt.Errorf("segment: truncate torn tail of %s: %w", l.path(tail.s.name), err)
		}
		if err := tail.s.f.Sync(); err != nil {
			return fmt.Errorf("segment: sync %s: %w", l.path(tail.s.name), err)
		}
	}
	for _, f := range hidden {
		l.logger.Info("segment: removing segment before first index", "file", f.name, "index", first)
		garbage = append(garbage, f.name)
	}
	for _, name := range garbage {
		if err := l.fs.Remove(l.path(name)); err != nil {
			return fmt.Errorf("segment: remove %s: %w", l.path(name), err)
		}
	}
	if len(garbage) > 0 {
		if err := vfs.SyncDir(l.fs, l.dir); err != nil {
			return fmt.Errorf("segment: sync directory %s: %w", l.dir, err)
		}
	}

	l.mu.first = first
	l.mu.last = first - 1
	if n := len(segs); n > 0 {
		l.mu.last = segs[n-1].last()
	}
	l.mu.segs = segs
	return nil
}

// readFile reads the whole of name into buf's storage. If f is nil the
// file is opened and closed.
func readFile(fsys vfs.FS, name string, f vfs.File) ([]byte, error) {
	if f == nil {
		var err error
		if f, err = fsys.Open(name); err != nil {
			return nil, err
		}
		defer f.Close()
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err == io.EOF && n == len(b) {
		err = nil
	}
	return b[:n], err
}

// scan parses the frames of a segment whose first entry is first. It
// returns the index of the valid frames, the offset where they end and,
// if that is not the end of b, why the next frame is bad.
func scan(b []byte, first uint64) (ents []indexEntry, end int, err error) {
	want := first
	for end < len(b) {
		payload, size, _, err := frameAt(b[end:])
		if err != nil {
			return ents, end, err
		}
		term, index, err := checkPayload(payload)
		if err != nil {
			return ents, end, err
		}
		if index != want {
			return ents, end, fmt.Errorf("%w: entry index %d, want %d", errFrame, index, want)
		}
		ents = append(ents, indexEntry{off: int64(end), term: term})
		end += size
		want++
	}
	return ents, end, nil
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= len(zeros) {
		if !bytes.Equal(b[:len(zeros)], zeros[:]) {
			return false
		}
		b = b[len(zeros):]
	}
	return bytes.Equal(b, zeros[:len(b)])
}

// validFrameAfter looks for a valid frame holding an entry with index at
// least want at any offset from `from` on. Finding one means the bad frame
// at `from` is corruption, not a torn tail.
func validFrameAfter(b []byte, from int, want uint64) (off int, index uint64, ok bool) {
	for p := from; p+frameHeaderSize+minPayload <= len(b); p++ {
		payload, _, _, err := frameAt(b[p:])
		if err != nil {
			continue
		}
		if _, index, err := checkPayload(payload); err == nil && index >= want {
			return p, index, true
		}
	}
	return 0, 0, false
}
