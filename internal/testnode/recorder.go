package testnode

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/raftpb"
)

// Names of the Recorder's files in a snapshot.
const (
	// snapApplied holds the record: uvarint index, term, length, command.
	snapApplied = "recorder/applied.dat"
	// snapBlobs lists the blob files, one "name size" line each.
	snapBlobs = "recorder/blobs.txt"
	// snapBlobDir holds the blob files, under their names.
	snapBlobDir = "blobs"
)

// blobCmd starts a blob write in blob mode: "W <file> <chunk> <payload>".
const blobCmd = "W "

// RecorderOptions configure a Recorder. The zero value records commands
// only.
type RecorderOptions struct {
	// Dir is the state directory, which holds the blob files. It is
	// scratch space, emptied by NewRecorder: the state is rebuilt from the
	// newest snapshot and the log. Required in blob mode.
	Dir string
	// ChunkSize > 0 turns blob mode on: a command "W <file> <chunk>
	// <payload>" writes payload at offset chunk*ChunkSize of the blob file
	// <file>, on disk, and is recorded as "W <file> <chunk> <len>:<digest>"
	// without its payload.
	ChunkSize int64
	// VerifyLoads makes LoadSnapshot hash every file of the snapshot and
	// compare it with the snapshot's meta table before it loads it.
	VerifyLoads bool
}

// LoadInfo describes one snapshot a Recorder loaded.
type LoadInfo struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
	// Verified is set when every file's SHA-256 was checked.
	Verified bool          `json:"verified"`
	Took     time.Duration `json:"took"`
}

// Recorder is a state machine that records every command it applies, and
// in blob mode keeps blob files on disk. It checks that indexes only grow
// and reports a violation through Err. It saves and loads real snapshots:
// the record goes into a snapshot file, and every blob file is hard-linked
// into the snapshot (so a save costs no copy); a blob file shared with a
// snapshot is never modified in place but copied first (copy on write), so
// a snapshot's files stay immutable. Loading links the snapshot's blob
// files into the state directory the same way. Memory stays bounded by
// the record, which in blob mode holds no payloads.
//
// It is safe for concurrent use; graft calls Apply, SaveSnapshot and
// LoadSnapshot from one goroutine.
type Recorder struct {
	opts RecorderOptions

	mu    sync.Mutex
	ents  []Entry
	last  uint64          // last index applied or loaded
	blobs map[string]bool // blob file -> shared with a snapshot (copy before writing)
	err   error           // first violation
	loads []LoadInfo      // snapshots loaded since the process started
	saves int             // snapshots saved since the process started
}

var _ graft.StateMachine = (*Recorder)(nil)

// NewRecorder returns a Recorder; in blob mode it empties opts.Dir.
func NewRecorder(opts RecorderOptions) (*Recorder, error) {
	r := &Recorder{opts: opts, blobs: map[string]bool{}}
	if opts.ChunkSize > 0 && opts.Dir == "" {
		return nil, errors.New("testnode: blob mode needs a state directory")
	}
	if opts.Dir != "" {
		if err := os.RemoveAll(opts.Dir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *Recorder) violation(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("testnode: "+format, args...)
	}
}

// Apply implements graft.StateMachine; each entry's result is its position
// in the record, from 1.
func (r *Recorder) Apply(it *graft.Iterator) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for it.Next() {
		if it.Index() <= r.last {
			r.violation("applied index %d after %d", it.Index(), r.last)
		}
		r.last = it.Index()
		cmd := string(it.Data())
		if r.opts.ChunkSize > 0 && strings.HasPrefix(cmd, blobCmd) {
			var err error
			if cmd, err = r.applyBlob(it.Data()); err != nil {
				return err // fatal: the state on disk is unknown
			}
		}
		r.ents = append(r.ents, Entry{Index: it.Index(), Term: it.Term(), Cmd: cmd})
		it.SetResult(len(r.ents))
	}
	return nil
}

// BlobCommand returns the command that writes payload at chunk of file.
func BlobCommand(file string, chunk int, payload []byte) string {
	return blobCmd + file + " " + strconv.Itoa(chunk) + " " + string(payload)
}

