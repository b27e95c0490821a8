package grpctransport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	grpclib "google.golang.org/grpc"

	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// fakeHandler is a transport.Handler and FileHandler whose behaviour tests
// set through its function fields; nil fields answer with an echo.
type fakeHandler struct {
	vote     func(context.Context, *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error)
	append   func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error))
	snapshot func(context.Context, *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error)
	timeout  func(context.Context, *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error)
	getFile  func(context.Context, *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error)
}

func (h *fakeHandler) HandleRequestVote(ctx context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	if h.vote != nil {
		return h.vote(ctx, req)
	}
	return &raftpb.RequestVoteResponse{Term: req.Term, Granted: true, Reason: req.GroupId + "/" + req.PeerId}, nil
}

func (h *fakeHandler) HandleAppendEntries(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
	if h.append != nil {
		h.append(req, done)
		return
	}
	done(echoAppend(req), nil)
}

func echoAppend(req *raftpb.AppendEntriesRequest) *raftpb.AppendEntriesResponse {
	return &raftpb.AppendEntriesResponse{Term: req.Term, Success: true, LastLogIndex: req.PrevLogIndex + uint64(len(req.Entries))}
}

func (h *fakeHandler) HandleInstallSnapshot(ctx context.Context, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error) {
	if h.snapshot != nil {
		return h.snapshot(ctx, req)
	}
	return &raftpb.InstallSnapshotResponse{Term: req.Term, Success: req.Uri != ""}, nil
}

func (h *fakeHandler) HandleReadIndex(_ context.Context, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error) {
	return &raftpb.ReadIndexResponse{Success: true, Index: 7}, nil
}

func (h *fakeHandler) HandleTimeoutNow(ctx context.Context, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error) {
	if h.timeout != nil {
		return h.timeout(ctx, req)
	}
	return &raftpb.TimeoutNowResponse{Term: req.Term, Success: true}, nil
}

func (h *fakeHandler) HandleGetFile(ctx context.Context, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	if h.getFile != nil {
		return h.getFile(ctx, req)
	}
	data := bytes.Repeat([]byte{byte(req.ReaderId)}, int(req.Count))
	return &raftpb.GetFileResponse{Eof: true, ReadSize: req.Count, Data: data}, nil
}

// serve starts a Server for router on a loopback listener and stops it at
// the end of the test.
func serve(t *testing.T, router *transport.Router) (*Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(router)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, lis.Addr().String()
}

func newRouter(t *testing.T, h *fakeHandler, pairs ...string) *transport.Router {
	t.Helper()
	r := transport.NewRouter()
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := r.Register(pairs[i], pairs[i+1], h); err != nil {
			t.Fatal(err)
		}
	}
	r.SetFileHandler(h)
	return r
}

func newTransport(t *testing.T, opts Options) *Transport {
	t.Helper()
	tr := New(opts)
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// ctxT bounds a call that is expected to succeed: generously, since a
// 2-core CI machine running every package's tests with -race at once can
// stall a 6 MiB message for seconds.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func entries(n, size int, first uint64) []*raftpb.Entry {
	es := make([]*raftpb.Entry, n)
	for i := range es {
		es[i] = &raftpb.Entry{Term: 1, Index: first + uint64(i), Type: raftpb.EntryType_ENTRY_TYPE_NORMAL, Data: make([]byte, size)}
	}
	return es
}

