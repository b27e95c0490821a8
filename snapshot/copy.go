package snapshot

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/vfs"
)

// Defaults of CopyOptions. Timeout and retries are braft's; the chunk is
// 1 MiB (FileService's DefaultMaxChunk) where braft asks for 128 KiB: in
// A/B runs of the bench's 1 GiB catch-up (go -C bench run . -workload
// snapshot -snap-graft-chunk ...) 1 MiB chunks took 6.7 s against
// 9.0–10.4 s, with a quarter less CPU on both sides, for 16 MiB more
// follower RSS (ChunkSize × Parallel in flight). 8 files at once keep the
// connection busy while the writes of the others wait for the disk: in 3
// alternating pairs of 2 runs of the same catch-up (with Direct writes),
// 1.15–1.24 s against 1.25–1.27 s with 4, for 8 MiB more follower RSS.
const (
	DefaultChunkSize    = 1 << 20
	DefaultParallel     = 8
	DefaultChunkTimeout = 10 * time.Second
	DefaultRetries      = 3
	DefaultRetryBackoff = 100 * time.Millisecond
	// maxRetryBackoff caps the exponential backoff between retries.
	maxRetryBackoff = 5 * time.Second
	// holeBlock is the granularity at which zero bytes are left as holes
	// instead of being written.
	holeBlock = 4096
)

// The progress file is rewritten once progressBytes of files or
// progressInterval have completed since it was last written, and when a
// Copy fails, so that many small files do not cost a rewrite each. A crash
// loses at most that much finished work. Variables for tests.
var (
	progressBytes    int64 = 4 << 20
	progressInterval       = time.Second
)

// CopyOptions configure a Copy. Zero fields mean the defaults; only
// Transport is required.
type CopyOptions struct {
	// Transport carries the GetFile calls to the serving process.
	Transport transport.Transport
	// Throttle, if not nil, limits the bytes requested (and so written)
	// per second; shared with every other Copy of the process.
	Throttle *throttle.Throttle
	// ChunkSize is the bytes asked for per GetFile. Larger chunks mean
	// fewer round trips but more memory (ChunkSize × Parallel in flight)
	// and coarser throttling. 0 means DefaultChunkSize.
	ChunkSize int64
	// Parallel is the number of files downloaded at once. 0 means
	// DefaultParallel.
	Parallel int
	// ChunkTimeout bounds each GetFile call. 0 means DefaultChunkTimeout.
	ChunkTimeout time.Duration
	// Retries is how many times a failed GetFile is retried (and a file
	// failing its checksum fetched again) before the Copy fails. 0 means
	// DefaultRetries; use a negative value for no retries.
	Retries int
	// RetryBackoff is the wait before the first retry of a chunk; it
	// doubles (with jitter) for each further retry, up to 5s. 0 means
	// DefaultRetryBackoff.
	RetryBackoff time.Duration
	// Direct writes the downloaded files past the page cache where it
	// can (vfs.DirectWriter: O_DIRECT on Linux, for chunks whose memory,
	// offset and length are page-aligned, as the transport's pooled
	// buffers and power-of-two chunk sizes make them). It saves the
	// copy into the page cache and the kernel's writeback work, which
	// pays where the install is short of CPU, but each write then waits
	// for the disk instead of being written back behind the download,
	// and the disk takes 1 MiB writes instead of the writeback's larger
	// ones. In the bench's 1 GiB catch-up on 2-core VMs (3 alternating
	// pairs of 2 runs each), it took 1.44–1.62 s against 1.51–1.88 s on
	// an Intel host whose install was CPU-bound, and 2.53–2.72 s against
	// 1.54–1.82 s on an AMD host whose disk took buffered writes faster
	// (there with the file syncs off the download path, as now): off by
	// default.
	Direct bool
	// Progress, if not nil, is updated as the Copy runs.
	Progress *Progress
	// Logger receives the Copy's events with the fields dir, uri and
	// index. nil discards them.
	Logger *slog.Logger
}

// DefaultCopyOptions returns the values Copy uses for zero fields (with
// no Transport).
func DefaultCopyOptions() CopyOptions {
	return CopyOptions{
		ChunkSize:    DefaultChunkSize,
		Parallel:     DefaultParallel,
		ChunkTimeout: DefaultChunkTimeout,
		Retries:      DefaultRetries,
		RetryBackoff: DefaultRetryBackoff,
	}
}