// BlobRecord returns how the Recorder records BlobCommand(file, chunk,
// payload).
func BlobRecord(file string, chunk int, payload []byte) string {
	sum := sha256.Sum256(payload)
	return fmt.Sprintf("W %s %d %d:%x", file, chunk, len(payload), sum[:8])
}

// applyBlob writes a blob command's payload and returns its record. A
// malformed command is a violation, recorded as is but without payload.
func (r *Recorder) applyBlob(data []byte) (string, error) {
	parts := bytes.SplitN(data[len(blobCmd):], []byte(" "), 3)
	if len(parts) != 3 {
		r.violation("malformed blob command %.40q", data)
		return "W malformed", nil
	}
	name, payload := string(parts[0]), parts[2]
	chunk, err := strconv.ParseUint(string(parts[1]), 10, 32)
	if err != nil || !validBlobName(name) {
		r.violation("malformed blob command %.40q", data)
		return "W malformed", nil
	}
	p := filepath.Join(r.opts.Dir, name)
	if r.blobs[name] {
		// Shared with a snapshot: give the live file its own inode first.
		if err := copyFile(p, p+".cow"); err != nil {
			return "", err
		}
		if err := os.Rename(p+".cow", p); err != nil {
			return "", err
		}
	}
	r.blobs[name] = false
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", err
	}
	_, err = f.WriteAt(payload, int64(chunk)*r.opts.ChunkSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return BlobRecord(name, int(chunk), payload), nil
}