func TestRoundTrip(t *testing.T) {
	_, addr := serve(t, newRouter(t, &fakeHandler{}, "g1", "n1"))
	tr := newTransport(t, DefaultOptions())
	ctx := ctxT(t)

	vote, err := tr.RequestVote(ctx, addr, &raftpb.RequestVoteRequest{GroupId: "g1", ServerId: "n2", PeerId: "n1", Term: 7})
	if err != nil || !vote.Granted || vote.Term != 7 || vote.Reason != "g1/n1" {
		t.Fatalf("RequestVote = %v, %v", vote, err)
	}
	app, err := tr.AppendEntries(ctx, addr, &raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", Term: 3, PrevLogIndex: 10, Entries: entries(4, 8, 11)})
	if err != nil || !app.Success || app.LastLogIndex != 14 {
		t.Fatalf("AppendEntries = %v, %v", app, err)
	}
	snap, err := tr.InstallSnapshot(ctx, addr, &raftpb.InstallSnapshotRequest{GroupId: "g1", PeerId: "n1", Term: 4, Uri: "remote://x/1"})
	if err != nil || !snap.Success || snap.Term != 4 {
		t.Fatalf("InstallSnapshot = %v, %v", snap, err)
	}
	tn, err := tr.TimeoutNow(ctx, addr, &raftpb.TimeoutNowRequest{GroupId: "g1", PeerId: "n1", Term: 5})
	if err != nil || !tn.Success || tn.Term != 5 {
		t.Fatalf("TimeoutNow = %v, %v", tn, err)
	}
	f, err := tr.GetFile(ctx, addr, &raftpb.GetFileRequest{ReaderId: 9, Filename: "data", Count: 100})
	if err != nil || !f.Eof || f.ReadSize != 100 || !bytes.Equal(f.Data, bytes.Repeat([]byte{9}, 100)) {
		t.Fatalf("GetFile = %v, %v", f, err)
	}

	p, err := tr.Pipeline(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 10 {
		if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", PrevLogIndex: uint64(i * 2), Entries: entries(2, 8, uint64(i*2+1))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		resp, err := p.Recv()
		if err != nil || resp.LastLogIndex != uint64(i*2+2) {
			t.Fatalf("Recv %d = %v, %v", i, resp, err)
		}
	}
}

func TestLargeMessage(t *testing.T) {
	_, addr := serve(t, newRouter(t, &fakeHandler{}, "g1", "n1"))
	tr := newTransport(t, DefaultOptions())
	// 6 MiB of entries, over gRPC's 4 MiB default limit.
	req := &raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", Entries: entries(96, 64<<10, 1)}
	resp, err := tr.AppendEntries(ctxT(t), addr, req)
	if err != nil || resp.LastLogIndex != 96 {
		t.Fatalf("AppendEntries = %v, %v", resp, err)
	}
	f, err := tr.GetFile(ctxT(t), addr, &raftpb.GetFileRequest{Count: 6 << 20})
	if err != nil || len(f.Data) != 6<<20 {
		t.Fatalf("GetFile: %d bytes, %v", len(f.GetData()), err)
	}
}

func TestUnknownGroup(t *testing.T) {
	_, addr := serve(t, newRouter(t, &fakeHandler{}, "g1", "n1"))
	tr := newTransport(t, DefaultOptions())
	ctx := ctxT(t)

	_, err := tr.RequestVote(ctx, addr, &raftpb.RequestVoteRequest{GroupId: "nope", PeerId: "n1"})
	if !errors.Is(err, transport.ErrUnknownGroup) {
		t.Fatalf("unknown group: err = %v, want ErrUnknownGroup", err)
	}
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), `"n1"`) {
		t.Fatalf("unknown group: err = %v (code %v), want NotFound naming group and peer", err, status.Code(err))
	}
	if _, err := tr.TimeoutNow(ctx, addr, &raftpb.TimeoutNowRequest{GroupId: "g1", PeerId: "n9"}); !errors.Is(err, transport.ErrUnknownGroup) {
		t.Fatalf("unknown peer: err = %v, want ErrUnknownGroup", err)
	}
	if _, err := tr.InstallSnapshot(ctx, addr, &raftpb.InstallSnapshotRequest{GroupId: "nope", PeerId: "n1", Term: 1, Uri: "remote://x/1"}); !errors.Is(err, transport.ErrUnknownGroup) {
		t.Fatalf("InstallSnapshot to an unknown group: err = %v, want ErrUnknownGroup", err)
	}
	if _, err := tr.AppendEntries(ctx, addr, &raftpb.AppendEntriesRequest{GroupId: "nope", PeerId: "n1", Term: 1}); !errors.Is(err, transport.ErrUnknownGroup) {
		t.Fatalf("AppendEntries to an unknown group: err = %v, want ErrUnknownGroup", err)
	}
	_, err = tr.AppendEntries(ctx, addr, &raftpb.AppendEntriesRequest{PeerId: "n1"})
	if status.Code(err) != codes.InvalidArgument || errors.Is(err, transport.ErrUnknownGroup) {
		t.Fatalf("empty group: err = %v, want InvalidArgument", err)
	}

	p, err := tr.Pipeline(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "nope", PeerId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Recv(); !errors.Is(err, transport.ErrUnknownGroup) {
		t.Fatalf("pipeline to unknown group: Recv err = %v, want ErrUnknownGroup", err)
	}
}

func TestHandlerErrors(t *testing.T) {
	h := &fakeHandler{
		vote: func(context.Context, *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
			return nil, status.Error(codes.PermissionDenied, "go away")
		},
		timeout: func(context.Context, *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error) {
			return nil, errors.New("node is stopping")
		},
		snapshot: func(context.Context, *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error) {
			return nil, nil
		},
		getFile: func(_ context.Context, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
			return nil, status.Errorf(codes.NotFound, "snapshot: no reader %d", req.ReaderId)
		},
	}
	_, addr := serve(t, newRouter(t, h, "g1", "n1"))
	tr := newTransport(t, DefaultOptions())
	ctx := ctxT(t)

	_, err := tr.RequestVote(ctx, addr, &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "go away") {
		t.Errorf("status error: got %v", err)
	}
	_, err = tr.TimeoutNow(ctx, addr, &raftpb.TimeoutNowRequest{GroupId: "g1", PeerId: "n1"})
	if status.Code(err) != codes.Unknown || !strings.Contains(err.Error(), "node is stopping") {
		t.Errorf("plain error: got %v", err)
	}
	_, err = tr.InstallSnapshot(ctx, addr, &raftpb.InstallSnapshotRequest{GroupId: "g1", PeerId: "n1"})
	if status.Code(err) != codes.Internal {
		t.Errorf("nil response: got %v", err)
	}
	_, err = tr.GetFile(ctx, addr, &raftpb.GetFileRequest{ReaderId: 3})
	if status.Code(err) != codes.NotFound || errors.Is(err, transport.ErrUnknownGroup) || !strings.Contains(err.Error(), "no reader 3") {
		t.Errorf("file handler NotFound: got %v (ErrUnknownGroup %v)", err, errors.Is(err, transport.ErrUnknownGroup))
	}

	// A process with no FileHandler.
	_, addr2 := serve(t, transport.NewRouter())
	_, err = tr.GetFile(ctx, addr2, &raftpb.GetFileRequest{ReaderId: 3})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("no file service: got %v", err)
	}
}