// Validate reports whether o can be used, naming the bad value if not.
func (o CopyOptions) Validate() error {
	switch {
	case o.Transport == nil:
		return errors.New("snapshot: CopyOptions.Transport is nil")
	case o.ChunkSize < 0:
		return fmt.Errorf("snapshot: CopyOptions.ChunkSize %d is negative", o.ChunkSize)
	case o.Parallel < 0:
		return fmt.Errorf("snapshot: CopyOptions.Parallel %d is negative", o.Parallel)
	case o.ChunkTimeout < 0:
		return fmt.Errorf("snapshot: CopyOptions.ChunkTimeout %v is negative", o.ChunkTimeout)
	case o.RetryBackoff < 0:
		return fmt.Errorf("snapshot: CopyOptions.RetryBackoff %v is negative", o.RetryBackoff)
	}
	return nil
}

func (o CopyOptions) withDefaults() CopyOptions {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Parallel == 0 {
		o.Parallel = DefaultParallel
	}
	if o.ChunkTimeout == 0 {
		o.ChunkTimeout = DefaultChunkTimeout
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.RetryBackoff == 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.Progress == nil {
		o.Progress = new(Progress)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Copy downloads the snapshot at uri (made by FileService.Register) into
// dst and returns a Reader of it, now dst's newest snapshot.
//
// It fetches the remote meta table first and checks it against want
// (index and term must match: ErrMismatch). Then, per file: a file already
// complete in temp/ from an interrupted Copy is kept; a file whose size and
// SHA-256 match a file of dst's newest snapshot is hard-linked from it;
// every other file is fetched with GetFile in chunks of ChunkSize,
// Parallel files at once, each call bounded by ChunkTimeout and retried up
// to Retries times with exponential backoff. A fetched file is streamed to
// disk (zero blocks are left as holes; every 8 MiB written is handed to
// the disk at once and, once there, dropped from the page cache, so the
// installed files are not cached; with Direct, aligned chunks skip the
// page cache altogether), verified against its checksum (CRC-32C, or
// SHA-256 for a table without one; a mismatch deletes it and fetches it
// again, up to Retries times, then fails with ErrChecksum), then synced
// and recorded as complete in temp/ durably, so a later Copy can resume,
// while the next file downloads. Finally the snapshot is committed as by
// Writer.Close.
//
// When ctx ends, Copy returns an error wrapping ErrInterrupted (and the
// context's error) and leaves temp/ for a later Copy to resume; any other
// failure leaves temp/ too. A want not newer than dst's newest snapshot is
// ErrStale; a Copy or Writer already in progress on dst is ErrBusy.
func Copy(ctx context.Context, dst *Storage, uri string, want *raftpb.SnapshotMeta, opts CopyOptions) (*Reader, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	addr, id, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if dst == nil {
		return nil, fmt.Errorf("%w: Copy into a nil Storage", ErrInvalid)
	}
	if want == nil || want.GetLastIncludedIndex() == 0 {
		return nil, fmt.Errorf("%w: Copy wants no snapshot (nil meta or index 0)", ErrInvalid)
	}
	if newest, _ := dst.LastIndex(); want.GetLastIncludedIndex() <= newest {
		return nil, fmt.Errorf("%w: snapshot %d, newest is %d", ErrStale, want.GetLastIncludedIndex(), newest)
	}
	if err := dst.beginWrite(); err != nil {
		return nil, err
	}
	defer dst.endWrite()
	c := &copier{
		dst:  dst,
		fs:   dst.fs,
		temp: dst.tempPath(),
		addr: addr,
		id:   id,
		want: want,
		opts: opts,
		prog: opts.Progress,
		log:  opts.Logger.With("dir", dst.dir, "uri", uri, "index", want.GetLastIncludedIndex()),
	}
	c.prog.update(func(p *ProgressInfo) { *p = ProgressInfo{Started: time.Now()} })
	r, err := c.run(ctx)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrInterrupted) {
			err = fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		c.log.Warn("snapshot: copy failed", "err", err)
		return nil, err
	}
	return r, nil
}

// copier is the state of one Copy.
type copier struct {
	dst  *Storage
	fs   vfs.FS
	temp string
	addr string
	id   uint64
	want *raftpb.SnapshotMeta
	opts CopyOptions
	prog *Progress
	log  *slog.Logger

	// table is the remote meta table.
	table *raftpb.SnapshotMetaTable

	// mu guards the fields below and serializes writes of the progress
	// file.
	mu       sync.Mutex
	complete map[string]*raftpb.SnapshotFile
	// unrecorded counts the bytes of complete files not yet in the
	// progress file, and recorded is when it was last written.
	unrecorded int64
	recorded   time.Time
}

func (c *copier) run(ctx context.Context) (*Reader, error) {
	t, err := c.fetchMeta(ctx)
	if err != nil {
		return nil, err
	}
	m := t.GetMeta()
	if m.GetLastIncludedIndex() != c.want.GetLastIncludedIndex() || m.GetLastIncludedTerm() != c.want.GetLastIncludedTerm() {
		return nil, fmt.Errorf("%w: remote has index %d term %d, want index %d term %d", ErrMismatch,
			m.GetLastIncludedIndex(), m.GetLastIncludedTerm(), c.want.GetLastIncludedIndex(), c.want.GetLastIncludedTerm())
	}
	c.table = t
	var total int64
	for _, f := range t.GetFiles() {
		total += f.GetSize()
	}
	c.prog.update(func(p *ProgressInfo) { p.FilesTotal, p.BytesTotal = len(t.GetFiles()), total })

	if err := c.prepareTemp(); err != nil {
		return nil, err
	}
	fetch, err := c.reuse()
	if err != nil {
		return nil, err
	}
	if err := c.fetchAll(ctx, fetch); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInterrupted, err)
	}

	w := newWriter(c.dst)
	w.meta = t.GetMeta()
	for _, f := range t.GetFiles() {
		w.files[f.GetName()] = &writerFile{file: f, hashed: true, synced: true}
		w.order = append(w.order, f.GetName())
	}
	w.done = true
	r, err := c.dst.commit(w, true, true)
	if err != nil {
		return nil, err
	}
	if err := c.fs.Remove(filepath.Join(r.Path(), progressFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("snapshot: remove progress file", "err", err)
	}
	info := c.prog.Snapshot()
	c.log.Info("snapshot: copied", "files", len(t.GetFiles()), "bytes", total,
		"reused", info.BytesReused, "fetched", info.BytesFetched)
	return r, nil
}

// fetchMeta downloads and decodes the remote meta table.
func (c *copier) fetchMeta(ctx context.Context) (*raftpb.SnapshotMetaTable, error) {
	var buf []byte
	for {
		resp, err := c.getChunk(ctx, MetaFileName, int64(len(buf)), c.opts.ChunkSize)
		if err != nil {
			return nil, err
		}
		buf = append(buf, resp.GetData()...)
		if len(buf) > maxMetaSize {
			return nil, fmt.Errorf("%w: remote meta is larger than %d bytes", ErrCorrupt, maxMetaSize)
		}
		if resp.GetEof() {
			break
		}
		if len(resp.GetData()) == 0 {
			return nil, fmt.Errorf("snapshot: remote returned no data and no eof for %s at %d", MetaFileName, len(buf))
		}
	}
	t, err := decodeTable(buf)
	if err != nil {
		return nil, fmt.Errorf("snapshot: remote meta table: %w", err)
	}
	return t, nil
}

// permanent reports whether a GetFile error will not go away by retrying.
func permanent(err error) bool {
	if errors.Is(err, transport.ErrClosed) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrDenied) || errors.Is(err, ErrInvalid) {
		return true
	}
	switch status.Code(err) {
	case codes.NotFound, codes.PermissionDenied, codes.InvalidArgument, codes.Unimplemented:
		return true
	}
	return false
}

