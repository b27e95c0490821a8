package segment

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

// maxRetainedBuf is the largest encoding buffer Append keeps between
// calls; a bigger batch allocates its own.
const maxRetainedBuf = 4 << 20

// Log is a storage.LogStorage kept in segment files in one directory.
//
// As the interface requires, FirstIndex, LastIndex, Term and Entries are
// safe for concurrent use with each other and with the mutating methods;
// Append, TruncatePrefix, TruncateSuffix, Reset and Close are serialized
// internally, but are meant to be called from one goroutine at a time.
// Readers never wait for an fsync: Append publishes entries only once
// they are durable, and the mutating methods hold the read-write lock
// only to update the in-memory index, never across disk I/O other than
// reads.
//
// After an I/O error that may leave the disk and the in-memory index
// disagreeing (a failed fsync, rename or remove), the Log refuses further
// mutations with an error wrapping storage.ErrClosed and the cause; reads
// of entries already durable keep working. Reopen the directory to
// recover. A failed write before an fsync (such as a full disk) is rolled
// back and the Log stays usable.
type Log struct {
	fs     vfs.FS
	dir    string
	opts   Options
	logger *slog.Logger

	// wmu serializes the mutating methods. Lock order: wmu, then mu.
	// The fields below and every write to mu's fields happen with wmu
	// held, so a mutating method may read mu's fields without mu.
	wmu     sync.Mutex
	buf     []byte       // encoding buffer reused by Append
	pending []indexEntry // index entries of the batch being appended
	failed  error        // the error that made the log unusable

	mu struct {
		sync.RWMutex
		// first and last are FirstIndex and LastIndex.
		first, last uint64
		// segs are the live segments, contiguous and sorted. Every
		// segment's last index is at least first, except that the
		// last segment may be empty or (after TruncateSuffix below
		// first) hold only entries before first. The last segment's
		// last entry is last, if the log holds any entry.
		segs   []*segment
		closed bool
	}
}

var _ storage.LogStorage = (*Log)(nil)

// indexEntry locates one entry in a segment.
type indexEntry struct {
	off  int64 // offset of the entry's frame
	term uint64
}

// segment is one segment file and its in-memory index.
type segment struct {
	first uint64   // index of the first entry, from the file name
	f     vfs.File // open for reading and writing

	// Guarded by Log.mu (written only with Log.wmu held, too).
	name   string // base name, which changes when closed or reopened
	closed bool
	ents   []indexEntry
	size   int64 // end of the last durable frame

	// alloc is the end of the zeros written and synced after the frames
	// (size if there are none); no zeros are written before the frames
	// reach retryAlloc. Only the holder of Log.wmu uses them.
	alloc, retryAlloc int64
}

// last returns the index of the segment's last entry, or first-1 if it
// is empty.
func (s *segment) last() uint64 { return s.first + uint64(len(s.ents)) - 1 }

// end returns the offset just past entry i's frame.
func (s *segment) end(i int) int64 {
	if i+1 < len(s.ents) {
		return s.ents[i+1].off
	}
	return s.size
}

func (l *Log) path(name string) string { return filepath.Join(l.dir, name) }

// FirstIndex implements storage.LogStorage.
func (l *Log) FirstIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.first
}

// LastIndex implements storage.LogStorage.
func (l *Log) LastIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.last
}

// find returns the live segment holding index i, which must be in
// [first, last]. l.mu must be held.
func (l *Log) find(i uint64) *segment {
	segs := l.mu.segs
	j := sort.Search(len(segs), func(j int) bool { return segs[j].first > i }) - 1
	return segs[j]
}

func (l *Log) outOfRange(what string, i uint64) error {
	return fmt.Errorf("segment: %s %d outside [%d, %d]: %w", what, i, l.mu.first, l.mu.last, storage.ErrOutOfRange)
}

// Term implements storage.LogStorage. It does no I/O.
func (l *Log) Term(index uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.mu.closed {
		return 0, storage.ErrClosed
	}
	if index < l.mu.first || index > l.mu.last {
		return 0, l.outOfRange("term of index", index)
	}
	s := l.find(index)
	return s.ents[index-s.first].term, nil
}

