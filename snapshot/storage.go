package snapshot

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/vfs"
)

// Options configure a Storage. The zero value is valid.
type Options struct {
	// FS is the filesystem the storage lives on. nil means vfs.Default.
	FS vfs.FS
	// Logger receives cleanup and failure events with the field dir (and
	// index, file). nil discards them.
	Logger *slog.Logger
}

// Storage is one group's local snapshot directory.
//
// A Writer works in temp/; closing it renames temp/ to
// snapshot_<index, 20 digits>/, which then holds the state machine's
// files and MetaFileName. Snapshots are reference counted: the Storage
// holds one reference on the newest snapshot and each open Reader holds
// one; a snapshot directory is deleted when its last reference goes and it
// is not the newest. At most one Writer or Copy is in progress at a time.
//
// A Storage is safe for concurrent use.
type Storage struct {
	fs  vfs.FS
	dir string
	log *slog.Logger

	mu struct {
		sync.Mutex
		closed bool
		// writing is set while a Writer or a Copy owns temp/.
		writing bool
		// newest is the newest snapshot's index (0: none) and newestSnap
		// its description.
		newest     uint64
		newestSnap *snap
		// refs counts the references on each snapshot directory.
		refs map[uint64]int
	}
}

// snap is the immutable description of one complete snapshot, shared by
// its Readers.
type snap struct {
	index  uint64
	path   string
	table  *raftpb.SnapshotMetaTable
	names  []string
	byName map[string]*raftpb.SnapshotFile
}

func newSnap(index uint64, dir string, t *raftpb.SnapshotMetaTable) *snap {
	s := &snap{index: index, path: dir, table: t, byName: make(map[string]*raftpb.SnapshotFile, len(t.GetFiles()))}
	for _, f := range t.GetFiles() {
		s.names = append(s.names, f.GetName())
		s.byName[f.GetName()] = f
	}
	slices.Sort(s.names)
	return s
}

// localPath returns the path of the snapshot file name.
func (s *snap) localPath(name string) string {
	return filepath.Join(s.path, filepath.FromSlash(name))
}

// Open opens the snapshot storage in dir, creating dir durably if needed.
// It keeps the newest snapshot and removes every older snapshot_*
// directory, and removes temp/ unless it holds a download that a Copy of
// a newer snapshot can resume. A newest snapshot whose meta file is
// missing or damaged, or whose files are missing or of the wrong size, is
// an error wrapping ErrCorrupt: nothing is removed then.
func Open(dir string, opts Options) (*Storage, error) {
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Storage{fs: opts.FS, dir: dir, log: opts.Logger.With("dir", dir)}
	s.mu.refs = make(map[uint64]int)
	if err := vfs.MkdirAllDurable(s.fs, dir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: create %s: %w", dir, err)
	}
	names, err := s.fs.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot: list %s: %w", dir, err)
	}
	var indexes []uint64
	for _, n := range names {
		if idx, ok := parseSnapshotDirName(n); ok {
			indexes = append(indexes, idx)
		} else if n != tempDirName {
			s.log.Warn("snapshot: unknown entry in snapshot directory", "name", n)
		}
	}
	slices.Sort(indexes)
	if len(indexes) > 0 {
		newest := indexes[len(indexes)-1]
		sn, err := s.load(newest)
		if err != nil {
			return nil, err
		}
		// A crash between a Copy's rename and its cleanup can leave the
		// progress file behind.
		_ = s.fs.Remove(filepath.Join(sn.path, progressFileName))
		s.mu.newest, s.mu.newestSnap = newest, sn
		s.mu.refs[newest] = 1
	}
	changed := false
	for _, idx := range indexes[:max(len(indexes)-1, 0)] {
		p := s.snapshotPath(idx)
		s.log.Info("snapshot: removing old snapshot", "index", idx)
		if err := s.fs.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("snapshot: remove %s: %w", p, err)
		}
		changed = true
	}
	if slices.Contains(names, tempDirName) && !s.resumable() {
		s.log.Info("snapshot: removing temp directory")
		if err := s.fs.RemoveAll(s.tempPath()); err != nil {
			return nil, fmt.Errorf("snapshot: remove %s: %w", s.tempPath(), err)
		}
		changed = true
	}
	if changed {
		if err := vfs.SyncDir(s.fs, dir); err != nil {
			return nil, fmt.Errorf("snapshot: sync %s: %w", dir, err)
		}
	}
	return s, nil
}

// resumable reports whether temp/ holds a Copy's progress for a snapshot
// newer than the newest.
func (s *Storage) resumable() bool {
	t, err := readTable(s.fs, filepath.Join(s.tempPath(), progressFileName))
	if err != nil {
		return false
	}
	return t.GetMeta().GetLastIncludedIndex() > s.mu.newest
}

