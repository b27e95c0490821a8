package snapshot

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
	"github.com/graft-raft/graft/vfs"
)

func newFileService(t testing.TB, opts FileServiceOptions) *FileService {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	f := NewFileService(opts)
	t.Cleanup(f.Close)
	return f
}

func getFile(f *FileService, id uint64, name string, off, count int64) (*raftpb.GetFileResponse, error) {
	return f.HandleGetFile(context.Background(), &raftpb.GetFileRequest{
		ReaderId: id, Filename: name, Offset: off, Count: count, ReadPartly: true,
	})
}

func wantCode(t *testing.T, what string, err error, code codes.Code, sentinel error) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, code)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("%s: %v does not match %v", what, err, sentinel)
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		addr string
		id   uint64
	}{
		{"remote://10.0.0.1:8100/42", "10.0.0.1:8100", 42},
		{"remote://[::1]:8100/18446744073709551615", "[::1]:8100", 1<<64 - 1},
		{FormatURI("n1", 7), "n1", 7},
	} {
		addr, id, err := ParseURI(tc.uri)
		if err != nil || addr != tc.addr || id != tc.id {
			t.Errorf("ParseURI(%q) = %q, %d, %v", tc.uri, addr, id, err)
		}
	}
	for _, uri := range []string{
		"", "remote://", "remote:///5", "remote://a", "remote://a/", "remote://a/0", "remote://a/-1",
		"remote://a/x", "http://a/5", "remote://a/b/5", "remote://a/5?x", "remote://a/99999999999999999999",
		"remote://a/05", "remote://a/+5", "remote://a/ 5",
	} {
		if _, _, err := ParseURI(uri); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseURI(%q) = %v, want ErrInvalid", uri, err)
		}
	}
}

// serveSnapshot sets up a storage with snapshot 10 registered with a service.
func serveSnapshot(t *testing.T, fsys vfs.FS, dir string, opts FileServiceOptions) (*Storage, *FileService, uint64) {
	t.Helper()
	s := openStore(t, fsys, dir)
	writeSnapshot(t, s, 10, 1, oldFiles)
	r, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	f := newFileService(t, opts)
	uri, id := f.Register(r, "leader:1")
	if addr, pid, err := ParseURI(uri); err != nil || addr != "leader:1" || pid != id {
		t.Fatalf("Register URI %q: %q, %d, %v", uri, addr, pid, err)
	}
	return s, f, id
}

func TestFileServiceServesFiles(t *testing.T) {
	mem := vfs.NewMem()
	s, f, id := serveSnapshot(t, mem, "/snap", FileServiceOptions{MaxChunk: 4096})
	dir := filepath.Join("/snap", snapshotDirName(10))
	// Whole file, chunk by chunk.
	var got []byte
	for {
		resp, err := getFile(f, id, "data", int64(len(got)), 3000)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(resp.GetData())) != resp.GetReadSize() {
			t.Fatalf("read_size %d with %d bytes", resp.GetReadSize(), len(resp.GetData()))
		}
		got = append(got, resp.GetData()...)
		if resp.GetEof() {
			break
		}
	}
	if !bytes.Equal(got, oldFiles["data"]) {
		t.Fatal("served content differs")
	}
	// The count is capped at MaxChunk, whatever is asked.
	resp, err := getFile(f, id, "data", 0, 1<<62)
	if err != nil || len(resp.GetData()) != 4096 || resp.GetEof() {
		t.Fatalf("huge count: %d bytes, eof %v, %v", len(resp.GetData()), resp.GetEof(), err)
	}
	// At or past the end: eof, no data.
	for _, off := range []int64{10_000, 10_001, 1 << 50} {
		resp, err := getFile(f, id, "data", off, 100)
		if err != nil || !resp.GetEof() || len(resp.GetData()) != 0 {
			t.Fatalf("offset %d: %v, %v", off, resp, err)
		}
	}
	// An empty file is eof at once.
	if resp, err := getFile(f, id, "empty", 0, 100); err != nil || !resp.GetEof() || len(resp.GetData()) != 0 {
		t.Fatalf("empty file: %v, %v", resp, err)
	}
	// The meta file is served as it is on disk, and decodes.
	resp, err = getFile(f, id, MetaFileName, 0, 1<<20)
	if err != nil || !resp.GetEof() {
		t.Fatal(resp, err)
	}
	if !bytes.Equal(resp.GetData(), readFile(t, mem, filepath.Join(dir, MetaFileName))) {
		t.Fatal("served meta differs from the file")
	}
	if _, err := decodeTable(resp.GetData()); err != nil {
		t.Fatal(err)
	}
	_ = s
}