// Entries implements storage.LogStorage. The returned entries share
// read buffers; the caller must not modify them. The data limit counts
// len(Data) and includes the entry that crosses maxBytes.
func (l *Log) Entries(lo, hi, maxBytes uint64) ([]*raftpb.Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.mu.closed {
		return nil, storage.ErrClosed
	}
	switch {
	case lo > hi:
		return nil, fmt.Errorf("segment: entries [%d, %d): lo > hi: %w", lo, hi, storage.ErrOutOfRange)
	case lo < l.mu.first:
		return nil, l.outOfRange("entries from", lo)
	case hi > l.mu.last+1:
		return nil, l.outOfRange("entries to", hi-1)
	case lo == hi:
		return nil, nil
	}
	var (
		out  []*raftpb.Entry
		data uint64
	)
	for idx := lo; idx < hi; {
		s := l.find(idx)
		i0 := int(idx - s.first)
		iEnd := int(min(hi, s.last()+1) - s.first)
		j := iEnd
		if maxBytes > 0 {
			// Read until a lower bound of the data exceeds maxBytes;
			// decoding below stops at the exact entry.
			bound := data
			for j = i0; j < iEnd; {
				if n := s.end(j) - s.ents[j].off - frameHeaderSize - maxEntryOverhead; n > 0 {
					bound += uint64(n)
				}
				j++
				if bound > maxBytes {
					break
				}
			}
		}
		start := s.ents[i0].off
		buf := make([]byte, s.end(j-1)-start)
		if _, err := s.f.ReadAt(buf, start); err != nil {
			return nil, fmt.Errorf("segment: read %s at offset %d: %w", l.path(s.name), start, err)
		}
		if out == nil {
			out = make([]*raftpb.Entry, 0, min(hi-lo, uint64(j-i0)))
		}
		slab := make([]raftpb.Entry, j-i0)
		for k := i0; k < j; k++ {
			at := s.ents[k].off - start
			frame := buf[at : s.end(k)-start]
			e := &slab[k-i0]
			payload, size, _, err := frameAt(frame)
			if err == nil && size != len(frame) {
				err = fmt.Errorf("%w: frame size %d, index says %d", errFrame, size, len(frame))
			}
			if err == nil {
				err = decodeEntry(payload, e)
			}
			if err == nil && (e.Index != s.first+uint64(k) || e.Term != s.ents[k].term) {
				err = fmt.Errorf("%w: entry %d/%d, index says %d/%d", errFrame, e.Index, e.Term, s.first+uint64(k), s.ents[k].term)
			}
			if err != nil {
				return nil, fmt.Errorf("segment: %s at offset %d: %w: %w", l.path(s.name), s.ents[k].off, err, storage.ErrCorrupt)
			}
			out = append(out, e)
			data += uint64(len(e.Data))
			if maxBytes > 0 && data > maxBytes {
				return out, nil
			}
		}
		idx = s.first + uint64(j)
	}
	return out, nil
}

// usable returns an error if the log can no longer be mutated.
// l.wmu must be held.
func (l *Log) usable() error {
	if l.mu.closed {
		return storage.ErrClosed
	}
	if l.failed != nil {
		return fmt.Errorf("segment: log unusable after an earlier error (%w); reopen it: %w", l.failed, storage.ErrClosed)
	}
	return nil
}

// fail records err as the reason the log can no longer be mutated and
// returns it. l.wmu must be held.
func (l *Log) fail(err error) error {
	l.failed = err
	l.logger.Error("segment: log failed; reopen to recover", "err", err)
	return err
}