// load reads and checks the snapshot at index.
func (s *Storage) load(index uint64) (*snap, error) {
	p := s.snapshotPath(index)
	t, err := readTable(s.fs, filepath.Join(p, MetaFileName))
	if err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: snapshot %s: %w", ErrCorrupt, p, err)
		}
		return nil, fmt.Errorf("snapshot: read meta of %s: %w", p, err)
	}
	if got := t.GetMeta().GetLastIncludedIndex(); got != index {
		return nil, fmt.Errorf("%w: snapshot %s: meta has index %d", ErrCorrupt, p, got)
	}
	sn := newSnap(index, p, t)
	for _, f := range t.GetFiles() {
		fi, err := s.fs.Lstat(sn.localPath(f.GetName()))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w: snapshot %s: file %q is missing", ErrCorrupt, p, f.GetName())
		case err != nil:
			return nil, fmt.Errorf("snapshot: stat %q in %s: %w", f.GetName(), p, err)
		case !fi.Mode().IsRegular() || fi.Size() != f.GetSize():
			return nil, fmt.Errorf("%w: snapshot %s: file %q is %v of %d bytes, want a regular file of %d",
				ErrCorrupt, p, f.GetName(), fi.Mode(), fi.Size(), f.GetSize())
		}
	}
	return sn, nil
}

// readTable reads and decodes a framed meta table file.
func readTable(fsys vfs.FS, name string) (*raftpb.SnapshotMetaTable, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetaSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxMetaSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, name, maxMetaSize)
	}
	t, err := decodeTable(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

func (s *Storage) snapshotPath(index uint64) string {
	return filepath.Join(s.dir, snapshotDirName(index))
}

func (s *Storage) tempPath() string { return filepath.Join(s.dir, tempDirName) }

// Dir returns the storage's directory.
func (s *Storage) Dir() string { return s.dir }

// LastIndex returns the index and term of the newest snapshot, or 0, 0 if
// there is none.
func (s *Storage) LastIndex() (index, term uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.newestSnap == nil {
		return 0, 0
	}
	return s.mu.newest, s.mu.newestSnap.table.GetMeta().GetLastIncludedTerm()
}

// Create starts a local save: it empties temp/ and returns a Writer for
// it. It fails with ErrBusy while another Writer or a Copy is in progress,
// and with ErrClosed after Close.
func (s *Storage) Create() (*Writer, error) {
	if err := s.beginWrite(); err != nil {
		return nil, err
	}
	tmp := s.tempPath()
	if err := s.fs.RemoveAll(tmp); err != nil {
		s.endWrite()
		return nil, fmt.Errorf("snapshot: remove %s: %w", tmp, err)
	}
	if err := s.fs.MkdirAll(tmp, 0o755); err != nil {
		s.endWrite()
		return nil, fmt.Errorf("snapshot: create %s: %w", tmp, err)
	}
	return newWriter(s), nil
}

// beginWrite takes the writer slot.
func (s *Storage) beginWrite() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.mu.closed:
		return ErrClosed
	case s.mu.writing:
		return ErrBusy
	}
	s.mu.writing = true
	return nil
}

// endWrite releases the writer slot.
func (s *Storage) endWrite() {
	s.mu.Lock()
	s.mu.writing = false
	s.mu.Unlock()
}

// Open returns a Reader of the newest snapshot, holding a reference on it
// until the Reader is closed, or nil, nil if there is no snapshot.
func (s *Storage) Open() (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil, ErrClosed
	}
	if s.mu.newestSnap == nil {
		return nil, nil
	}
	s.mu.refs[s.mu.newest]++
	return &Reader{s: s, snap: s.mu.newestSnap}, nil
}

// Discard gives up the newest snapshot, which must be at index: for a
// snapshot found damaged (Reader.Verify failed). The storage then has no
// snapshot, so that nothing is served from it and a Copy reuses none of
// its files; the directory is deleted once the last open Reader of it is
// closed. It fails if index is not the newest snapshot.
func (s *Storage) Discard(index uint64) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.mu.newestSnap == nil || s.mu.newest != index {
		newest := s.mu.newest
		s.mu.Unlock()
		return fmt.Errorf("snapshot: discard %d: the newest snapshot is %d", index, newest)
	}
	s.log.Warn("snapshot: discarding the newest snapshot", "index", index)
	s.mu.newest, s.mu.newestSnap = 0, nil
	s.mu.Unlock()
	s.unref(index) // the storage's own reference
	return nil
}

// Close closes the storage: Create, Copy and Open fail with ErrClosed
// afterwards. Readers stay valid until closed, and nothing on disk
// changes. Closing twice is a no-op.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.closed = true
	return nil
}