func TestFileServiceThrottledReads(t *testing.T) {
	// 1000 bytes per 10ms cycle.
	th := throttle.New(throttle.Options{BytesPerSecond: 100_000, CyclesPerSecond: 100})
	_, f, id := serveSnapshot(t, vfs.NewMem(), "/snap", FileServiceOptions{Throttle: th})
	// read_partly: at most one cycle's budget.
	resp, err := getFile(f, id, "data", 0, 3000)
	if err != nil || len(resp.GetData()) == 0 || len(resp.GetData()) > 1000 {
		t.Fatalf("partial read: %d bytes, %v", len(resp.GetData()), err)
	}
	// Without read_partly, the whole chunk, over several cycles.
	resp, err = f.HandleGetFile(context.Background(), &raftpb.GetFileRequest{ReaderId: id, Filename: "data", Offset: 100, Count: 3000})
	if err != nil || !bytes.Equal(resp.GetData(), oldFiles["data"][100:3100]) || resp.GetEof() {
		t.Fatalf("full read: %d bytes, eof %v, %v", len(resp.GetData()), resp.GetEof(), err)
	}
	// A throttled read gives up with its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.HandleGetFile(ctx, &raftpb.GetFileRequest{ReaderId: id, Filename: "data", Count: 3000})
	wantCode(t, "cancelled read", err, codes.Canceled, nil)
}

func TestFileServiceErrors(t *testing.T) {
	mem := vfs.NewMem()
	s, f, id := serveSnapshot(t, mem, "/snap", FileServiceOptions{})
	dir := filepath.Join("/snap", snapshotDirName(10))
	writeFile(t, mem, filepath.Join(dir, "unlisted"), []byte("not in the table"))
	writeFile(t, mem, "/etc/passwd", []byte("root"))

	_, err := getFile(f, id+1, "data", 0, 10)
	wantCode(t, "unknown reader", err, codes.NotFound, ErrNotFound)
	_, err = getFile(f, 0, "data", 0, 10)
	wantCode(t, "reader 0", err, codes.NotFound, ErrNotFound)
	for _, name := range []string{
		"missing", "unlisted", "db", "db/", "../../etc/passwd", "/etc/passwd", "a\x00b", "", ".", "./data",
		filepath.Join(dir, "data"), MetaFileName + ".tmp", progressFileName,
		"..", "../snapshot_10/data", "db/../data", "db//CURRENT", "db/./CURRENT", "data/", "data\x00", "\x00data",
		`..\\data`, "%2e%2e/data", "DATA", " data", "data ", "/data", "//data", "db\\CURRENT",
	} {
		_, err := getFile(f, id, name, 0, 10)
		wantCode(t, "name "+name, err, codes.PermissionDenied, ErrDenied)
	}
	for _, tc := range []struct{ off, count int64 }{{-1, 10}, {0, 0}, {0, -5}, {-1, -1}, {math.MinInt64, 10}, {0, math.MinInt64}} {
		_, err := getFile(f, id, "data", tc.off, tc.count)
		wantCode(t, "bad offset/count", err, codes.InvalidArgument, ErrInvalid)
	}
	// A listed file missing from disk.
	if err := mem.Remove(filepath.Join(dir, "db", "CURRENT")); err != nil {
		t.Fatal(err)
	}
	_, err = getFile(f, id, "db/CURRENT", 0, 10)
	wantCode(t, "listed file missing", err, codes.NotFound, ErrNotFound)

	// The errors cross a transport with their code and sentinel.
	net := memory.NewNetwork(1)
	defer net.Close()
	router := transport.NewRouter()
	router.SetFileHandler(f)
	if _, err := net.Listen("leader", router); err != nil {
		t.Fatal(err)
	}
	tr := net.Transport("follower")
	defer tr.Close()
	_, err = tr.GetFile(context.Background(), "leader", &raftpb.GetFileRequest{ReaderId: id, Filename: "../x", Count: 1})
	wantCode(t, "over the transport", err, codes.PermissionDenied, ErrDenied)

	// A removed reader is unknown.
	f.Unregister(id)
	f.Unregister(id) // twice is fine
	_, err = getFile(f, id, "data", 0, 10)
	wantCode(t, "removed reader", err, codes.NotFound, ErrNotFound)
	_ = s
}