func TestPipelineOrderedResponses(t *testing.T) {
	const n = 64
	var (
		mu    sync.Mutex
		dones []func()
	)
	h := &fakeHandler{append: func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		mu.Lock()
		defer mu.Unlock()
		dones = append(dones, func() { done(echoAppend(req), nil) })
	}}
	_, addr := serve(t, newRouter(t, h, "g1", "n1"))
	tr := newTransport(t, DefaultOptions())
	p, err := tr.Pipeline(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range n {
		if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", PrevLogIndex: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all requests handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(dones) == n })
	// Complete in a random order, from many goroutines.
	rng := rand.New(rand.NewPCG(1, 2))
	var wg sync.WaitGroup
	for _, i := range rng.Perm(n) {
		wg.Go(dones[i])
	}
	wg.Wait()
	for i := range n {
		resp, err := p.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.LastLogIndex != uint64(i) {
			t.Fatalf("response %d answers request %d", i, resp.LastLogIndex)
		}
	}
}

func TestPipelineBoundsOutstanding(t *testing.T) {
	const bound, n = 8, 40
	var (
		mu                       sync.Mutex
		received, maxOutstanding int
		held                     []func()
		completed                int
		release                  = make(chan struct{})
	)
	h := &fakeHandler{append: func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		mu.Lock()
		defer mu.Unlock()
		received++
		maxOutstanding = max(maxOutstanding, received-completed)
		complete := func() {
			mu.Lock()
			completed++
			mu.Unlock()
			done(echoAppend(req), nil)
		}
		select {
		case <-release:
			go complete()
		default:
			held = append(held, complete)
		}
	}}
	srv, addr := serve(t, newRouter(t, h, "g1", "n1"))
	srv.maxOutstanding = bound
	tr := newTransport(t, DefaultOptions())
	p, err := tr.Pipeline(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range n {
		if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", PrevLogIndex: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the server to fill its window", func() bool { mu.Lock(); defer mu.Unlock(); return received >= bound })
	mu.Lock()
	close(release)
	for _, c := range held {
		go c()
	}
	mu.Unlock()
	for i := range n {
		resp, err := p.Recv()
		if err != nil || resp.LastLogIndex != uint64(i) {
			t.Fatalf("Recv %d = %v, %v", i, resp, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxOutstanding > bound {
		t.Fatalf("handler saw %d outstanding requests, bound is %d", maxOutstanding, bound)
	}
}

func TestPipelineHandlerError(t *testing.T) {
	h := &fakeHandler{append: func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		if req.PrevLogIndex == 3 {
			done(nil, errors.New("disk on fire"))
			return
		}
		done(echoAppend(req), nil)
	}}
	_, addr := serve(t, newRouter(t, h, "g1", "n1"))
	tr := newTransport(t, DefaultOptions())
	p, err := tr.Pipeline(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 6 {
		// Sends after the stream ended may fail; Recv says why.
		_ = p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", PrevLogIndex: uint64(i)})
	}
	for i := range 3 {
		if resp, err := p.Recv(); err != nil || resp.LastLogIndex != uint64(i) {
			t.Fatalf("Recv %d = %v, %v", i, resp, err)
		}
	}
	if _, err := p.Recv(); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Recv after handler error: %v", err)
	}
}

func TestPipelineMismatchedGroup(t *testing.T) {
	h := &fakeHandler{}
	_, addr := serve(t, newRouter(t, h, "g1", "n1", "g2", "n1"))
	tr := newTransport(t, DefaultOptions())
	p, err := tr.Pipeline(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g2", PeerId: "n1"}); err == nil {
		t.Fatal("Send for another group succeeded")
	}

	// The server checks too, for clients that do not.
	cc, err := grpclib.NewClient(addr, grpclib.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	stream, err := raftpb.NewRaftServiceClient(cc).PipelineEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1"})
	_ = stream.Send(&raftpb.AppendEntriesRequest{GroupId: "g2", PeerId: "n1"})
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first response: %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mismatched request: %v, want InvalidArgument", err)
	}
}

func TestPipelineCloseNoLeak(t *testing.T) {
	defer leakcheck.VerifyNone(t)
	router := newRouter(t, &fakeHandler{append: func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error)) {
		// Never answers.
	}}, "g1", "n1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(router)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tr := New(DefaultOptions())

	p, err := tr.Pipeline(context.Background(), lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1"}); err != nil {
		t.Fatal(err)
	}
	recvErr := make(chan error, 1)
	go func() {
		_, err := p.Recv()
		recvErr <- err
	}()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-recvErr; !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Recv after Close: %v, want ErrClosed", err)
	}
	if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1"}); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestServerStopEndsPipelines(t *testing.T) {
	defer leakcheck.VerifyNone(t)
	router := newRouter(t, &fakeHandler{
		append: func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error)) {},
	}, "g1", "n1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(router)
	srv.stopTimeout = time.Minute // Stop must not need the bound
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	addr := lis.Addr().String()
	waitFor(t, "Serve to start", func() bool { return srv.Addr() != nil })
	if srv.Addr().String() != addr {
		t.Errorf("Addr = %v, want %v", srv.Addr(), addr)
	}
	tr := New(DefaultOptions())
	defer tr.Close()

	p, err := tr.Pipeline(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// The handler never answers: the stream stays open with a request
	// outstanding.
	if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	srv.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Stop took %v", d)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := p.Recv(); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("pipeline Recv after Stop: %v, want ErrUnreachable", err)
	}
	if err := srv.Serve(lis); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Serve after Stop: %v, want ErrClosed", err)
	}
}