// ref takes one more reference on the snapshot at index, which must have
// one already.
func (s *Storage) ref(index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.refs[index] <= 0 {
		panic(fmt.Sprintf("snapshot: ref of unreferenced snapshot %d", index))
	}
	s.mu.refs[index]++
}

// unref drops a reference on the snapshot at index and deletes its
// directory if that was the last one and it is not the newest.
func (s *Storage) unref(index uint64) {
	s.mu.Lock()
	s.mu.refs[index]--
	n := s.mu.refs[index]
	if n < 0 {
		s.mu.Unlock()
		panic(fmt.Sprintf("snapshot: snapshot %d unreferenced more than referenced", index))
	}
	drop := n == 0 && index != s.mu.newest
	if n == 0 {
		delete(s.mu.refs, index)
	}
	s.mu.Unlock()
	if !drop {
		return
	}
	p := s.snapshotPath(index)
	s.log.Info("snapshot: deleting unreferenced snapshot", "index", index)
	if err := s.fs.RemoveAll(p); err != nil {
		// Open removes it at the next start.
		s.log.Warn("snapshot: delete old snapshot", "index", index, "err", err)
		return
	}
	if err := vfs.SyncDir(s.fs, s.dir); err != nil {
		s.log.Warn("snapshot: sync after delete", "index", index, "err", err)
	}
}

// commit makes the files of w, in temp/, the newest snapshot, following
// the durable recipe: sync every file (hashing those without a checksum),
// sync the directories below temp/, write the meta file atomically (which
// syncs temp/), rename temp/ to snapshot_<index>/ and sync the storage
// directory. If any step fails, the previous snapshot stays the newest and
// intact; temp/ is removed unless keepTemp. On success the storage holds
// a reference on the new snapshot and drops its reference on the old one;
// if wantReader, a Reader of the new snapshot (with its own reference) is
// returned.
func (s *Storage) commit(w *Writer, keepTemp, wantReader bool) (r *Reader, err error) {
	tmp := s.tempPath()
	defer func() {
		if err != nil && !keepTemp {
			if rerr := s.fs.RemoveAll(tmp); rerr != nil {
				s.log.Warn("snapshot: remove temp after failed save", "err", rerr)
			}
		}
	}()
	if w.meta == nil || w.meta.GetLastIncludedIndex() == 0 {
		return nil, errors.New("snapshot: writer closed without SetMeta (or with index 0)")
	}
	index := w.meta.GetLastIncludedIndex()
	s.mu.Lock()
	closed, newest := s.mu.closed, s.mu.newest
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if index <= newest {
		return nil, fmt.Errorf("%w: snapshot %d, newest is %d", ErrStale, index, newest)
	}

	table := &raftpb.SnapshotMetaTable{Meta: proto.CloneOf(w.meta)}
	dirs := map[string]bool{}
	for _, name := range slices.Sorted(slices.Values(w.order)) {
		f := w.files[name]
		if !f.synced {
			if err := w.syncFile(f); err != nil {
				return nil, err
			}
		}
		table.Files = append(table.Files, f.file)
		for _, d := range parentDirs(name) {
			dirs[d] = true
		}
	}
	// Deepest first, so a directory's entry in its parent is synced
	// after the directory itself.
	sorted := slices.Collect(maps.Keys(dirs))
	slices.SortFunc(sorted, func(a, b string) int {
		if c := cmp.Compare(strings.Count(b, "/"), strings.Count(a, "/")); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, d := range sorted {
		if err := vfs.SyncDir(s.fs, filepath.Join(tmp, filepath.FromSlash(d))); err != nil {
			return nil, fmt.Errorf("snapshot: sync directory %s of snapshot %d: %w", d, index, err)
		}
	}
	data, err := encodeTable(table)
	if err != nil {
		return nil, err
	}
	if err := vfs.WriteFileAtomic(s.fs, filepath.Join(tmp, MetaFileName), data); err != nil {
		return nil, fmt.Errorf("snapshot: write meta of snapshot %d: %w", index, err)
	}
	target := s.snapshotPath(index)
	if err := s.fs.RemoveAll(target); err != nil {
		return nil, fmt.Errorf("snapshot: remove leftover %s: %w", target, err)
	}
	if err := s.fs.Rename(tmp, target); err != nil {
		return nil, fmt.Errorf("snapshot: rename %s to %s: %w", tmp, target, err)
	}
	if err := vfs.SyncDir(s.fs, s.dir); err != nil {
		// The rename may or may not be durable. Put temp/ back so that
		// this process keeps the old snapshot as the newest; after a
		// crash either snapshot is complete.
		if rerr := s.fs.Rename(target, tmp); rerr != nil {
			s.log.Warn("snapshot: undo rename after failed directory sync", "index", index, "err", rerr)
		}
		return nil, fmt.Errorf("snapshot: sync %s after renaming snapshot %d: %w", s.dir, index, err)
	}

	sn := newSnap(index, target, table)
	s.mu.Lock()
	old := s.mu.newest
	s.mu.newest, s.mu.newestSnap = index, sn
	s.mu.refs[index]++
	if wantReader {
		s.mu.refs[index]++
		r = &Reader{s: s, snap: sn}
	}
	s.mu.Unlock()
	if old != 0 {
		s.unref(old)
	}
	s.log.Info("snapshot: saved", "index", index, "term", w.meta.GetLastIncludedTerm(), "files", len(table.Files))
	return r, nil
}

// Reader is an open snapshot: it holds a reference that keeps the
// snapshot's directory from being deleted until Close. It implements
// storage.SnapshotReader and is safe for concurrent use.
//
// A snapshot's files are immutable: read them, never modify them in place
// (Copy hard-links them into newer snapshots).
type Reader struct {
	s    *Storage
	snap *snap

	mu     sync.Mutex
	closed bool
}

// Path returns the snapshot's directory.
func (r *Reader) Path() string { return r.snap.path }

// Index returns the snapshot's last included index.
func (r *Reader) Index() uint64 { return r.snap.index }

// Meta returns a copy of what the snapshot covers.
func (r *Reader) Meta() *raftpb.SnapshotMeta { return proto.CloneOf(r.snap.table.GetMeta()) }

// Files lists the snapshot's files, relative to Path, slash-separated and
// sorted. The caller may modify the slice.
func (r *Reader) Files() []string { return slices.Clone(r.snap.names) }

// FileMeta returns a copy of the user data stored with the file name by
// Writer.AddFile, and whether the snapshot has that file.
func (r *Reader) FileMeta(name string) ([]byte, bool) {
	f, ok := r.snap.byName[name]
	if !ok {
		return nil, false
	}
	return slices.Clone(f.GetUserMeta()), true
}

// Table returns a copy of the snapshot's meta table: its meta and every
// file's name, size, checksums and user data.
func (r *Reader) Table() *raftpb.SnapshotMetaTable { return proto.CloneOf(r.snap.table) }

// Verify reads every file of the snapshot and checks its size and
// content against the meta table: its CRC-32C, or its SHA-256 in a
// snapshot made before graft recorded CRC-32C. A mismatch is an error
// wrapping ErrCorrupt that names the file (the first such file in the
// table): the snapshot must not be loaded. It reads the whole snapshot,
// verifyParallel files at once.
func (r *Reader) Verify() error {
	files := r.snap.table.GetFiles()
	errs := make([]error, len(files))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(verifyParallel, len(files)) {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for i := range next {
				errs[i] = r.verifyFile(files[i], buf)
			}
		})
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // the first file's in table order, as one reader would find
		}
	}
	return nil
}