func TestFileServiceSymlinks(t *testing.T) {
	root := t.TempDir()
	_, f, id := serveSnapshot(t, vfs.Default, filepath.Join(root, "snap"), FileServiceOptions{})
	dir := filepath.Join(root, "snap", snapshotDirName(10))
	secret := filepath.Join(root, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	_, err := getFile(f, id, "link", 0, 10)
	wantCode(t, "unlisted symlink", err, codes.PermissionDenied, ErrDenied)
	// A listed file replaced by a symlink is not followed.
	if err := os.Remove(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	_, err = getFile(f, id, "data", 0, 10)
	wantCode(t, "listed symlink", err, codes.PermissionDenied, ErrDenied)
}

func TestReaderIDsAreRandom(t *testing.T) {
	s := openStore(t, vfs.NewMem(), "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	f := newFileService(t, FileServiceOptions{})
	base, _ := s.Open()
	defer base.Close()
	seen := map[uint64]bool{}
	var or, and uint64 = 0, ^uint64(0)
	for range 200 {
		_, id := f.Register(base.Ref(), "a")
		if id == 0 || seen[id] {
			t.Fatalf("id %d is zero or repeated", id)
		}
		seen[id] = true
		or |= id
		and &= id
	}
	// 64 random bits: every bit is set in some id and clear in another.
	if or != ^uint64(0) || and != 0 {
		t.Fatalf("ids are not random over 64 bits: or %x and %x", or, and)
	}
	if n := f.Readers(); n != 200 {
		t.Fatalf("Readers = %d", n)
	}
	f.Close()
	if n := f.Readers(); n != 0 {
		t.Fatalf("Readers after Close = %d", n)
	}
	// After Close, Register releases the reader and GetFile fails.
	if uri, id := f.Register(base.Ref(), "a"); uri != "" || id != 0 {
		t.Fatalf("Register after Close = %q, %d", uri, id)
	}
	_, err := getFile(f, 1, "data", 0, 1)
	wantCode(t, "after Close", err, codes.Unavailable, ErrClosed)
	// Every reference the service held is gone: the snapshot can be
	// replaced and deleted.
	base.Close()
	writeSnapshot(t, s, 20, 1, newFiles)
	if exists(t, s.fs, filepath.Join("/snap", snapshotDirName(10))) {
		t.Fatal("snapshot 10 still referenced after the service closed")
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestFileServiceReaderLease(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	// A lease long enough that the real reaper never fires.
	f := newFileService(t, FileServiceOptions{ReaderLease: time.Hour})
	f.now = clk.Now
	r, _ := s.Open()
	_, id := f.Register(r, "a")
	writeSnapshot(t, s, 20, 2, newFiles) // 10 lives on through the reader
	old := filepath.Join("/snap", snapshotDirName(10))

	// Each use renews the lease.
	for range 3 {
		clk.Advance(50 * time.Minute)
		f.reap()
		if _, err := getFile(f, id, "data", 0, 1); err != nil {
			t.Fatalf("GetFile within the lease: %v", err)
		}
	}
	clk.Advance(time.Hour + time.Second)
	f.reap()
	_, err := getFile(f, id, "data", 0, 1)
	wantCode(t, "expired reader", err, codes.NotFound, ErrNotFound)
	if exists(t, mem, old) {
		t.Fatal("old snapshot kept after its reader expired")
	}
}

func TestFileServiceReaperExpires(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	f := newFileService(t, FileServiceOptions{ReaderLease: 20 * time.Millisecond})
	r, _ := s.Open()
	f.Register(r, "a")
	writeSnapshot(t, s, 20, 2, newFiles)
	// The reaper drops the reader from the table, then closes it, which
	// deletes the old snapshot: wait for both.
	waitFor(t, "the reaper to expire the reader and the old snapshot to go", func() bool {
		return f.Readers() == 0 && !exists(t, mem, filepath.Join("/snap", snapshotDirName(10)))
	})
}

func TestFileServiceUnregisterDuringRead(t *testing.T) {
	mem := vfs.NewMem()
	s := openStore(t, mem, "/snap")
	writeSnapshot(t, s, 10, 1, oldFiles)
	r, _ := s.Open()
	writeSnapshot(t, s, 20, 2, newFiles)
	f := newFileService(t, FileServiceOptions{})
	_, id := f.Register(r, "a")
	e, err := f.acquire(id) // a GetFile in progress
	if err != nil {
		t.Fatal(err)
	}
	f.Unregister(id)
	old := filepath.Join("/snap", snapshotDirName(10))
	if !exists(t, mem, old) {
		t.Fatal("snapshot deleted under a GetFile in progress")
	}
	f.release(e)
	if exists(t, mem, old) {
		t.Fatal("snapshot kept after the last GetFile ended")
	}
}

// FuzzParseURI checks that the uri of an InstallSnapshot request, which
// comes from the network, either fails to parse with ErrInvalid or names
// an address and a reader id that format back to exactly that uri.
func FuzzParseURI(f *testing.F) {
	for _, uri := range []string{
		FormatURI("10.0.0.1:8100", 42), FormatURI("[::1]:8100", 1<<64-1), "", "remote://", "remote://a/0",
		"remote://a/b/5", "remote://a/5?x", "remote://a/+5", "remote://a/05", "http://a/5",
	} {
		f.Add(uri)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		addr, id, err := ParseURI(uri)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseURI(%q) = %v, not ErrInvalid", uri, err)
			}
			return
		}
		if id == 0 || addr == "" || strings.ContainsAny(addr, "/?#") {
			t.Fatalf("ParseURI(%q) = %q, %d", uri, addr, id)
		}
		if again := FormatURI(addr, id); again != uri {
			t.Fatalf("ParseURI(%q) = %q, %d, which formats as %q", uri, addr, id, again)
		}
	})
}

// TestFileServiceHugeRequests checks that offsets and counts at the ends
// of their range are capped, answered without overflow, and never make
// the service allocate what they ask for.
func TestFileServiceHugeRequests(t *testing.T) {
	const chunk = 4096
	_, f, id := serveSnapshot(t, vfs.NewMem(), "/snap", FileServiceOptions{MaxChunk: chunk})
	size := int64(len(oldFiles["data"]))
	for _, tc := range []struct {
		off, count int64
		want       int64 // bytes
		eof        bool
	}{
		{0, math.MaxInt64, chunk, false},
		{0, 1 << 40, chunk, false},
		{size - 1, math.MaxInt64, 1, true},
		{size - 10, 5, 5, false},
		{size, math.MaxInt64, 0, true},
		{math.MaxInt64, math.MaxInt64, 0, true},
		{math.MaxInt64 - 1, 10, 0, true},
		{1 << 62, 1 << 62, 0, true},
	} {
		resp, err := getFile(f, id, "data", tc.off, tc.count)
		if err != nil || int64(len(resp.GetData())) != tc.want || resp.GetReadSize() != tc.want || resp.GetEof() != tc.eof {
			t.Errorf("offset %d count %d: %d bytes, eof %v, %v; want %d bytes, eof %v",
				tc.off, tc.count, len(resp.GetData()), resp.GetEof(), err, tc.want, tc.eof)
			continue
		}
		if tc.want > 0 && !bytes.Equal(resp.GetData(), oldFiles["data"][tc.off:tc.off+tc.want]) {
			t.Errorf("offset %d count %d: wrong bytes", tc.off, tc.count)
		}
	}
	// A request for 2^40 bytes allocates about one chunk, not 2^40 (or a
	// file's size).
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const calls = 20
	for range calls {
		if _, err := getFile(f, id, "data", 0, 1<<40); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 4*chunk {
		t.Fatalf("a GetFile of 2^40 bytes allocated %d bytes, want about the %d-byte chunk", per, chunk)
	}
}

// TestCopyWhileSnapshotReplaced checks that a snapshot a copier is
// reading outlives its replacement by a newer one (which deletes it on
// the leader's disk): the registered reader holds a reference, the copy
// completes with the old snapshot's bytes, and the old directory goes
// only when the reader is unregistered.
func TestCopyWhileSnapshotReplaced(t *testing.T) {
	leaderFS := vfs.NewMem()
	e := newCopyEnv(t, leaderFS, "/leader", vfs.NewMem(), "/follower", FileServiceOptions{})
	fs := files{"a": pattern(1, 20_000), "b/c": pattern(2, 5000)}
	uri, want := e.serve(t, 10, 1, fs)
	_, id, err := ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join("/leader", snapshotDirName(10))
	opts := e.opts(t)
	// The third GetFile waits while the test replaces the snapshot.
	var calls atomic.Int64
	reached, proceed := make(chan struct{}), make(chan struct{})
	opts.Transport = &hookTransport{Transport: e.tr, before: func(ctx context.Context, _ *raftpb.GetFileRequest) error {
		if calls.Add(1) == 3 {
			close(reached)
			select {
			case <-proceed:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}}
	type result struct {
		r   *Reader
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := Copy(context.Background(), e.follower, uri, want, opts)
		done <- result{r, err}
	}()
	select {
	case <-reached:
	case res := <-done:
		t.Fatalf("the copy ended after %d calls (%v) before the snapshot was replaced", calls.Load(), res.err)
	}
	// Mid-copy, the leader saves snapshot 20: 10 is no longer the newest
	// and would be deleted but for the reader.
	writeSnapshot(t, e.leader, 20, 2, newFiles)
	if !exists(t, leaderFS, old) {
		t.Error("snapshot 10 deleted under a registered reader")
	}
	close(proceed)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	defer r.Close()
	checkReader(t, r, 10, fs)
	if i, _ := e.leader.LastIndex(); i != 20 {
		t.Fatalf("leader's newest snapshot is %d, want 20", i)
	}
	e.files.Unregister(id)
	if exists(t, leaderFS, old) {
		t.Fatal("snapshot 10 kept after its reader was unregistered")
	}
}