func TestServerStopBound(t *testing.T) {
	defer leakcheck.VerifyNone(t)
	started := make(chan struct{})
	router := newRouter(t, &fakeHandler{
		vote: func(ctx context.Context, _ *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
			close(started)
			<-ctx.Done() // only a hard stop ends this
			return nil, ctx.Err()
		},
	}, "g1", "n1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(router)
	srv.stopTimeout = 100 * time.Millisecond
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tr := New(Options{RPCTimeout: -1})
	defer tr.Close()
	voteErr := make(chan error, 1)
	go func() {
		_, err := tr.RequestVote(context.Background(), lis.Addr().String(), &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1"})
		voteErr <- err
	}()
	<-started
	start := time.Now()
	srv.Stop()
	if d := time.Since(start); d < srv.stopTimeout || d > 3*time.Second {
		t.Errorf("Stop took %v, want about %v", d, srv.stopTimeout)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if err := <-voteErr; err == nil {
		t.Error("RequestVote in progress at a hard stop succeeded")
	}
}

func TestDeadline(t *testing.T) {
	started := make(chan struct{}, 10)
	h := &fakeHandler{vote: func(ctx context.Context, _ *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}, append: func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error)) {}}
	_, addr := serve(t, newRouter(t, h, "g1", "n1"))

	// The default timeout applies to a context without a deadline.
	tr := newTransport(t, Options{RPCTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := tr.RequestVote(context.Background(), addr, &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1"})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, transport.ErrUnreachable) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DeadlineExceeded and ErrUnreachable", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Fatalf("returned after %v, want about 100ms", d)
	}
	// AppendEntries whose done never comes is bounded too.
	if _, err := tr.AppendEntries(context.Background(), addr, &raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AppendEntries err = %v, want DeadlineExceeded", err)
	}

	// The caller's deadline wins over a longer default.
	tr2 := newTransport(t, Options{RPCTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := tr2.RequestVote(ctx, addr, &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("returned after %v", d)
	}

	// Cancellation is the caller's, not the peer's fault.
	for len(started) > 0 {
		<-started
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	if _, err := tr2.RequestVote(ctx, addr, &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1"}); !errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("cancelled: err = %v, want context.Canceled only", err)
	}
}

func TestUnreachable(t *testing.T) {
	router := newRouter(t, &fakeHandler{}, "g1", "n1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	srv := NewServer(router)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tr := newTransport(t, DefaultOptions())
	req := &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1"}
	if _, err := tr.RequestVote(ctxT(t), addr, req); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := tr.RequestVote(ctxT(t), addr, req); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("stopped server: err = %v, want ErrUnreachable", err)
	}
	p, err := tr.Pipeline(ctxT(t), addr)
	if err == nil {
		// Opening a stream may succeed lazily; its first Recv must fail.
		_ = p.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1"})
		_, err = p.Recv()
		p.Close()
	}
	if !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("pipeline to stopped server: %v, want ErrUnreachable", err)
	}
	// A port nobody listens on.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	if _, err := tr.TimeoutNow(ctxT(t), deadAddr, &raftpb.TimeoutNowRequest{GroupId: "g1", PeerId: "n1"}); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("refused: err = %v, want ErrUnreachable", err)
	}
}

func TestResolveAndClose(t *testing.T) {
	_, addr := serve(t, newRouter(t, &fakeHandler{}, "g1", "n1"))
	var resolved atomic.Int32
	tr := New(Options{Resolve: func(a string) string {
		resolved.Add(1)
		if a == "node1:7000" {
			return addr
		}
		return a
	}})
	resp, err := tr.RequestVote(ctxT(t), "node1:7000", &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1", Term: 2})
	if err != nil || resp.Term != 2 {
		t.Fatalf("via Resolve: %v, %v", resp, err)
	}
	if resolved.Load() == 0 {
		t.Fatal("Resolve not called")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := tr.RequestVote(ctxT(t), "node1:7000", &raftpb.RequestVoteRequest{GroupId: "g1", PeerId: "n1"}); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	if _, err := tr.Pipeline(ctxT(t), "node1:7000"); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Pipeline after Close: %v, want ErrClosed", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	err := Options{MaxMessageSize: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "-1") {
		t.Fatalf("Validate = %v, want an error naming -1", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("New with invalid options did not panic")
		}
	}()
	New(Options{KeepaliveTimeout: -time.Second})
}

func TestConcurrent(t *testing.T) {
	h := &fakeHandler{append: func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		go done(echoAppend(req), nil)
	}}
	groups := []string{"g1", "g2", "g3"}
	_, addr := serve(t, newRouter(t, h, "g1", "n1", "g2", "n1", "g3", "n1"))
	tr := newTransport(t, DefaultOptions())
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Go(func() {
			g := groups[w%len(groups)]
			for i := range 50 {
				resp, err := tr.AppendEntries(ctx, addr, &raftpb.AppendEntriesRequest{GroupId: g, PeerId: "n1", PrevLogIndex: uint64(i)})
				if err != nil || resp.LastLogIndex != uint64(i) {
					errs <- fmt.Errorf("worker %d call %d: %v, %v", w, i, resp, err)
					return
				}
			}
		})
	}
	for _, g := range groups {
		wg.Go(func() {
			p, err := tr.Pipeline(ctx, addr)
			if err != nil {
				errs <- err
				return
			}
			defer p.Close()
			const n = 500
			sendErr := make(chan error, 1)
			go func() {
				for i := range n {
					if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: g, PeerId: "n1", PrevLogIndex: uint64(i), Entries: entries(2, 16, uint64(i+1))}); err != nil {
						sendErr <- err
						return
					}
				}
				sendErr <- nil
			}()
			for i := range n {
				resp, err := p.Recv()
				if err != nil || resp.LastLogIndex != uint64(i+2) {
					errs <- fmt.Errorf("pipeline %s Recv %d: %v, %v", g, i, resp, err)
					p.Close()
					<-sendErr
					return
				}
			}
			if err := <-sendErr; err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
