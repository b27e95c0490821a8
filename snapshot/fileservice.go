package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
)

// Defaults of FileServiceOptions.
const (
	DefaultReaderLease = 60 * time.Second
	DefaultMaxChunk    = 1 << 20
)

// FileServiceOptions configure a FileService. The zero value is valid.
type FileServiceOptions struct {
	// ReaderLease is how long a registered reader lives without a
	// GetFile; then it expires and its snapshot reference is dropped.
	// Longer leases survive slower followers; shorter ones free old
	// snapshots sooner after a follower gives up. 0 means
	// DefaultReaderLease.
	ReaderLease time.Duration
	// MaxChunk caps the bytes one GetFile returns (and allocates),
	// whatever count the request asks for. 0 means DefaultMaxChunk.
	MaxChunk int64
	// Throttle, if not nil, limits the bytes read for GetFile responses.
	Throttle *throttle.Throttle
	// Logger receives registration and expiry events with the field
	// reader. nil discards them.
	Logger *slog.Logger
}

// DefaultFileServiceOptions returns the values NewFileService uses for
// zero fields.
func DefaultFileServiceOptions() FileServiceOptions {
	return FileServiceOptions{ReaderLease: DefaultReaderLease, MaxChunk: DefaultMaxChunk}
}

// Validate reports whether o can be used, naming the bad value if not.
func (o FileServiceOptions) Validate() error {
	switch {
	case o.ReaderLease < 0:
		return fmt.Errorf("snapshot: FileServiceOptions.ReaderLease %v is negative", o.ReaderLease)
	case o.MaxChunk < 0:
		return fmt.Errorf("snapshot: FileServiceOptions.MaxChunk %d is negative", o.MaxChunk)
	}
	return nil
}

// FileService serves the files of registered snapshot Readers to remote
// copiers, in chunks, through GetFile. One FileService serves every group
// of a process (reader ids are unique per process). It is safe for
// concurrent use.
//
// A registered Reader belongs to the service until Unregister, expiry of
// its lease (ReaderLease without a GetFile) or Close, which close it.
type FileService struct {
	lease    time.Duration
	maxChunk int64
	throttle *throttle.Throttle
	log      *slog.Logger
	// now is the clock; tests replace it.
	now func() time.Time

	stop chan struct{}
	done chan struct{}

	mu struct {
		sync.Mutex
		closed  bool
		readers map[uint64]*served
	}
}

// served is a registered Reader.
type served struct {
	id   uint64
	r    *Reader
	addr string
	// Guarded by FileService.mu.
	lastUsed time.Time
	inflight int
	removed  bool
}

var _ transport.FileHandler = (*FileService)(nil)

// NewFileService returns a FileService and starts its lease reaper; Close
// stops it. Negative options mean the defaults.
func NewFileService(opts FileServiceOptions) *FileService {
	if opts.ReaderLease <= 0 {
		opts.ReaderLease = DefaultReaderLease
	}
	if opts.MaxChunk <= 0 {
		opts.MaxChunk = DefaultMaxChunk
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f := &FileService{
		lease:    opts.ReaderLease,
		maxChunk: opts.MaxChunk,
		throttle: opts.Throttle,
		log:      opts.Logger,
		now:      time.Now,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	f.mu.readers = make(map[uint64]*served)
	go f.reaper(min(max(opts.ReaderLease/4, time.Millisecond), 10*time.Second))
	return f
}

// reaper expires readers every interval until Close.
func (f *FileService) reaper(interval time.Duration) {
	defer close(f.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			f.reap()
		case <-f.stop:
			return
		}
	}
}

// reap closes the readers whose lease has run out.
func (f *FileService) reap() {
	now := f.now()
	var expired []*served
	f.mu.Lock()
	for id, e := range f.mu.readers {
		if e.inflight == 0 && now.Sub(e.lastUsed) > f.lease {
			delete(f.mu.readers, id)
			e.removed = true
			expired = append(expired, e)
		}
	}
	f.mu.Unlock()
	for _, e := range expired {
		f.log.Info("snapshot: reader lease expired", "reader", e.id, "index", e.r.Index(), "peer", e.addr)
		_ = e.r.Close()
	}
}

// Register hands r to the service and returns its id and the URI a
// follower's Copy downloads it from, "remote://<addr>/<id>", where addr is
// this process's address. Ids are random (64 bits from crypto/rand),
// never 0, and unique among registered readers. After Close, Register
// closes r and returns "", 0.
func (f *FileService) Register(r *Reader, addr string) (uri string, id uint64) {
	f.mu.Lock()
	if f.mu.closed {
		f.mu.Unlock()
		_ = r.Close()
		return "", 0
	}
	for id == 0 || f.mu.readers[id] != nil {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand)
		id = binary.LittleEndian.Uint64(b[:])
	}
	f.mu.readers[id] = &served{id: id, r: r, addr: addr, lastUsed: f.now()}
	f.mu.Unlock()
	f.log.Debug("snapshot: reader registered", "reader", id, "index", r.Index(), "path", r.Path())
	return FormatURI(addr, id), id
}