// getChunk reads up to count bytes of the remote file name at off,
// retrying failures.
func (c *copier) getChunk(ctx context.Context, name string, off, count int64) (*raftpb.GetFileResponse, error) {
	backoff := c.opts.RetryBackoff
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, c.opts.ChunkTimeout)
		resp, err := c.opts.Transport.GetFile(cctx, c.addr, &raftpb.GetFileRequest{
			ReaderId:   c.id,
			Filename:   name,
			Count:      count,
			Offset:     off,
			ReadPartly: true,
		})
		cancel()
		if err == nil && int64(len(resp.GetData())) > count {
			err = fmt.Errorf("snapshot: asked for %d bytes, got %d", count, len(resp.GetData()))
		}
		if err == nil {
			return resp, nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("%w: %w", ErrInterrupted, cerr)
		}
		if permanent(err) || attempt >= c.opts.Retries {
			return nil, fmt.Errorf("snapshot: get %s at %d from %s (attempt %d): %w", name, off, c.addr, attempt+1, err)
		}
		c.log.Debug("snapshot: retrying chunk", "file", name, "offset", off, "attempt", attempt+1, "err", err)
		// Full jitter in [backoff/2, backoff).
		d := backoff/2 + rand.N(backoff/2+1)
		if err := sleep(ctx, d); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		backoff = min(backoff*2, maxRetryBackoff)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *copier) local(name string) string {
	return filepath.Join(c.temp, filepath.FromSlash(name))
}