// verifyParallel is how many files Verify reads at once: a disk serves
// several reads in flight faster than one. The bench's follower restarting
// on its 1 GiB snapshot of 16 files, which the install left out of the
// page cache, took 2.57-2.63 s to start reading one file at a time and
// 1.51-1.60 s with 4 (3 alternating pairs of 2 runs).
const verifyParallel = 4

// verifyFile checks one file of the snapshot, reading it through buf.
func (r *Reader) verifyFile(f *raftpb.SnapshotFile, buf []byte) error {
	p := r.snap.localPath(f.GetName())
	file, err := r.s.fs.Open(p)
	if err != nil {
		return fmt.Errorf("snapshot %d: open %s: %w: %w", r.snap.index, p, err, ErrCorrupt)
	}
	defer file.Close()
	c := newChecker(f)
	n, err := io.CopyBuffer(c, struct{ io.Reader }{file}, buf)
	if err != nil {
		return fmt.Errorf("snapshot %d: read %s: %w", r.snap.index, p, err)
	}
	if n != f.GetSize() {
		return fmt.Errorf("snapshot %d: %s has %d bytes, the meta table says %d: %w", r.snap.index, p, n, f.GetSize(), ErrCorrupt)
	}
	if bad := c.mismatch(); bad != "" {
		return fmt.Errorf("snapshot %d: %s has %s (meta table): %w", r.snap.index, p, bad, ErrCorrupt)
	}
	return nil
}

// Ref returns another Reader of the same snapshot with a reference of its
// own, closed independently (for example one handed to a FileService).
// Ref of a closed Reader panics.
func (r *Reader) Ref() *Reader {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		panic("snapshot: Ref of a closed Reader")
	}
	r.s.ref(r.snap.index)
	return &Reader{s: r.s, snap: r.snap}
}

// Close drops the Reader's reference; the snapshot's directory is deleted
// if that was the last reference and a newer snapshot exists. Closing
// twice is a no-op.
func (r *Reader) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.s.unref(r.snap.index)
	return nil
}