// Unregister removes the reader id and closes it (once GetFile calls in
// progress on it return). An unknown id is ignored.
func (f *FileService) Unregister(id uint64) {
	f.mu.Lock()
	e := f.mu.readers[id]
	if e == nil {
		f.mu.Unlock()
		return
	}
	delete(f.mu.readers, id)
	e.removed = true
	closeNow := e.inflight == 0
	f.mu.Unlock()
	if closeNow {
		_ = e.r.Close()
	}
}

// Close unregisters every reader and stops the lease reaper. GetFile
// fails afterwards. It is idempotent.
func (f *FileService) Close() {
	f.mu.Lock()
	if f.mu.closed {
		f.mu.Unlock()
		return
	}
	f.mu.closed = true
	var now []*served
	for id, e := range f.mu.readers {
		delete(f.mu.readers, id)
		e.removed = true
		if e.inflight == 0 {
			now = append(now, e)
		}
	}
	f.mu.Unlock()
	close(f.stop)
	<-f.done
	for _, e := range now {
		_ = e.r.Close()
	}
}

// Readers returns the number of registered readers.
func (f *FileService) Readers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mu.readers)
}

// acquire returns the reader id with a GetFile in progress on it.
func (f *FileService) acquire(id uint64) (*served, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.closed {
		return nil, statusErrorf(codes.Unavailable, "%w: file service", ErrClosed)
	}
	e := f.mu.readers[id]
	if e == nil {
		return nil, statusErrorf(codes.NotFound, "%w: reader %d (unknown or expired)", ErrNotFound, id)
	}
	e.inflight++
	e.lastUsed = f.now()
	return e, nil
}

// release ends a GetFile on e, closing its reader if it was removed
// meanwhile.
func (f *FileService) release(e *served) {
	f.mu.Lock()
	e.inflight--
	e.lastUsed = f.now()
	closeNow := e.removed && e.inflight == 0
	f.mu.Unlock()
	if closeNow {
		_ = e.r.Close()
	}
}