func sameContent(a, b *raftpb.SnapshotFile) bool {
	return a.GetSize() == b.GetSize() && bytes.Equal(a.GetSha256(), b.GetSha256())
}

// prepareTemp makes temp/ hold only files that are complete for the
// remote table, per the progress file of an earlier Copy, and records the
// new download's progress.
func (c *copier) prepareTemp() error {
	if err := vfs.MkdirAllDurable(c.fs, c.temp, 0o755); err != nil {
		return fmt.Errorf("snapshot: create %s: %w", c.temp, err)
	}
	remote := make(map[string]*raftpb.SnapshotFile, len(c.table.GetFiles()))
	for _, f := range c.table.GetFiles() {
		remote[f.GetName()] = f
	}
	done := map[string]*raftpb.SnapshotFile{}
	prev, err := readTable(c.fs, filepath.Join(c.temp, progressFileName))
	switch {
	case err == nil:
		for _, f := range prev.GetFiles() {
			done[f.GetName()] = f
		}
	case !errors.Is(err, fs.ErrNotExist):
		c.log.Warn("snapshot: ignoring unreadable progress file", "err", err)
	}

	c.complete = make(map[string]*raftpb.SnapshotFile)
	var removed int
	changed := map[string]bool{}
	err = walk(c.fs, c.temp, func(rel string, fi fs.FileInfo) error {
		if rel == progressFileName {
			return nil
		}
		r, d := remote[rel], done[rel]
		if fi.Mode().IsRegular() && r != nil && d != nil && sameContent(r, d) && fi.Size() == r.GetSize() {
			c.complete[rel] = r
			return nil
		}
		removed++
		changed[path.Dir(rel)] = true
		if err := c.fs.Remove(c.local(rel)); err != nil {
			return fmt.Errorf("snapshot: remove stale %s: %w", c.local(rel), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(c.complete) > 0 || removed > 0 {
		c.log.Info("snapshot: resuming download", "kept", len(c.complete), "removed", removed)
	}
	// Removals need not be durable: the progress file decides what is
	// complete.
	var kept int64
	for _, f := range c.complete {
		kept += f.GetSize()
	}
	n := len(c.complete)
	c.prog.update(func(p *ProgressInfo) {
		p.FilesDone += n
		p.BytesDone += kept
		p.BytesReused += kept
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeProgressLocked()
}

// walk calls fn for every non-directory entry below root, with its
// slash-separated path relative to root, in lexical order.
func walk(fsys vfs.FS, root string, fn func(rel string, fi fs.FileInfo) error) error {
	var visit func(dir, rel string) error
	visit = func(dir, rel string) error {
		names, err := fsys.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("snapshot: list %s: %w", dir, err)
		}
		for _, n := range names {
			p := filepath.Join(dir, n)
			r := n
			if rel != "" {
				r = rel + "/" + n
			}
			fi, err := fsys.Lstat(p)
			if err != nil {
				return fmt.Errorf("snapshot: stat %s: %w", p, err)
			}
			if fi.IsDir() {
				if err := visit(p, r); err != nil {
					return err
				}
				continue
			}
			if err := fn(r, fi); err != nil {
				return err
			}
		}
		return nil
	}
	return visit(root, "")
}

// writeProgressLocked durably records the complete files. c.mu must be
// held.
func (c *copier) writeProgressLocked() error {
	t := &raftpb.SnapshotMetaTable{Meta: c.table.GetMeta()}
	for _, name := range slices.Sorted(mapKeys(c.complete)) {
		t.Files = append(t.Files, c.complete[name])
	}
	data, err := encodeTable(t)
	if err != nil {
		return err
	}
	if err := vfs.WriteFileAtomic(c.fs, filepath.Join(c.temp, progressFileName), data); err != nil {
		return fmt.Errorf("snapshot: record download progress: %w", err)
	}
	c.unrecorded, c.recorded = 0, time.Now()
	return nil
}

// markComplete adds f, downloaded, verified and synced, to the complete
// files, and records the progress if enough is unrecorded.
func (c *copier) markComplete(f *raftpb.SnapshotFile) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.complete[f.GetName()] = f
	c.unrecorded += max(f.GetSize(), 1)
	if c.unrecorded >= progressBytes || time.Since(c.recorded) >= progressInterval {
		return c.writeProgressLocked()
	}
	return nil
}

// flushProgress records the complete files not yet recorded, for a Copy
// that is about to fail.
func (c *copier) flushProgress() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unrecorded == 0 {
		return
	}
	if err := c.writeProgressLocked(); err != nil {
		c.log.Warn("snapshot: record progress of a failed copy", "err", err)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// reuse hard-links the files that dst's newest snapshot already has and
// returns the files left to fetch, largest first.
func (c *copier) reuse() ([]*raftpb.SnapshotFile, error) {
	type key struct {
		size int64
		sum  string
	}
	var have map[key]string
	old, err := c.dst.Open()
	if err != nil {
		return nil, err
	}
	if old != nil {
		defer old.Close()
		have = make(map[key]string)
		for _, f := range old.snap.table.GetFiles() {
			have[key{f.GetSize(), string(f.GetSha256())}] = f.GetName()
		}
	}
	var fetch []*raftpb.SnapshotFile
	dirs := map[string]bool{}
	var linked []*raftpb.SnapshotFile
	for _, f := range c.table.GetFiles() {
		if c.complete[f.GetName()] != nil {
			continue
		}
		src, ok := have[key{f.GetSize(), string(f.GetSha256())}]
		if ok {
			if err := c.link(old.snap.localPath(src), f); err == nil {
				linked = append(linked, f)
				dirs[filepath.Dir(c.local(f.GetName()))] = true
				continue
			} else {
				c.log.Warn("snapshot: cannot reuse file, fetching it", "file", f.GetName(), "from", src, "err", err)
			}
		}
		fetch = append(fetch, f)
	}
	if len(linked) > 0 {
		for _, d := range slices.Sorted(mapKeys(dirs)) {
			if err := vfs.SyncDir(c.fs, d); err != nil {
				return nil, fmt.Errorf("snapshot: sync %s: %w", d, err)
			}
		}
		var n int64
		c.mu.Lock()
		for _, f := range linked {
			c.complete[f.GetName()] = f
			n += f.GetSize()
		}
		err := c.writeProgressLocked()
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		c.prog.update(func(p *ProgressInfo) {
			p.FilesDone += len(linked)
			p.BytesDone += n
			p.BytesReused += n
		})
		c.log.Info("snapshot: reused files of the previous snapshot", "files", len(linked), "bytes", n)
	}
	slices.SortStableFunc(fetch, func(a, b *raftpb.SnapshotFile) int {
		if d := cmp.Compare(b.GetSize(), a.GetSize()); d != 0 {
			return d
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	return fetch, nil
}

// link makes temp/<f.name> a hard link to src.
func (c *copier) link(src string, f *raftpb.SnapshotFile) error {
	fi, err := c.fs.Lstat(src)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Size() != f.GetSize() {
		return fmt.Errorf("%s is a %v of %d bytes", src, fi.Mode().Type(), fi.Size())
	}
	dst := c.local(f.GetName())
	if err := vfs.MkdirAllDurable(c.fs, filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return c.fs.Link(src, dst)
}

// fetchAll downloads files with opts.Parallel workers. A worker hands
// each file it has downloaded and verified to a goroutine of its own that
// syncs and records it, and goes on with the next file at once: a file's
// sync waits for the disk to take what the page cache holds of it, and
// the workers of equal-sized files finish together, so syncing in the
// worker would stop the whole download for the slowest of their syncs.
// At most opts.Parallel files wait for their syncs at a time. The first
// failure stops the others.
func (c *copier) fetchAll(ctx context.Context, files []*raftpb.SnapshotFile) error {
	if len(files) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan *raftpb.SnapshotFile)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		cancel()
	}
	syncing := make(chan struct{}, c.opts.Parallel)
	for range min(c.opts.Parallel, len(files)) {
		wg.Go(func() {
			for f := range jobs {
				file, err := c.fetchFile(ctx, f)
				if err != nil {
					fail(err)
					return
				}
				syncing <- struct{}{}
				wg.Go(func() {
					defer func() { <-syncing }()
					if err := c.finishFile(f, file); err != nil {
						fail(err)
					}
				})
			}
		})
	}
feed:
	for _, f := range files {
		select {
		case jobs <- f:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil || ctx.Err() != nil {
		c.flushProgress()
	}
	return firstErr
}

// fetchFile downloads f, fetching it again after a checksum mismatch, and
// returns it open, written and verified, for finishFile.
func (c *copier) fetchFile(ctx context.Context, f *raftpb.SnapshotFile) (vfs.File, error) {
	for attempt := 0; ; attempt++ {
		file, err := c.fetchOnce(ctx, f)
		if err == nil {
			return file, nil
		}
		if !errors.Is(err, ErrChecksum) || attempt >= c.opts.Retries {
			return nil, err
		}
		c.log.Warn("snapshot: fetching file again", "file", f.GetName(), "attempt", attempt+1, "err", err)
	}
}

// finishFile syncs and closes file, the download of f, syncs its
// directory and records f complete.
func (c *copier) finishFile(f *raftpb.SnapshotFile, file vfs.File) error {
	p := c.local(f.GetName())
	if err := file.Sync(); err != nil {
		_ = file.Close()
		return fmt.Errorf("snapshot: sync %s: %w", p, err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("snapshot: close %s: %w", p, err)
	}
	dir := filepath.Dir(p)
	if err := vfs.SyncDir(c.fs, dir); err != nil {
		return fmt.Errorf("snapshot: sync %s: %w", dir, err)
	}
	if err := c.markComplete(f); err != nil {
		return err
	}
	c.prog.update(func(p *ProgressInfo) { p.FilesDone++ })
	return nil
}

// fetchOnce downloads f into a new file in temp/ and verifies it. It
// returns the file open and not yet synced.
func (c *copier) fetchOnce(ctx context.Context, f *raftpb.SnapshotFile) (_ vfs.File, err error) {
	p := c.local(f.GetName())
	// Never write into an existing file: it may be a hard link shared
	// with an older snapshot.
	if err := c.fs.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("snapshot: remove %s: %w", p, err)
	}
	dir := filepath.Dir(p)
	if err := vfs.MkdirAllDurable(c.fs, dir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: create %s: %w", dir, err)
	}
	file, err := c.fs.Create(p)
	if err != nil {
		return nil, fmt.Errorf("snapshot: create %s: %w", p, err)
	}
	var received int64
	defer func() {
		if file != nil {
			_ = file.Close()
		}
		if err != nil {
			// Undo this attempt's share of BytesDone.
			c.prog.update(func(pi *ProgressInfo) { pi.BytesDone -= received })
		}
	}()

	check := newChecker(f)
	size := f.GetSize()
	var out io.WriterAt = file
	if c.opts.Direct {
		dw := vfs.NewDirectWriter(file)
		defer dw.Close()
		out = dw
	}
	wb := writeBehind{file: file}
	for received < size {
		want := min(c.opts.ChunkSize, size-received)
		granted, err := c.opts.Throttle.Wait(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		resp, err := c.getChunk(ctx, f.GetName(), received, granted)
		if err != nil {
			c.opts.Throttle.Return(granted)
			return nil, err
		}
		data := resp.GetData()
		c.opts.Throttle.Return(granted - int64(len(data)))
		if len(data) == 0 {
			if resp.GetEof() {
				c.removeQuietly(p)
				return nil, fmt.Errorf("%w: remote %s ends at %d, want %d bytes", ErrChecksum, f.GetName(), received, size)
			}
			return nil, fmt.Errorf("snapshot: remote returned no data and no eof for %s at %d", f.GetName(), received)
		}
		check.Write(data)
		if err := writeSparse(out, data, received); err != nil {
			return nil, fmt.Errorf("snapshot: write %s: %w", p, err)
		}
		received += int64(len(data))
		n := int64(len(data))
		transport.RecycleChunk(data) // written and hashed: the next chunk may reuse it
		c.prog.update(func(pi *ProgressInfo) { pi.BytesDone += n; pi.BytesFetched += n })
		if err := wb.wrote(received); err != nil {
			return nil, fmt.Errorf("snapshot: write %s: %w", p, err)
		}
	}
	if err := file.Truncate(size); err != nil { // the tail may be a hole
		return nil, fmt.Errorf("snapshot: truncate %s: %w", p, err)
	}
	if bad := check.mismatch(); bad != "" {
		_ = file.Close()
		file = nil
		c.removeQuietly(p)
		return nil, fmt.Errorf("%w: %s: got %s", ErrChecksum, f.GetName(), bad)
	}
	done := file
	file = nil
	return done, nil
}

// writeBehind keeps a downloaded file's writes moving to the disk as it
// grows: every writeBehindStep bytes written are handed to the disk at
// once (vfs.StartWriteback), and the step before them, written by then,
// is dropped from the page cache (vfs.DropWritten). Without it, the
// install's writes pile up as dirty pages for the file's final Sync, and
// every page they take is memory the kernel reclaims from the rest of the
// page cache at the copier's expense; with it, the copier's writes reuse
// the pages it dropped. In A/B runs of the bench's 1 GiB catch-up (go -C
// bench run . -workload snapshot -systems graft, 2 × 3 runs each way, on a
// busy machine) it took the follower's CPU from 3.9–4.2 s to 2.5–2.6 s
// and the install from 3.9 s to 2.7–2.9 s; handing the steps to the disk
// without dropping them did not help (3.5 s). On a quieter machine, in
// full runs half an hour apart, the install went from 2.77 s to 2.70 s
// (medians) and the follower's CPU from 2.56 s to 2.27 s. Steps of 2 MiB
// did as well as 8 MiB (2.41–2.57 s against 2.41–2.47 s), steps of 32 MiB
// worse (3.02–3.14 s). The price: the installed files are not in the
// page cache, so whoever reads them next reads the disk.
type writeBehind struct {
	file vfs.File
	// started and dropped are the offsets up to which writeback was
	// started and pages were dropped.
	started, dropped int64
}

// writeBehindStep is a variable for tests.
var writeBehindStep int64 = 8 << 20

// wrote records that the file is written up to end.
func (w *writeBehind) wrote(end int64) error {
	if end-w.started < writeBehindStep {
		return nil
	}
	if err := vfs.StartWriteback(w.file, w.started, end-w.started); err != nil {
		return err
	}
	if w.started-w.dropped >= writeBehindStep {
		if err := vfs.DropWritten(w.file, w.dropped, w.started-w.dropped); err != nil {
			return err
		}
		w.dropped = w.started
	}
	w.started = end
	return nil
}

func (c *copier) removeQuietly(p string) {
	if err := c.fs.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("snapshot: remove bad file", "path", p, "err", err)
	}
}

var zeroBlock [holeBlock]byte

// writeSparse writes data at off, skipping the blocks (aligned to
// holeBlock in the file) that are all zero, so they stay holes of a file
// that started empty.
func writeSparse(file io.WriterAt, data []byte, off int64) error {
	start := -1 // start in data of the pending non-zero run
	for i := 0; i < len(data); {
		// The block holding file offset off+i ends at the next boundary.
		end := min(i+int(holeBlock-(off+int64(i))%holeBlock), len(data))
		zero := bytes.Equal(data[i:end], zeroBlock[:end-i])
		switch {
		case !zero && start < 0:
			start = i
		case zero && start >= 0:
			if _, err := file.WriteAt(data[start:i], off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
		i = end
	}
	if start >= 0 {
		if _, err := file.WriteAt(data[start:], off+int64(start)); err != nil {
			return err
		}
	}
	return nil
}
