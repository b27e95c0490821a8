package metafile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/bits"
	"path/filepath"
	"sync"

	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

// FileName is the name of the file a Store keeps in its directory.
const FileName = "raft_meta"

const (
	headerSize = 8
	version    = 1
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errFormat is the cause wrapped by every decoding failure.
var errFormat = errors.New("bad meta record")

// Store is a storage.MetaStorage kept in the file raft_meta. It caches
// the saved state, so Load does no I/O. It is safe for concurrent use.
type Store struct {
	fs   vfs.FS
	path string

	mu struct {
		sync.Mutex
		term   uint64
		vote   string
		closed bool
	}
}

var _ storage.MetaStorage = (*Store)(nil)

// Open opens the store in directory dir, creating the directory if
// needed, and reads the saved state. A leftover temporary file from an
// interrupted Save is removed. A damaged raft_meta is an error wrapping
// storage.ErrCorrupt that names the file.
func Open(fsys vfs.FS, dir string) (*Store, error) {
	if err := vfs.MkdirAllDurable(fsys, dir, 0o755); err != nil {
		return nil, fmt.Errorf("metafile: create directory %s: %w", dir, err)
	}
	s := &Store{fs: fsys, path: filepath.Join(dir, FileName)}
	tmp := s.path + vfs.TempSuffix
	if err := fsys.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("metafile: remove %s: %w", tmp, err)
	}
	b, err := readFile(fsys, s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("metafile: read %s: %w", s.path, err)
	}
	term, vote, off, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("metafile: %s at offset %d: %w: %w", s.path, off, err, storage.ErrCorrupt)
	}
	s.mu.term, s.mu.vote = term, vote
	return s, nil
}

func readFile(fsys vfs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Load implements storage.MetaStorage.
func (s *Store) Load() (term uint64, votedFor string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return 0, "", storage.ErrClosed
	}
	return s.mu.term, s.mu.vote, nil
}

// Save implements storage.MetaStorage. If it fails, the file holds
// either the old or the new state and Load still returns the old one.
func (s *Store) Save(term uint64, votedFor string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return storage.ErrClosed
	}
	if err := vfs.WriteFileAtomic(s.fs, s.path, encode(term, votedFor)); err != nil {
		return fmt.Errorf("metafile: save %s: %w", s.path, err)
	}
	s.mu.term, s.mu.vote = term, votedFor
	return nil
}

// Close implements storage.MetaStorage. Closing twice is a no-op.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.closed = true
	return nil
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// encode returns the file contents for term and vote.
func encode(term uint64, vote string) []byte {
	b := make([]byte, headerSize, headerSize+1+binary.MaxVarintLen64+len(vote))
	b = append(b, version)
	b = binary.AppendUvarint(b, term)
	b = append(b, vote...)
	payload := b[headerSize:]
	binary.LittleEndian.PutUint32(b, uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(payload, crcTable))
	return b
}

// decode parses file contents. On error, off is the offset of the bad
// part.
func decode(b []byte) (term uint64, vote string, off int, err error) {
	if len(b) < headerSize {
		return 0, "", 0, fmt.Errorf("%w: %d bytes, short of a header", errFormat, len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) != uint64(len(b)-headerSize) {
		return 0, "", 0, fmt.Errorf("%w: payload length %d in a %d-byte file", errFormat, n, len(b))
	}
	payload := b[headerSize:]
	if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, "", 0, fmt.Errorf("%w: checksum mismatch", errFormat)
	}
	if len(payload) < 2 || payload[0] != version {
		return 0, "", headerSize, fmt.Errorf("%w: unknown version or short payload", errFormat)
	}
	term, m := binary.Uvarint(payload[1:])
	if m <= 0 || m != uvarintLen(term) {
		return 0, "", headerSize + 1, fmt.Errorf("%w: bad term", errFormat)
	}
	return term, string(payload[1+m:]), 0, nil
}