// HandleGetFile implements transport.FileHandler: it returns up to
// req.Count bytes (at most MaxChunk) of req.Filename from req.Offset, in
// the snapshot of reader req.ReaderId. Errors carry gRPC codes:
// InvalidArgument for offset < 0 or count <= 0; NotFound for an unknown or
// expired reader or a listed file missing from disk; PermissionDenied for
// a name that is neither MetaFileName nor listed in the snapshot's meta
// table (including "..", absolute paths, directories and symlinks). An
// offset at or past the end returns eof with no data. With read_partly
// the response may be short before the end when the throttle grants
// fewer bytes; without it the service waits for the whole chunk.
func (f *FileService) HandleGetFile(ctx context.Context, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	if req.GetOffset() < 0 || req.GetCount() <= 0 {
		return nil, statusErrorf(codes.InvalidArgument, "%w: offset %d, count %d", ErrInvalid, req.GetOffset(), req.GetCount())
	}
	e, err := f.acquire(req.GetReaderId())
	if err != nil {
		return nil, err
	}
	defer f.release(e)
	sn := e.r.snap
	name := req.GetFilename()
	var p string
	switch _, listed := sn.byName[name]; {
	case name == MetaFileName:
		p = filepath.Join(sn.path, MetaFileName)
	case listed:
		p = sn.localPath(name)
	default:
		return nil, statusErrorf(codes.PermissionDenied, "%w: %q in reader %d", ErrDenied, name, e.id)
	}
	fi, err := e.r.s.fs.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, statusErrorf(codes.NotFound, "%w: %q of reader %d is missing: %w", ErrNotFound, name, e.id, err)
	case err != nil:
		return nil, statusErrorf(codes.Internal, "snapshot: stat %q of reader %d: %w", name, e.id, err)
	case !fi.Mode().IsRegular():
		return nil, statusErrorf(codes.PermissionDenied, "%w: %q of reader %d is not a regular file", ErrDenied, name, e.id)
	}
	size, off := fi.Size(), req.GetOffset()
	if off >= size {
		return &raftpb.GetFileResponse{Eof: true}, nil
	}
	file, err := e.r.s.fs.Open(p)
	if err != nil {
		return nil, statusErrorf(codes.Internal, "snapshot: open %q of reader %d: %w", name, e.id, err)
	}
	defer file.Close()

	// The transport recycles the buffer once the response is sent.
	buf := transport.ChunkBuffer(int(min(req.GetCount(), f.maxChunk, size-off)))
	got, short := 0, false
	for got < len(buf) {
		g, err := f.throttle.Wait(ctx, int64(len(buf)-got))
		if err != nil {
			transport.RecycleChunk(buf)
			return nil, status.FromContextError(err).Err()
		}
		n, rerr := file.ReadAt(buf[got:got+int(g)], off+int64(got))
		got += n
		f.throttle.Return(g - int64(n))
		if rerr == io.EOF {
			short = true // the file shrank; send what there is
			break
		}
		if rerr != nil {
			transport.RecycleChunk(buf)
			return nil, statusErrorf(codes.Internal, "snapshot: read %q of reader %d: %w", name, e.id, rerr)
		}
		if req.GetReadPartly() {
			break
		}
	}
	return &raftpb.GetFileResponse{
		Eof:      short || off+int64(got) >= size,
		ReadSize: int64(got),
		Data:     buf[:got],
	}, nil
}

// FormatURI returns the URI of reader id served by the process at addr.
func FormatURI(addr string, id uint64) string {
	return "remote://" + addr + "/" + strconv.FormatUint(id, 10)
}

// ParseURI splits a URI made by FileService.Register into the serving
// process's address and the reader id. It accepts only what FormatURI
// makes (a reader id in decimal without sign or leading zeros); a malformed
// URI is an error wrapping ErrInvalid.
func ParseURI(uri string) (addr string, id uint64, err error) {
	rest, ok := strings.CutPrefix(uri, "remote://")
	if !ok {
		return "", 0, fmt.Errorf("%w: uri %q does not start with remote://", ErrInvalid, uri)
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", 0, fmt.Errorf("%w: uri %q has no address or reader id", ErrInvalid, uri)
	}
	addr, idStr := rest[:i], rest[i+1:]
	if strings.ContainsAny(addr, "/?#") {
		return "", 0, fmt.Errorf("%w: uri %q has a bad address", ErrInvalid, uri)
	}
	id, err = strconv.ParseUint(idStr, 10, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 10) != idStr {
		return "", 0, fmt.Errorf("%w: uri %q has a bad reader id", ErrInvalid, uri)
	}
	return addr, id, nil
}
