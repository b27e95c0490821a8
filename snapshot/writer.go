package snapshot

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
)

// Writer writes one snapshot into the Storage's temp/ directory: the
// state machine writes files under Path, registers each with AddFile, and
// the snapshot's coverage with SetMeta; Close makes it the newest snapshot
// durably, Abort throws it away. It implements storage.SnapshotWriter and
// is safe for concurrent use.
type Writer struct {
	s    *Storage
	path string

	mu    sync.Mutex
	done  bool
	meta  *raftpb.SnapshotMeta
	files map[string]*writerFile
	order []string
}

// writerFile is one file of a Writer.
type writerFile struct {
	file *raftpb.SnapshotFile
	// hashed is set once file's size and checksums are known; synced
	// once the file's contents and directory entry are durable.
	hashed, synced bool
}

var _ storage.SnapshotWriter = (*Writer)(nil)

func newWriter(s *Storage) *Writer {
	return &Writer{s: s, path: s.tempPath(), files: make(map[string]*writerFile)}
}

// Path returns the directory to write the snapshot's files into.
func (w *Writer) Path() string { return w.path }

// AddFile registers the file name, written under Path, as part of the
// snapshot, with optional user data returned by Reader.FileMeta. name is
// slash-separated, relative and clean (filepath.Clean(name) == name), must
// not escape Path, hold a NUL byte or start with "__raft_", and must be a
// regular file reached without symlinks; otherwise the error wraps
// ErrBadName. Adding a name twice is ErrBadName too. The file's size and
// checksums are computed by Close, so it may still be written until then.
func (w *Writer) AddFile(name string, userMeta []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ErrClosed
	}
	if _, ok := w.files[name]; ok {
		return fmt.Errorf("%w: %q added twice", ErrBadName, name)
	}
	if err := w.checkRegular(name); err != nil {
		return err
	}
	w.files[name] = &writerFile{file: &raftpb.SnapshotFile{Name: name, UserMeta: append([]byte(nil), userMeta...)}}
	w.order = append(w.order, name)
	return nil
}

// checkRegular checks that name is a regular file under Path and that no
// component of its path is a symlink.
func (w *Writer) checkRegular(name string) error {
	p := w.path
	parts := strings.Split(name, "/")
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := w.s.fs.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q does not exist under %s", ErrBadName, name, w.path)
		}
		if err != nil {
			return fmt.Errorf("snapshot: stat %s: %w", p, err)
		}
		last := i == len(parts)-1
		if (last && !fi.Mode().IsRegular()) || (!last && !fi.IsDir()) {
			return fmt.Errorf("%w: %q: %s is a %v, not a regular file or directory", ErrBadName, name, p, fi.Mode().Type())
		}
	}
	return nil
}

// SetMeta sets what the snapshot covers: its last included index and term
// and the configuration at that index (peers, old_peers, learners). The
// Writer keeps a copy.
func (w *Writer) SetMeta(m *raftpb.SnapshotMeta) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.meta = proto.CloneOf(m)
}

// Close makes the snapshot durable and the newest: it syncs every added
// file (computing its size and checksums), writes the meta file atomically,
// syncs temp/, renames temp/ to snapshot_<index>/ and syncs the storage
// directory; then the Storage references the new snapshot and drops its
// reference on the old one. An index not above the newest snapshot's is
// ErrStale. Any failure returns an error, removes temp/ and leaves the
// previous snapshot intact and the newest. Close or Abort after Close is
// ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ErrClosed
	}
	w.done = true
	defer w.s.endWrite()
	_, err := w.s.commit(w, false, false)
	return err
}

// Abort discards the snapshot: temp/ is removed. Abort after Close or
// Abort does nothing.
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	defer w.s.endWrite()
	if err := w.s.fs.RemoveAll(w.path); err != nil {
		w.s.log.Warn("snapshot: remove temp on abort", "err", err)
	}
}

// syncFile makes f durable, computing its size and checksums if not
// known.
func (w *Writer) syncFile(f *writerFile) error {
	name := f.file.GetName()
	if err := w.checkRegular(name); err != nil {
		return err
	}
	p := filepath.Join(w.path, filepath.FromSlash(name))
	file, err := w.s.fs.Open(p)
	if err != nil {
		return fmt.Errorf("snapshot: open %s: %w", p, err)
	}
	defer file.Close()
	if !f.hashed {
		f.hashed = w.s.knownChecksum(name, p, f.file)
	}
	if !f.hashed {
		sha, crc := sha256.New(), crc32.New(crcTable)
		n, err := io.CopyBuffer(io.MultiWriter(sha, crc), struct{ io.Reader }{file}, make([]byte, 64<<10))
		if err != nil {
			return fmt.Errorf("snapshot: read %s: %w", p, err)
		}
		f.file.Size, f.file.Sha256, f.file.Crc32C = n, sha.Sum(nil), proto.Uint32(crc.Sum32())
		f.hashed = true
	}
	if err := file.Sync(); err != nil {
		return fmt.Errorf("snapshot: sync %s: %w", p, err)
	}
	f.synced = true
	return nil
}

// knownChecksum sets f's size and checksums to those recorded for name
// in the newest snapshot, and returns true, when the file at p is that
// very file (a hard link to the same inode, as state machines make of
// immutable files such as pebble's SSTs) and the newest snapshot has both
// its checksums, so that saving does not read it again.
func (s *Storage) knownChecksum(name, p string, f *raftpb.SnapshotFile) bool {
	s.mu.Lock()
	prev := s.mu.newestSnap
	s.mu.Unlock()
	if prev == nil {
		return false
	}
	old, ok := prev.byName[name]
	if !ok || old.Crc32C == nil {
		return false
	}
	a, err := s.fs.Stat(p)
	if err != nil {
		return false
	}
	b, err := s.fs.Stat(prev.localPath(name))
	if err != nil || !os.SameFile(a, b) || a.Size() != old.GetSize() {
		return false
	}
	f.Size, f.Sha256, f.Crc32C = old.GetSize(), slices.Clone(old.GetSha256()), proto.Uint32(old.GetCrc32C())
	return true
}
