package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
	"github.com/graft-raft/graft/vfs"
)

// copyEnv is a leader process serving snapshots and a follower's storage,
// joined by an in-memory network.
type copyEnv struct {
	net      *memory.Network
	leader   *Storage
	follower *Storage
	files    *FileService
	tr       *memory.Transport
	// hookBytes counts the GetFile bytes the network delivered.
	hookBytes atomic.Int64
}

func newCopyEnv(t testing.TB, leaderFS vfs.FS, leaderDir string, followerFS vfs.FS, followerDir string, fsOpts FileServiceOptions) *copyEnv {
	t.Helper()
	e := &copyEnv{net: memory.NewNetwork(1)}
	t.Cleanup(func() { _ = e.net.Close() })
	e.leader = openStore(t, leaderFS, leaderDir)
	e.follower = openStore(t, followerFS, followerDir)
	e.files = newFileService(t, fsOpts)
	router := transport.NewRouter()
	router.SetFileHandler(e.files)
	if _, err := e.net.Listen("leader", router); err != nil {
		t.Fatal(err)
	}
	e.tr = e.net.Transport("follower")
	t.Cleanup(func() { _ = e.tr.Close() })
	e.net.SetFileHook(func(_, _ string, n int) { e.hookBytes.Add(int64(n)) })
	return e
}

func newMemCopyEnv(t testing.TB) *copyEnv {
	return newCopyEnv(t, vfs.NewMem(), "/leader", vfs.NewMem(), "/follower", FileServiceOptions{})
}

// serve saves snapshot index on the leader and registers a reader of it.
func (e *copyEnv) serve(t testing.TB, index, term uint64, fs files) (uri string, want *raftpb.SnapshotMeta) {
	t.Helper()
	writeSnapshot(t, e.leader, index, term, fs)
	r, err := e.leader.Open()
	if err != nil {
		t.Fatal(err)
	}
	uri, _ = e.files.Register(r, "leader")
	return uri, testMeta(index, term)
}