// Append implements storage.LogStorage. It writes the batch with one
// write and one fsync. An entry whose index does not continue the log is
// an error wrapping storage.ErrOutOfRange.
func (l *Log) Append(entries []*raftpb.Entry) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	next := l.mu.last + 1
	total := 0
	if next+uint64(len(entries)) < next {
		return fmt.Errorf("segment: append: %d entries after index %d overflow: %w", len(entries), next-1, storage.ErrOutOfRange)
	}
	for i, e := range entries {
		if e == nil {
			return fmt.Errorf("segment: append: entry %d is nil", i)
		}
		if e.Index != next+uint64(i) {
			return fmt.Errorf("segment: append: entry %d has index %d, want %d: %w", i, e.Index, next+uint64(i), storage.ErrOutOfRange)
		}
		n := encodedSize(e)
		if uint64(n-frameHeaderSize) > maxPayload {
			return fmt.Errorf("segment: append: entry %d: %d bytes of data is too large", e.Index, len(e.Data))
		}
		total += n
	}
	s, err := l.segmentForAppend()
	if err != nil {
		return err
	}

	buf := slices.Grow(l.buf[:0], total)
	pending := l.pending[:0]
	for _, e := range entries {
		pending = append(pending, indexEntry{off: s.size + int64(len(buf)), term: e.Term})
		buf = appendEntry(buf, e)
	}
	if cap(buf) <= maxRetainedBuf {
		l.buf = buf[:0]
	}

	if err := l.write(s, buf); err != nil {
		return err
	}

	l.mu.Lock()
	s.ents = append(s.ents, pending...)
	s.size += int64(len(buf))
	l.mu.last = entries[len(entries)-1].Index
	l.mu.Unlock()

	if cap(pending) <= maxRetainedBuf/16 {
		l.pending = pending[:0]
	}
	return nil
}

// zeros is what write extends a segment's preallocated space with.
var zeros [128 << 10]byte

// write makes buf durable right after segment s's last frame. Inside the
// segment's synced zeros that is a write and an fdatasync; past them, the
// write carries on with the next Preallocate bytes of zeros and is made
// durable with fsync. The frames are written alone if there is no room
// for the zeros (or writing them fails otherwise), and if buf is larger
// than an eighth of Preallocate: zeros that few appends of its size fit
// in would cost more writing than the fsyncs they save. A failed write is
// rolled back; a failed sync makes the log unusable. l.wmu must be held.
func (l *Log) write(s *segment, buf []byte) error {
	end := s.size + int64(len(buf))
	if end <= s.alloc {
		if _, err := s.f.WriteAt(buf, s.size); err != nil {
			return l.rollback(s, fmt.Errorf("segment: append to %s: %w", l.path(s.name), err))
		}
		if err := vfs.Datasync(s.f); err != nil {
			return l.fail(fmt.Errorf("segment: sync %s: %w", l.path(s.name), err))
		}
		return nil
	}
	if alloc := min(end+l.opts.Preallocate, max(l.opts.SegmentSize, end)); alloc > end && end >= s.retryAlloc && int64(len(buf)) <= l.opts.Preallocate/8 {
		err := writeZeros(s.f, buf, s.size, alloc)
		if err == nil {
			if err := s.f.Sync(); err != nil {
				return l.fail(fmt.Errorf("segment: sync %s: %w", l.path(s.name), err))
			}
			s.alloc = alloc
			return nil
		}
		if err := l.rollback(s, fmt.Errorf("segment: append to %s: %w", l.path(s.name), err)); l.failed != nil {
			return err
		}
		// Try again once another Preallocate bytes of frames are in, not
		// on every append of a disk that stays full.
		s.retryAlloc = end + l.opts.Preallocate
		l.logger.Warn("segment: appending without preallocated space", "file", s.name, "offset", s.size, "err", err)
	}
	if _, err := s.f.WriteAt(buf, s.size); err != nil {
		return l.rollback(s, fmt.Errorf("segment: append to %s: %w", l.path(s.name), err))
	}
	if err := s.f.Sync(); err != nil {
		return l.fail(fmt.Errorf("segment: sync %s: %w", l.path(s.name), err))
	}
	s.alloc = end
	return nil
}

// writeZeros writes buf at off followed by zeros up to alloc.
func writeZeros(f vfs.File, buf []byte, off, alloc int64) error {
	if _, err := f.WriteAt(buf, off); err != nil {
		return err
	}
	for at := off + int64(len(buf)); at < alloc; {
		n := min(alloc-at, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:n], at); err != nil {
			return err
		}
		at += n
	}
	return nil
}

// rollback cuts segment s back to its last durable frame after a failed
// write, so that the next append starts clean, and returns err; if even
// that fails, the log becomes unusable. l.wmu must be held.
func (l *Log) rollback(s *segment, err error) error {
	s.alloc = s.size
	if terr := s.f.Truncate(s.size); terr != nil {
		return l.fail(errors.Join(err, fmt.Errorf("segment: roll back %s: %w", l.path(s.name), terr)))
	}
	return err
}