func validBlobName(name string) bool {
	if name == "" || name == "." || name == ".." || strings.HasSuffix(name, ".cow") {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// copyFile copies src to a new file dst, streaming.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = io.Copy(out, in)
	return err
}

// linkOrCopy hard-links src to dst, or copies it if linking fails.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// SaveSnapshot implements graft.StateMachine. It captures the state before
// it returns: the record is copied in memory and every blob file is
// hard-linked into w (and from then on copied before it is written). The
// snapshot files are written and added on another goroutine.
func (r *Recorder) SaveSnapshot(w graft.SnapshotWriter, done func(error)) {
	r.mu.Lock()
	view := slices.Clone(r.ents)
	names := slices.Sorted(maps.Keys(r.blobs))
	var err error
	if len(names) > 0 {
		err = os.MkdirAll(filepath.Join(w.Path(), snapBlobDir), 0o755)
	}
	for _, name := range names {
		if err != nil {
			break
		}
		err = linkOrCopy(filepath.Join(r.opts.Dir, name), filepath.Join(w.Path(), snapBlobDir, name))
		r.blobs[name] = true
	}
	r.saves++
	r.mu.Unlock()
	if err != nil {
		done(err)
		return
	}
	go func() { done(writeSnapshot(w, view, names)) }()
}

func writeSnapshot(w graft.SnapshotWriter, ents []Entry, blobs []string) error {
	if err := os.MkdirAll(filepath.Join(w.Path(), "recorder"), 0o755); err != nil {
		return err
	}
	err := writeFileStream(filepath.Join(w.Path(), snapApplied), func(bw *bufio.Writer) error {
		var hdr []byte
		for _, e := range ents {
			hdr = binary.AppendUvarint(hdr[:0], e.Index)
			hdr = binary.AppendUvarint(hdr, e.Term)
			hdr = binary.AppendUvarint(hdr, uint64(len(e.Cmd)))
			bw.Write(hdr)
			bw.WriteString(e.Cmd)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = writeFileStream(filepath.Join(w.Path(), snapBlobs), func(bw *bufio.Writer) error {
		for _, name := range blobs {
			fi, err := os.Stat(filepath.Join(w.Path(), snapBlobDir, name))
			if err != nil {
				return err
			}
			fmt.Fprintf(bw, "%s %d\n", name, fi.Size())
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range append([]string{snapApplied, snapBlobs}, blobFiles(blobs)...) {
		if err := w.AddFile(name, nil); err != nil {
			return err
		}
	}
	return nil
}

func blobFiles(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = snapBlobDir + "/" + n
	}
	return out
}

func writeFileStream(path string, fill func(*bufio.Writer) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(f, 64<<10)
	if err := fill(bw); err != nil {
		return err
	}
	return bw.Flush()
}

// tabler is the optional part of a graft.SnapshotReader that exposes the
// snapshot's meta table (snapshot.Reader has it).
type tabler interface {
	Table() *raftpb.SnapshotMetaTable
}

// snapshotContent is a snapshot as the Recorder reads it.
type snapshotContent struct {
	ents  []Entry
	blobs map[string]int64 // name -> size
	bytes int64
}

// CheckSnapshot reads and checks the snapshot in sr as LoadSnapshot would,
// without changing the state: the record decodes, its indexes grow and
// end at or before the snapshot's index, every listed blob file is present
// with its size, and (with verify) every file's SHA-256 matches the meta
// table.
func (r *Recorder) CheckSnapshot(sr graft.SnapshotReader, verify bool) error {
	_, err := readSnapshot(sr, verify)
	return err
}

func readSnapshot(sr graft.SnapshotReader, verify bool) (*snapshotContent, error) {
	meta := sr.Meta()
	files := sr.Files()
	sc := &snapshotContent{blobs: map[string]int64{}}
	if slices.Contains(files, snapApplied) {
		ents, err := readRecord(filepath.Join(sr.Path(), snapApplied))
		if err != nil {
			return nil, err
		}
		for i, e := range ents {
			if (i > 0 && e.Index <= ents[i-1].Index) || e.Index > meta.GetLastIncludedIndex() {
				return nil, fmt.Errorf("testnode: snapshot %d: record has index %d at position %d", meta.GetLastIncludedIndex(), e.Index, i)
			}
		}
		sc.ents = ents
	}
	if slices.Contains(files, snapBlobs) {
		b, err := os.ReadFile(filepath.Join(sr.Path(), snapBlobs))
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(string(b)) {
			name, size, ok := strings.Cut(strings.TrimSpace(line), " ")
			n, err := strconv.ParseInt(size, 10, 64)
			if !ok || err != nil || !validBlobName(name) {
				return nil, fmt.Errorf("testnode: snapshot %d: bad line %q in %s", meta.GetLastIncludedIndex(), line, snapBlobs)
			}
			if !slices.Contains(files, snapBlobDir+"/"+name) {
				return nil, fmt.Errorf("testnode: snapshot %d lacks blob file %s", meta.GetLastIncludedIndex(), name)
			}
			fi, err := os.Stat(filepath.Join(sr.Path(), snapBlobDir, name))
			if err != nil {
				return nil, fmt.Errorf("testnode: snapshot %d: %w", meta.GetLastIncludedIndex(), err)
			}
			if fi.Size() != n {
				return nil, fmt.Errorf("testnode: snapshot %d: blob file %s has %d bytes, want %d", meta.GetLastIncludedIndex(), name, fi.Size(), n)
			}
			sc.blobs[name] = n
			sc.bytes += n
		}
	}
	if verify {
		t, ok := sr.(tabler)
		if !ok {
			return nil, fmt.Errorf("testnode: snapshot reader %T has no meta table to verify against", sr)
		}
		for _, f := range t.Table().GetFiles() {
			size, sum, err := hashFile(filepath.Join(sr.Path(), filepath.FromSlash(f.GetName())))
			if err != nil {
				return nil, err
			}
			if size != f.GetSize() || !bytes.Equal(sum, f.GetSha256()) {
				return nil, fmt.Errorf("testnode: snapshot %d: file %s has %d bytes, sha256 %x; meta table says %d, %x",
					meta.GetLastIncludedIndex(), f.GetName(), size, sum, f.GetSize(), f.GetSha256())
			}
		}
	}
	return sc, nil
}

func readRecord(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var ents []Entry
	bad := func(err error) error {
		return fmt.Errorf("testnode: bad record file %s at entry %d: %w", path, len(ents), err)
	}
	for {
		idx, err := binary.ReadUvarint(br)
		if err == io.EOF {
			return ents, nil
		}
		if err != nil {
			return nil, bad(err)
		}
		term, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, bad(err)
		}
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, bad(err)
		}
		if n > 64<<20 {
			return nil, bad(fmt.Errorf("command of %d bytes", n))
		}
		cmd := make([]byte, n)
		if _, err := io.ReadFull(br, cmd); err != nil {
			return nil, bad(err)
		}
		ents = append(ents, Entry{Index: idx, Term: term, Cmd: string(cmd)})
	}
}

// hashFile returns the size and SHA-256 of a file, streaming.
func hashFile(path string) (int64, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, make([]byte, 256<<10))
	if err != nil {
		return 0, nil, err
	}
	return n, h.Sum(nil), nil
}

// LoadSnapshot implements graft.StateMachine: it checks the snapshot (see
// CheckSnapshot) and only then replaces the record and the blob files
// with the snapshot's. A snapshot that fails the check is a violation and
// an error, and the state is left as it was.
func (r *Recorder) LoadSnapshot(sr graft.SnapshotReader) error {
	start := time.Now()
	sc, err := readSnapshot(sr, r.opts.VerifyLoads)
	r.mu.Lock()
	defer r.mu.Unlock()
	meta := sr.Meta()
	if err != nil {
		r.violation("loading snapshot %d: %v", meta.GetLastIncludedIndex(), err)
		return err
	}
	if len(sc.blobs) > 0 && r.opts.Dir == "" {
		err := fmt.Errorf("testnode: snapshot %d has blob files and this Recorder has no state directory", meta.GetLastIncludedIndex())
		r.violation("%v", err)
		return err
	}
	if r.opts.Dir != "" {
		if err := os.RemoveAll(r.opts.Dir); err != nil {
			return err
		}
		if err := os.MkdirAll(r.opts.Dir, 0o755); err != nil {
			return err
		}
	}
	r.blobs = map[string]bool{}
	for name := range sc.blobs {
		if err := linkOrCopy(filepath.Join(sr.Path(), snapBlobDir, name), filepath.Join(r.opts.Dir, name)); err != nil {
			return err
		}
		r.blobs[name] = true
	}
	r.ents = sc.ents
	r.last = meta.GetLastIncludedIndex()
	r.loads = append(r.loads, LoadInfo{
		Index: r.last, Term: meta.GetLastIncludedTerm(), Files: len(sr.Files()), Bytes: sc.bytes,
		Verified: r.opts.VerifyLoads, Took: time.Since(start),
	})
	return nil
}

// Entries returns a copy of what was applied, in order: the record of the
// last snapshot loaded, then what was applied since.
func (r *Recorder) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Entry{}, r.ents...)
}

// Len returns the number of commands in the record.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ents)
}

// Err returns the first violation seen, or nil.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Loads returns the snapshots loaded since the process started, in order.
func (r *Recorder) Loads() []LoadInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.loads)
}

// Saves returns the number of snapshots saved since the process started.
func (r *Recorder) Saves() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.saves
}

// BlobDigest is one blob file's size and SHA-256 (hex).
type BlobDigest struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Digest is a Recorder's state at one point: the last index it applied,
// the length of its record and every blob file's digest, read from disk.
type Digest struct {
	LastIndex uint64       `json:"last_index"`
	Recorded  int          `json:"recorded"`
	Blobs     []BlobDigest `json:"blobs"`
}

// Digest hashes every blob file; applies wait meanwhile.
func (r *Recorder) Digest() (Digest, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := Digest{LastIndex: r.last, Recorded: len(r.ents), Blobs: []BlobDigest{}}
	for _, name := range slices.Sorted(maps.Keys(r.blobs)) {
		size, sum, err := hashFile(filepath.Join(r.opts.Dir, name))
		if err != nil {
			return d, err
		}
		d.Blobs = append(d.Blobs, BlobDigest{Name: name, Size: size, SHA256: hex.EncodeToString(sum)})
	}
	return d, nil
}