// metaSize is the size of the leader's newest meta file.
func (e *copyEnv) metaSize(t testing.TB) int64 {
	t.Helper()
	r, _ := e.leader.Open()
	defer r.Close()
	fi, err := e.leader.fs.Stat(filepath.Join(r.Path(), MetaFileName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func (e *copyEnv) opts(t testing.TB) CopyOptions {
	return CopyOptions{
		Transport:    e.tr,
		ChunkSize:    1024,
		RetryBackoff: time.Millisecond,
		Progress:     new(Progress),
		Logger:       testLogger(t),
	}
}

func (e *copyEnv) copy(t testing.TB, ctx context.Context, uri string, want *raftpb.SnapshotMeta, opts CopyOptions) (*Reader, error) {
	t.Helper()
	r, err := Copy(ctx, e.follower, uri, want, opts)
	if r != nil {
		t.Cleanup(func() { _ = r.Close() })
	}
	return r, err
}

func size(fs files) (n int64) {
	for _, d := range fs {
		n += int64(len(d))
	}
	return n
}

// sparse returns zeros with a little data in the middle.
func sparse() []byte {
	b := make([]byte, 40_000)
	copy(b[20_000:], "an island of data in a sea of zeros")
	return b
}

// hookTransport wraps a Transport, calling before ahead of each GetFile
// (an error fails the call) and after with the result (which it may
// change).
type hookTransport struct {
	transport.Transport
	before func(ctx context.Context, req *raftpb.GetFileRequest) error
	after  func(req *raftpb.GetFileRequest, resp *raftpb.GetFileResponse, err error)
}

func (h *hookTransport) GetFile(ctx context.Context, addr string, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	if h.before != nil {
		if err := h.before(ctx, req); err != nil {
			return nil, err
		}
	}
	resp, err := h.Transport.GetFile(ctx, addr, req)
	if h.after != nil {
		h.after(req, resp, err)
	}
	return resp, err
}

func TestCopyHappyPath(t *testing.T) {
	follower := vfs.NewMem()
	e := newCopyEnv(t, vfs.NewMem(), "/leader", follower, "/follower", FileServiceOptions{})
	fs := files{
		"a":          pattern(1, 50_000),
		"b/c":        pattern(2, 3000),
		"b/d/e":      pattern(3, 1),
		"empty":      nil,
		"sparse":     sparse(),
		"zeros":      make([]byte, 10_000),
		"big":        pattern(4, 200_000),
		"odd_length": pattern(5, 4097),
	}
	uri, want := e.serve(t, 20, 3, fs)
	opts := e.opts(t)
	r, err := e.copy(t, context.Background(), uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, 20, fs)
	if i, term := e.follower.LastIndex(); i != 20 || term != 3 {
		t.Fatalf("follower LastIndex = %d, %d", i, term)
	}
	got := r.Meta()
	if got.GetLastIncludedTerm() != 3 || len(got.GetPeers()) != 3 || len(got.GetOldPeers()) != 2 || len(got.GetLearners()) != 1 {
		t.Fatalf("copied meta %v", got)
	}
	p := opts.Progress.Snapshot()
	total := size(fs)
	if p.FilesDone != len(fs) || p.FilesTotal != len(fs) || p.BytesDone != total || p.BytesTotal != total ||
		p.BytesFetched != total || p.BytesReused != 0 || p.Started.IsZero() || p.BytesPerSec <= 0 {
		t.Fatalf("progress %+v, want all %d files and %d bytes fetched", p, len(fs), total)
	}
	if got, want := e.hookBytes.Load(), total+e.metaSize(t); got != want {
		t.Fatalf("network carried %d bytes, want %d", got, want)
	}
	if exists(t, follower, "/follower/temp") || exists(t, follower, filepath.Join(r.Path(), progressFileName)) {
		t.Fatal("temp/ or the progress file left behind")
	}
	// Durable: a crash right after Copy keeps it.
	follower.Crash()
	checkNewest(t, openStore(t, follower, "/follower"), 20, fs)
}

func TestCopySparseFileOnDisk(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprint("direct=", direct), func(t *testing.T) { testCopySparseFileOnDisk(t, direct) })
	}
}

func testCopySparseFileOnDisk(t *testing.T, direct bool) {
	root := t.TempDir()
	e := newCopyEnv(t, vfs.Default, filepath.Join(root, "leader"), vfs.Default, filepath.Join(root, "follower"), FileServiceOptions{})
	const size = 8 << 20
	w, err := e.leader.Create()
	if err != nil {
		t.Fatal(err)
	}
	island := pattern(9, 5000)
	f, err := os.Create(filepath.Join(w.Path(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(island, 4<<20+100); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if err := w.AddFile("sparse", nil); err != nil {
		t.Fatal(err)
	}
	w.SetMeta(testMeta(5, 1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, _ := e.leader.Open()
	uri, _ := e.files.Register(r, "leader")
	opts := e.opts(t)
	opts.ChunkSize = 256 << 10
	opts.Direct = direct
	got, err := e.copy(t, context.Background(), uri, testMeta(5, 1), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want[4<<20+100:], island)
	data, err := os.ReadFile(filepath.Join(got.Path(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != string(want) {
		t.Fatal("copied sparse file differs")
	}
	// Where the filesystem keeps holes, the copy keeps them too.
	src, _ := os.Stat(filepath.Join(r.Path(), "sparse"))
	dst, _ := os.Stat(filepath.Join(got.Path(), "sparse"))
	ss, ok1 := src.Sys().(*syscall.Stat_t)
	ds, ok2 := dst.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 || ss.Blocks*512 >= size/2 {
		t.Skip("the filesystem does not keep holes")
	}
	if ds.Blocks*512 >= size/2 {
		t.Fatalf("copy allocates %d bytes of an %d-byte sparse file", ds.Blocks*512, size)
	}
	t.Logf("source allocates %d bytes, copy %d", ss.Blocks*512, ds.Blocks*512)
}

func TestCopyReusesPreviousSnapshot(t *testing.T) {
	e := newMemCopyEnv(t)
	prev := files{
		"same":    pattern(1, 30_000),
		"changed": pattern(2, 20_000),
		"renamed": pattern(3, 10_000),
		"dropped": pattern(4, 5000),
	}
	writeSnapshot(t, e.follower, 10, 1, prev)
	next := files{
		"same":         prev["same"],
		"changed":      pattern(5, 20_000),
		"db/new-name":  prev["renamed"],
		"brand-new":    pattern(6, 7000),
		"db/same-copy": prev["same"],
	}
	uri, want := e.serve(t, 20, 2, next)
	opts := e.opts(t)
	r, err := e.copy(t, context.Background(), uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, 20, next)
	fetched := int64(len(next["changed"]) + len(next["brand-new"]))
	reused := size(next) - fetched
	p := opts.Progress.Snapshot()
	if p.BytesFetched != fetched || p.BytesReused != reused || p.BytesDone != size(next) || p.FilesDone != len(next) {
		t.Fatalf("progress %+v, want %d fetched and %d reused", p, fetched, reused)
	}
	if got := e.hookBytes.Load(); got != fetched+e.metaSize(t) {
		t.Fatalf("network carried %d bytes, want %d", got, fetched+e.metaSize(t))
	}
	// The old snapshot is gone; the linked files live on in the new one.
	if exists(t, e.follower.fs, filepath.Join("/follower", snapshotDirName(10))) {
		t.Fatal("old snapshot kept")
	}
	checkNewest(t, e.follower, 20, next)
}

// interruptAt returns a transport that cancels the Copy (through cancel)
// when it first asks for the file name.
func interruptAt(tr transport.Transport, name string, cancel context.CancelFunc) *hookTransport {
	var once sync.Once
	return &hookTransport{Transport: tr, before: func(ctx context.Context, req *raftpb.GetFileRequest) error {
		if req.GetFilename() == name {
			once.Do(cancel)
		}
		return ctx.Err()
	}}
}

func TestCopyResumesAfterInterrupt(t *testing.T) {
	fs := files{ // fetched largest first
		"f1":     pattern(1, 50_000),
		"f2":     pattern(2, 40_000),
		"dir/f3": pattern(3, 30_000),
		"f4":     pattern(4, 20_000),
		"f5":     pattern(5, 10_000),
	}
	for _, mode := range []string{"same process", "restart", "crash"} {
		t.Run(mode, func(t *testing.T) {
			mem := vfs.NewMem()
			e := newCopyEnv(t, vfs.NewMem(), "/leader", mem, "/follower", FileServiceOptions{})
			uri, want := e.serve(t, 20, 2, fs)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opts := e.opts(t)
			opts.Parallel = 1
			opts.Transport = interruptAt(e.tr, "dir/f3", cancel)
			_, err := e.copy(t, ctx, uri, want, opts)
			if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted Copy = %v, want ErrInterrupted", err)
			}
			if p := opts.Progress.Snapshot(); p.FilesDone != 2 {
				t.Fatalf("progress after interrupt %+v, want 2 files done", p)
			}
			if i, _ := e.follower.LastIndex(); i != 0 {
				t.Fatalf("interrupted Copy installed snapshot %d", i)
			}
			follower := e.follower
			switch mode {
			case "restart":
				_ = follower.Close()
				follower = openStore(t, mem, "/follower")
			case "crash":
				_ = follower.Close()
				mem.Crash()
				follower = openStore(t, mem, "/follower")
			}
			if !exists(t, mem, "/follower/temp/"+progressFileName) {
				t.Fatal("progress lost")
			}
			before := e.hookBytes.Load()
			opts = e.opts(t)
			r, err := Copy(context.Background(), follower, uri, want, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			checkReader(t, r, 20, fs)
			rest := int64(len(fs["dir/f3"]) + len(fs["f4"]) + len(fs["f5"]))
			if got := e.hookBytes.Load() - before; got != rest+e.metaSize(t) {
				t.Fatalf("resumed Copy moved %d bytes, want %d", got, rest+e.metaSize(t))
			}
			p := opts.Progress.Snapshot()
			if p.BytesFetched != rest || p.BytesReused != size(fs)-rest {
				t.Fatalf("progress %+v, want %d fetched", p, rest)
			}
		})
	}
}

func TestCopyResumesManySmallFiles(t *testing.T) {
	mem := vfs.NewMem()
	e := newCopyEnv(t, vfs.NewMem(), "/leader", mem, "/follower", FileServiceOptions{})
	fs := files{}
	for i := range 300 {
		fs[fmt.Sprintf("d%d/f%03d", i%7, i)] = pattern(byte(i), 100+i)
	}
	uri, want := e.serve(t, 20, 2, fs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	opts := e.opts(t)
	opts.Transport = &hookTransport{Transport: e.tr, before: func(ctx context.Context, req *raftpb.GetFileRequest) error {
		if calls.Add(1) == 150 {
			cancel()
		}
		return ctx.Err()
	}}
	if _, err := e.copy(t, ctx, uri, want, opts); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Copy = %v, want ErrInterrupted", err)
	}
	done := opts.Progress.Snapshot()
	_ = e.follower.Close()
	mem.Crash()
	follower := openStore(t, mem, "/follower")
	before := e.hookBytes.Load()
	opts = e.opts(t)
	r, err := Copy(context.Background(), follower, uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkReader(t, r, 20, fs)
	p := opts.Progress.Snapshot()
	if p.FilesDone != len(fs) || p.BytesReused != done.BytesDone || p.BytesReused == 0 {
		t.Fatalf("resumed progress %+v; the interrupted Copy had done %+v", p, done)
	}
	if got := e.hookBytes.Load() - before; got != size(fs)-done.BytesDone+e.metaSize(t) {
		t.Fatalf("resumed Copy moved %d bytes, want %d", got, size(fs)-done.BytesDone+e.metaSize(t))
	}
}

func TestCopyCrashMidway(t *testing.T) {
	defer func(b int64) { progressBytes = b }(progressBytes)
	progressBytes = 64 << 10
	fs := files{
		"big":   pattern(1, 300_000), // past the progress batch: recorded at once
		"mid":   pattern(2, 100_000),
		"small": pattern(3, 1000),
		"empty": nil,
	}
	resumed := false
	defer func() {
		if !resumed && !t.Failed() {
			t.Error("no crash left a file to resume")
		}
	}()
	for _, k := range []int32{2, 5, 10, 16, 19, 25} {
		t.Run(fmt.Sprint("crash at call ", k), func(t *testing.T) {
			mem := vfs.NewMem()
			var crashed atomic.Bool
			follower := vfs.WithInjector(mem, vfs.InjectorFunc(func(vfs.Op, string) error {
				if crashed.Load() {
					return errCrashed
				}
				return nil
			}))
			e := newCopyEnv(t, vfs.NewMem(), "/leader", follower, "/follower", FileServiceOptions{})
			uri, want := e.serve(t, 20, 2, fs)
			var calls atomic.Int32
			opts := e.opts(t)
			opts.ChunkSize = 16 << 10
			opts.Parallel = 1 // files in a fixed order: the crash points are deterministic
			prog := opts.Progress
			opts.Transport = &hookTransport{Transport: e.tr, before: func(ctx context.Context, req *raftpb.GetFileRequest) error {
				if calls.Add(1) == k {
					if req.GetFilename() != "big" && req.GetFilename() != MetaFileName {
						// big is downloaded: let its sync, which runs
						// beside this download, record it first.
						deadline := time.Now().Add(10 * time.Second)
						for prog.Snapshot().FilesDone < 1 && time.Now().Before(deadline) {
							time.Sleep(time.Millisecond)
						}
					}
					mem.Crash()
					crashed.Store(true)
				}
				return nil
			}}
			r, err := e.copy(t, context.Background(), uri, want, opts)
			if err == nil {
				r.Close()
				t.Fatalf("Copy finished in %d calls, before the crash at call %d", calls.Load(), k)
			}
			s := openStore(t, mem, "/follower")
			opts = e.opts(t)
			r, err = Copy(context.Background(), s, uri, want, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			checkReader(t, r, 20, fs)
			if p := opts.Progress.Snapshot(); p.BytesReused > 0 {
				resumed = true
				t.Logf("resumed %d bytes", p.BytesReused)
			}
		})
	}
}

func TestCopyResumeDiscardsStaleFiles(t *testing.T) {
	mem := vfs.NewMem()
	e := newCopyEnv(t, vfs.NewMem(), "/leader", mem, "/follower", FileServiceOptions{})
	first := files{
		"a": pattern(1, 50_000), // complete, same later: kept
		"b": pattern(2, 40_000), // complete, changes: fetched again
		"c": pattern(3, 30_000), // complete, gone later: deleted
		"d": pattern(4, 20_000), // partial: fetched again
	}
	uri, want := e.serve(t, 20, 2, first)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := e.opts(t)
	opts.Parallel = 1
	var dChunks atomic.Int32
	opts.Transport = &hookTransport{Transport: e.tr, before: func(ctx context.Context, req *raftpb.GetFileRequest) error {
		if req.GetFilename() == "d" && dChunks.Add(1) == 3 {
			cancel() // d is partly written
		}
		return ctx.Err()
	}}
	if _, err := e.copy(t, ctx, uri, want, opts); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Copy = %v, want ErrInterrupted", err)
	}
	if fi, err := mem.Stat("/follower/temp/d"); err != nil || fi.Size() == 0 {
		t.Fatalf("partial file d: %v, %v", fi, err)
	}
	writeFile(t, mem, "/follower/temp/junk/x", []byte("not recorded"))

	second := files{
		"a": first["a"],
		"b": pattern(5, 40_000),
		"d": first["d"],
		"e": pattern(6, 10_000),
	}
	uri, want = e.serve(t, 30, 3, second)
	before := e.hookBytes.Load()
	r, err := e.copy(t, context.Background(), uri, want, e.opts(t))
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, 30, second)
	refetched := int64(len(second["b"]) + len(second["d"]) + len(second["e"]))
	if got := e.hookBytes.Load() - before; got != refetched+e.metaSize(t) {
		t.Fatalf("second Copy moved %d bytes, want %d", got, refetched+e.metaSize(t))
	}
	for _, gone := range []string{"c", "junk/x"} {
		if exists(t, mem, filepath.Join(r.Path(), gone)) {
			t.Errorf("%s survived into the snapshot", gone)
		}
	}
}

// flipper returns a transport that flips a byte of the response for
// file name at offset 0, times times (-1: always).
func flipper(tr transport.Transport, name string, times int) (*hookTransport, *atomic.Int32) {
	var flips atomic.Int32
	return &hookTransport{Transport: tr, after: func(req *raftpb.GetFileRequest, resp *raftpb.GetFileResponse, err error) {
		if err == nil && req.GetFilename() == name && req.GetOffset() == 0 && len(resp.GetData()) > 0 {
			if times < 0 || flips.Load() < int32(times) {
				flips.Add(1)
				resp.Data[len(resp.Data)/2] ^= 0x40
			}
		}
	}}, &flips
}

func TestCopyCorruptChunkIsFetchedAgain(t *testing.T) {
	e := newMemCopyEnv(t)
	fs := files{"a": pattern(1, 10_000), "b": pattern(2, 5000)}
	uri, want := e.serve(t, 20, 2, fs)
	opts := e.opts(t)
	tr, flips := flipper(e.tr, "a", 1)
	opts.Transport = tr
	r, err := e.copy(t, context.Background(), uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, 20, fs)
	if flips.Load() != 1 {
		t.Fatalf("%d flips", flips.Load())
	}
	if p := opts.Progress.Snapshot(); p.BytesFetched != size(fs)+int64(len(fs["a"])) || p.BytesDone != size(fs) {
		t.Fatalf("progress %+v, want a fetched twice", p)
	}
}

func TestCopyPersistentCorruptionFails(t *testing.T) {
	e := newMemCopyEnv(t)
	fs := files{"a": pattern(1, 10_000), "b": pattern(2, 5000)}
	uri, want := e.serve(t, 20, 2, fs)
	opts := e.opts(t)
	opts.Retries = 2
	tr, flips := flipper(e.tr, "a", -1)
	opts.Transport = tr
	_, err := e.copy(t, context.Background(), uri, want, opts)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("Copy = %v, want ErrChecksum", err)
	}
	if flips.Load() != 3 {
		t.Fatalf("file fetched %d times, want 1 + 2 retries", flips.Load())
	}
	if i, _ := e.follower.LastIndex(); i != 0 {
		t.Fatal("a corrupt snapshot was installed")
	}
	if exists(t, e.follower.fs, "/follower/temp/a") {
		t.Fatal("the corrupt file was kept")
	}
	tab, err := readTable(e.follower.fs, "/follower/temp/"+progressFileName)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tab.GetFiles() {
		if f.GetName() == "a" {
			t.Fatal("the corrupt file is recorded complete")
		}
	}
}

func TestCopyRemoteErrors(t *testing.T) {
	t.Run("file gone on the leader", func(t *testing.T) {
		e := newMemCopyEnv(t)
		uri, want := e.serve(t, 20, 2, files{"a": pattern(1, 100), "b": pattern(2, 100)})
		r, _ := e.leader.Open()
		_ = e.leader.fs.Remove(filepath.Join(r.Path(), "b"))
		r.Close()
		var calls atomic.Int32
		opts := e.opts(t)
		opts.Transport = &hookTransport{Transport: e.tr, before: func(_ context.Context, req *raftpb.GetFileRequest) error {
			if req.GetFilename() == "b" {
				calls.Add(1)
			}
			return nil
		}}
		if _, err := e.copy(t, context.Background(), uri, want, opts); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Copy = %v, want ErrNotFound", err)
		}
		if calls.Load() != 1 {
			t.Fatalf("a permanent error was retried: %d calls", calls.Load())
		}
	})
	t.Run("reader gone", func(t *testing.T) {
		e := newMemCopyEnv(t)
		uri, want := e.serve(t, 20, 2, files{"a": pattern(1, 100)})
		_, id, _ := ParseURI(uri)
		e.files.Unregister(id)
		if _, err := e.copy(t, context.Background(), uri, want, e.opts(t)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Copy = %v, want ErrNotFound", err)
		}
	})
	t.Run("other snapshot", func(t *testing.T) {
		e := newMemCopyEnv(t)
		uri, _ := e.serve(t, 20, 2, files{"a": pattern(1, 100)})
		for _, want := range []*raftpb.SnapshotMeta{testMeta(20, 3), testMeta(21, 2)} {
			if _, err := e.copy(t, context.Background(), uri, want, e.opts(t)); !errors.Is(err, ErrMismatch) {
				t.Fatalf("Copy of %v = %v, want ErrMismatch", want, err)
			}
		}
	})
	t.Run("peer vanishes", func(t *testing.T) {
		mem := vfs.NewMem()
		e := newCopyEnv(t, vfs.NewMem(), "/leader", mem, "/follower", FileServiceOptions{})
		fs := files{"a": pattern(1, 20_000), "b": pattern(2, 10_000)}
		uri, want := e.serve(t, 20, 2, fs)
		opts := e.opts(t)
		opts.Parallel = 1
		var chunks atomic.Int32
		opts.Transport = &hookTransport{Transport: e.tr, before: func(_ context.Context, req *raftpb.GetFileRequest) error {
			if req.GetFilename() == "b" && chunks.Add(1) == 2 {
				e.net.Unlisten("leader")
			}
			return nil
		}}
		_, err := e.copy(t, context.Background(), uri, want, opts)
		if err == nil || errors.Is(err, ErrInterrupted) || !errors.Is(err, transport.ErrUnreachable) {
			t.Fatalf("Copy = %v, want an unreachable error", err)
		}
		// temp/ stays, with a complete, durable, for a later resume.
		_ = e.follower.Close()
		mem.Crash()
		openStore(t, mem, "/follower")
		tab, err := readTable(mem, "/follower/temp/"+progressFileName)
		if err != nil || len(tab.GetFiles()) != 1 || tab.GetFiles()[0].GetName() != "a" {
			t.Fatalf("progress after the peer vanished: %v, %v", tab, err)
		}
	})
}

func TestCopyRefusals(t *testing.T) {
	e := newMemCopyEnv(t)
	uri, want := e.serve(t, 20, 2, files{"a": pattern(1, 100)})
	ctx := context.Background()
	if _, err := e.copy(t, ctx, "remote://leader/x", want, e.opts(t)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad uri: %v", err)
	}
	if _, err := e.copy(t, ctx, uri, nil, e.opts(t)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil want: %v", err)
	}
	if _, err := e.copy(t, ctx, uri, want, CopyOptions{}); err == nil {
		t.Fatal("Copy without a transport succeeded")
	}
	bad := e.opts(t)
	bad.ChunkSize = -1
	if _, err := e.copy(t, ctx, uri, want, bad); err == nil {
		t.Fatal("Copy with a negative ChunkSize succeeded")
	}
	w, _ := e.follower.Create()
	if _, err := e.copy(t, ctx, uri, want, e.opts(t)); !errors.Is(err, ErrBusy) {
		t.Fatalf("Copy during a save: %v", err)
	}
	w.Abort()
	if _, err := e.copy(t, ctx, uri, want, e.opts(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.copy(t, ctx, uri, want, e.opts(t)); !errors.Is(err, ErrStale) {
		t.Fatalf("second Copy: %v, want ErrStale", err)
	}
}

func TestCopyDownloadsInParallel(t *testing.T) {
	e := newMemCopyEnv(t)
	fs := files{}
	for i := range 8 {
		fs[fmt.Sprintf("f%d", i)] = pattern(byte(i), 8000)
	}
	uri, want := e.serve(t, 20, 2, fs)
	var inflight, peak atomic.Int32
	overlap := make(chan struct{})
	var once sync.Once
	opts := e.opts(t)
	opts.Parallel = 3
	opts.Transport = &hookTransport{Transport: e.tr, before: func(ctx context.Context, req *raftpb.GetFileRequest) error {
		if req.GetFilename() == MetaFileName {
			return nil
		}
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n >= 2 {
			once.Do(func() { close(overlap) })
		}
		// Hold the first calls until a second one runs beside them.
		select {
		case <-overlap:
		case <-time.After(5 * time.Second):
		}
		return nil
	}, after: func(req *raftpb.GetFileRequest, _ *raftpb.GetFileResponse, _ error) {
		if req.GetFilename() != MetaFileName {
			inflight.Add(-1)
		}
	}}
	r, err := e.copy(t, context.Background(), uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, 20, fs)
	if p := peak.Load(); p < 2 || p > 3 {
		t.Fatalf("peak of %d concurrent GetFile calls, want 2..3", p)
	}
}

// TestCopySyncsOffTheDownloadPath holds the sync of the first file
// downloaded and expects the only worker to fetch the next file meanwhile.
func TestCopySyncsOffTheDownloadPath(t *testing.T) {
	mem := vfs.NewMem()
	release := make(chan struct{})
	var held atomic.Bool
	follower := vfs.WithInjector(mem, vfs.InjectorFunc(func(op vfs.Op, path string) error {
		if op == vfs.OpSync && filepath.Base(path) == "first" && held.CompareAndSwap(false, true) {
			<-release
		}
		return nil
	}))
	e := newCopyEnv(t, vfs.NewMem(), "/leader", follower, "/follower", FileServiceOptions{})
	fs := files{"first": pattern(1, 30_000), "second": pattern(2, 20_000)} // largest first
	uri, want := e.serve(t, 20, 2, fs)
	opts := e.opts(t)
	opts.Parallel = 1
	var secondDuringSync atomic.Bool
	opts.Transport = &hookTransport{Transport: e.tr, before: func(ctx context.Context, req *raftpb.GetFileRequest) error {
		if req.GetFilename() == "second" && held.Load() {
			select {
			case <-release:
			default:
				secondDuringSync.Store(true)
				close(release)
			}
		}
		return nil
	}}
	done := make(chan error, 1)
	go func() {
		r, err := Copy(context.Background(), e.follower, uri, want, opts)
		if err == nil {
			checkReader(t, r, 20, fs)
			r.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatalf("Copy did not fetch the second file while the first one's sync was held: %v", <-done)
	}
	if !secondDuringSync.Load() {
		t.Fatal("the second file was fetched only after the first one's sync")
	}
}

// TestCopyFailedSync fails the sync of one downloaded file: the Copy fails
// with the sync's error, and a later Copy fetches that file again.
func TestCopyFailedSync(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Bool
	fail.Store(true)
	follower := vfs.WithInjector(mem, vfs.InjectorFunc(func(op vfs.Op, path string) error {
		if op == vfs.OpSync && filepath.Base(path) == "b" && fail.Load() {
			return fmt.Errorf("%w: sync %s", vfs.ErrInjected, path)
		}
		return nil
	}))
	e := newCopyEnv(t, vfs.NewMem(), "/leader", follower, "/follower", FileServiceOptions{})
	fs := files{"a": pattern(1, 30_000), "b": pattern(2, 20_000), "c": pattern(3, 10_000)}
	uri, want := e.serve(t, 20, 2, fs)
	opts := e.opts(t)
	opts.Parallel = 2
	if _, err := e.copy(t, context.Background(), uri, want, opts); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Copy with a failing sync: %v, want ErrInjected", err)
	}
	fail.Store(false)
	opts = e.opts(t)
	r, err := e.copy(t, context.Background(), uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, 20, fs)
	if p := opts.Progress.Snapshot(); p.BytesFetched < 20_000 {
		t.Fatalf("the second Copy fetched %d bytes: b, never synced, must be fetched again", p.BytesFetched)
	}
}

func TestCopyThrottledOnBothSides(t *testing.T) {
	// 2 MB/s in 100 cycles of 20 KB on each side.
	const rate = 2_000_000
	e := newCopyEnv(t, vfs.NewMem(), "/leader", vfs.NewMem(), "/follower", FileServiceOptions{
		Throttle: throttle.New(throttle.Options{BytesPerSecond: rate, CyclesPerSecond: 100}),
	})
	fs := files{"a": pattern(1, 200_000), "b": pattern(2, 150_000), "c": pattern(3, 50_000)}
	uri, want := e.serve(t, 20, 2, fs)
	opts := e.opts(t)
	opts.ChunkSize = 64 << 10
	opts.Throttle = throttle.New(throttle.Options{BytesPerSecond: rate, CyclesPerSecond: 100})
	start := time.Now()
	r, err := e.copy(t, context.Background(), uri, want, opts)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	checkReader(t, r, 20, fs)
	// 400 KB at 2 MB/s: at least 200ms less the first cycle's grant.
	if minEl := time.Duration(float64(size(fs)-2*rate/100) / rate * float64(time.Second)); el < minEl {
		t.Fatalf("Copy took %v, faster than the throttle allows (%v)", el, minEl)
	}
	t.Logf("%d bytes in %v", size(fs), el)
}

func TestCopyMemoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB copy")
	}
	root := t.TempDir()
	e := newCopyEnv(t, vfs.Default, filepath.Join(root, "leader"), vfs.Default, filepath.Join(root, "follower"), FileServiceOptions{})
	const fileSize = 64 << 20
	w, err := e.leader.Create()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(w.Path(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	block := pattern(7, 1<<20)
	for i := range fileSize >> 20 {
		block[0], block[1] = byte(i), byte(i>>8) // no two blocks alike
		if _, err := f.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	_ = f.Close()
	block = nil
	if err := w.AddFile("big", nil); err != nil {
		t.Fatal(err)
	}
	w.SetMeta(testMeta(5, 1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, _ := e.leader.Open()
	uri, _ := e.files.Register(r, "leader")

	defer debug.SetGCPercent(debug.SetGCPercent(50))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	var calls atomic.Int32
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		for {
			p := peak.Load()
			if ms.HeapInuse <= p || peak.CompareAndSwap(p, ms.HeapInuse) {
				return
			}
		}
	}
	opts := e.opts(t)
	opts.ChunkSize = DefaultChunkSize
	opts.Transport = &hookTransport{Transport: e.tr, after: func(*raftpb.GetFileRequest, *raftpb.GetFileResponse, error) {
		if calls.Add(1)%16 == 0 {
			sample()
		}
	}}
	got, err := e.copy(t, context.Background(), uri, testMeta(5, 1), opts)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(got.Path(), "big")); err != nil || fi.Size() != fileSize {
		t.Fatalf("copied file: %v, %v", fi, err)
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("heap in use grew by %d KiB at most over %d calls", growth>>10, calls.Load())
	if growth > fileSize/4 {
		t.Fatalf("heap in use grew by %d MiB copying a %d MiB file", growth>>20, fileSize>>20)
	}
}

func BenchmarkCopy(b *testing.B) {
	for _, parallel := range []int{1, 4} {
		b.Run(fmt.Sprintf("8x1MiB/parallel=%d", parallel), func(b *testing.B) {
			leader := vfs.NewMem()
			e := newCopyEnv(b, leader, "/leader", vfs.NewMem(), "/follower", FileServiceOptions{})
			e.net.SetFileHook(nil)
			fs := files{}
			for i := range 8 {
				fs[fmt.Sprintf("f%d", i)] = pattern(byte(i), 1<<20)
			}
			uri, want := e.serve(b, 20, 2, fs)
			b.SetBytes(size(fs))
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				dst, err := Open(fmt.Sprintf("/f%d", i), Options{FS: vfs.NewMem()})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				r, err := Copy(context.Background(), dst, uri, want, CopyOptions{Transport: e.tr, Parallel: parallel})
				if err != nil {
					b.Fatal(err)
				}
				_ = r.Close()
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	net := memory.NewNetwork(1)
	defer net.Close()
	tr := net.Transport("x")
	good := DefaultCopyOptions()
	good.Transport = tr
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*CopyOptions){
		func(o *CopyOptions) { o.Transport = nil },
		func(o *CopyOptions) { o.ChunkSize = -1 },
		func(o *CopyOptions) { o.Parallel = -1 },
		func(o *CopyOptions) { o.ChunkTimeout = -1 },
		func(o *CopyOptions) { o.RetryBackoff = -1 },
	} {
		o := good
		mod(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
	if err := DefaultFileServiceOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, o := range []FileServiceOptions{{ReaderLease: -1}, {MaxChunk: -1}} {
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
}