// segmentForAppend returns the in-progress segment, first closing it if
// it is full and creating a new one if needed. l.wmu must be held.
func (l *Log) segmentForAppend() (*segment, error) {
	if n := len(l.mu.segs); n > 0 {
		s := l.mu.segs[n-1]
		if !s.closed && s.size < l.opts.SegmentSize {
			return s, nil
		}
		if !s.closed {
			if err := l.closeSegment(s); err != nil {
				return nil, err
			}
		}
	}
	first := l.mu.last + 1
	name := inprogressName(first)
	f, err := l.fs.Create(l.path(name))
	if err != nil {
		return nil, fmt.Errorf("segment: create %s: %w", l.path(name), err)
	}
	if err := vfs.SyncDir(l.fs, l.dir); err != nil {
		_ = f.Close()
		return nil, l.fail(fmt.Errorf("segment: sync directory %s: %w", l.dir, err))
	}
	s := &segment{first: first, f: f, name: name}
	l.mu.Lock()
	l.mu.segs = append(l.mu.segs, s)
	l.mu.Unlock()
	return s, nil
}

// closeSegment renames the full in-progress segment s to its closed name.
// Its contents are already durable. l.wmu must be held.
func (l *Log) closeSegment(s *segment) error {
	if s.alloc > s.size {
		if err := l.truncateFile(s, s.size); err != nil {
			return l.fail(err)
		}
	}
	name := closedName(s.first, s.last())
	if err := l.fs.Rename(l.path(s.name), l.path(name)); err != nil {
		return l.fail(fmt.Errorf("segment: close %s: %w", l.path(s.name), err))
	}
	if err := vfs.SyncDir(l.fs, l.dir); err != nil {
		return l.fail(fmt.Errorf("segment: sync directory %s: %w", l.dir, err))
	}
	l.mu.Lock()
	s.name, s.closed = name, true
	l.mu.Unlock()
	return nil
}

// reopen renames closed segment s back to its in-progress name, so it
// may be truncated and appended to. l.wmu must be held.
func (l *Log) reopen(s *segment) error {
	name := inprogressName(s.first)
	if err := l.fs.Rename(l.path(s.name), l.path(name)); err != nil {
		return fmt.Errorf("segment: reopen %s: %w", l.path(s.name), err)
	}
	if err := vfs.SyncDir(l.fs, l.dir); err != nil {
		return fmt.Errorf("segment: sync directory %s: %w", l.dir, err)
	}
	l.mu.Lock()
	s.name, s.closed = name, false
	l.mu.Unlock()
	return nil
}

// truncateFile durably cuts segment s's file to size. s must be the last
// segment on disk. l.wmu must be held.
func (l *Log) truncateFile(s *segment, size int64) error {
	if s.closed {
		if err := l.reopen(s); err != nil {
			return err
		}
	}
	s.alloc = size
	if err := s.f.Truncate(size); err != nil {
		return fmt.Errorf("segment: truncate %s: %w", l.path(s.name), err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("segment: sync %s: %w", l.path(s.name), err)
	}
	return nil
}

// removeDurably deletes segments from the highest down, syncing the
// directory after each, so that a crash leaves a contiguous prefix.
// l.wmu must be held.
func (l *Log) removeDurably(segs []*segment) error {
	closeAll(segs)
	for _, s := range slices.Backward(segs) {
		if err := l.fs.Remove(l.path(s.name)); err != nil {
			return fmt.Errorf("segment: remove %s: %w", l.path(s.name), err)
		}
		if err := vfs.SyncDir(l.fs, l.dir); err != nil {
			return fmt.Errorf("segment: sync directory %s: %w", l.dir, err)
		}
	}
	return nil
}

// TruncateSuffix implements storage.LogStorage. lastKept below
// FirstIndex()-1 empties the log, whose next append then starts at
// FirstIndex().
func (l *Log) TruncateSuffix(lastKept uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	k := max(lastKept, l.mu.first-1)
	if k >= l.mu.last {
		return nil
	}

	// Unpublish the entries after k, then change the files.
	l.mu.Lock()
	segs := l.mu.segs
	i := sort.Search(len(segs), func(i int) bool { return segs[i].first > k })
	drop := slices.Clone(segs[i:])
	clear(segs[i:])
	l.mu.segs = segs[:i]
	var target *segment
	var size int64
	if i > 0 && segs[i-1].last() > k {
		target = segs[i-1]
		cut := k + 1 - target.first
		size = target.ents[cut].off
		target.ents = target.ents[:cut]
		target.size = size
	}
	l.mu.last = k
	l.mu.Unlock()

	if err := l.removeDurably(drop); err != nil {
		return l.fail(err)
	}
	if target != nil {
		if err := l.truncateFile(target, size); err != nil {
			return l.fail(err)
		}
	}
	return nil
}

// writeMarker durably records first as the log's first index.
func (l *Log) writeMarker(first uint64) error {
	if err := vfs.WriteFileAtomic(l.fs, l.path(markerName), encodeMarker(first)); err != nil {
		return fmt.Errorf("segment: write %s: %w", l.path(markerName), err)
	}
	return nil
}

// TruncatePrefix implements storage.LogStorage. It records firstKept
// durably, then deletes the segments that hold only earlier entries;
// entries before firstKept in a segment it keeps are hidden.
func (l *Log) TruncatePrefix(firstKept uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if firstKept <= l.mu.first {
		return nil
	}
	if err := l.writeMarker(firstKept); err != nil {
		return l.fail(err)
	}

	l.mu.Lock()
	segs := l.mu.segs
	i := 0
	for i < len(segs) && segs[i].last() < firstKept {
		i++
	}
	drop := slices.Clone(segs[:i])
	l.mu.segs = slices.Clone(segs[i:])
	l.mu.first = firstKept
	if firstKept > l.mu.last+1 {
		l.mu.last = firstKept - 1
	}
	l.mu.Unlock()

	// A crash may bring these files back; Open removes them again, as
	// they lie below the marker.
	closeAll(drop)
	for _, s := range drop {
		if err := l.fs.Remove(l.path(s.name)); err != nil {
			return l.fail(fmt.Errorf("segment: remove %s: %w", l.path(s.name), err))
		}
	}
	return nil
}

// Reset implements storage.LogStorage. nextIndex must be at least 1.
//
// After a crash during Reset the log is either as before minus some
// suffix of entries at or after nextIndex, or empty with first index
// nextIndex.
func (l *Log) Reset(nextIndex uint64) error {
	if nextIndex == 0 {
		return fmt.Errorf("segment: reset to index 0: %w", storage.ErrOutOfRange)
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	l.mu.Lock()
	segs := l.mu.segs
	l.mu.segs = nil
	l.mu.first = nextIndex
	l.mu.last = nextIndex - 1
	l.mu.Unlock()
	defer closeAll(segs)

	// Remove every entry at or after nextIndex (including entries hidden
	// below the old first index), so that the marker alone hides the
	// rest.
	i := sort.Search(len(segs), func(i int) bool { return segs[i].first >= nextIndex })
	if err := l.removeDurably(segs[i:]); err != nil {
		return l.fail(err)
	}
	segs = segs[:i]
	if n := len(segs); n > 0 && segs[n-1].last() >= nextIndex {
		s := segs[n-1]
		if err := l.truncateFile(s, s.ents[nextIndex-s.first].off); err != nil {
			return l.fail(err)
		}
	}
	if err := l.writeMarker(nextIndex); err != nil {
		return l.fail(err)
	}
	closeAll(segs)
	for _, s := range segs {
		if err := l.fs.Remove(l.path(s.name)); err != nil {
			return l.fail(fmt.Errorf("segment: remove %s: %w", l.path(s.name), err))
		}
	}
	if len(segs) > 0 {
		if err := vfs.SyncDir(l.fs, l.dir); err != nil {
			return l.fail(fmt.Errorf("segment: sync directory %s: %w", l.dir, err))
		}
	}
	return nil
}

// Close implements storage.LogStorage. Every appended entry is already
// durable, so Close only releases files. Closing twice is a no-op.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.closed = true
	segs := l.mu.segs
	l.mu.segs = nil
	l.mu.Unlock()
	var errs []error
	for _, s := range segs {
		if err := s.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("segment: close %s: %w", l.path(s.name), err))
		}
	}
	return errors.Join(errs...)
}

// closeAll closes the files of segments that are no longer live.
func closeAll(segs []*segment) {
	for _, s := range segs {
		_ = s.f.Close()
	}
}
