package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// handler is a transport.Handler and FileHandler that records what it
// sees. Function fields override the default echo answers.
type handler struct {
	name    string
	vote    func(context.Context, *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error)
	append  func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error))
	getFile func(context.Context, *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error)

	calls   atomic.Int64
	mu      sync.Mutex
	appends []uint64 // PrevLogIndex of each AppendEntries, in arrival order
}

func (h *handler) HandleRequestVote(ctx context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	h.calls.Add(1)
	if h.vote != nil {
		return h.vote(ctx, req)
	}
	return &raftpb.RequestVoteResponse{Term: req.Term, Granted: true, Reason: h.name}, nil
}

func (h *handler) HandleAppendEntries(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
	h.calls.Add(1)
	h.mu.Lock()
	h.appends = append(h.appends, req.PrevLogIndex)
	h.mu.Unlock()
	if h.append != nil {
		h.append(req, done)
		return
	}
	done(echo(req), nil)
}

func echo(req *raftpb.AppendEntriesRequest) *raftpb.AppendEntriesResponse {
	return &raftpb.AppendEntriesResponse{Term: req.Term, Success: true, LastLogIndex: req.PrevLogIndex + uint64(len(req.Entries))}
}

func (h *handler) arrivals() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.appends)
}

func (h *handler) HandleInstallSnapshot(_ context.Context, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error) {
	h.calls.Add(1)
	return &raftpb.InstallSnapshotResponse{Term: req.Term, Success: true}, nil
}

func (h *handler) HandleReadIndex(_ context.Context, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error) {
	return &raftpb.ReadIndexResponse{Success: true, Index: 7}, nil
}

func (h *handler) HandleTimeoutNow(_ context.Context, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error) {
	h.calls.Add(1)
	return &raftpb.TimeoutNowResponse{Term: req.Term, Success: true}, nil
}

func (h *handler) HandleGetFile(ctx context.Context, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	if h.getFile != nil {
		return h.getFile(ctx, req)
	}
	return &raftpb.GetFileResponse{Eof: true, ReadSize: req.Count, Data: bytes.Repeat([]byte{'x'}, int(req.Count))}, nil
}

// cluster is a Network with one process per address, each hosting group
// "g" as a peer named after its address.
type cluster struct {
	net *Network
	h   map[string]*handler
	tr  map[string]*Transport
}

func newCluster(t *testing.T, seed int64, addrs ...string) *cluster {
	t.Helper()
	c := &cluster{net: NewNetwork(seed), h: map[string]*handler{}, tr: map[string]*Transport{}}
	t.Cleanup(func() {
		for _, tr := range c.tr {
			tr.Close()
		}
		if err := c.net.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, a := range addrs {
		c.listen(t, a, &handler{name: a})
	}
	return c
}

func (c *cluster) listen(t *testing.T, addr string, h *handler) {
	t.Helper()
	r := transport.NewRouter()
	if err := r.Register("g", addr, h); err != nil {
		t.Fatal(err)
	}
	r.SetFileHandler(h)
	if _, err := c.net.Listen(addr, r); err != nil {
		t.Fatal(err)
	}
	c.h[addr] = h
	if c.tr[addr] == nil {
		c.tr[addr] = c.net.Transport(addr)
	}
}

func (c *cluster) vote(ctx context.Context, from, to string) (*raftpb.RequestVoteResponse, error) {
	return c.tr[from].RequestVote(ctx, to, &raftpb.RequestVoteRequest{GroupId: "g", ServerId: from, PeerId: to, Term: 1})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, failing the test after 5s.
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

func mustFaults(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func appendReq(to string, prev uint64) *raftpb.AppendEntriesRequest {
	return &raftpb.AppendEntriesRequest{GroupId: "g", PeerId: to, Term: 1, PrevLogIndex: prev,
		Entries: []*raftpb.Entry{{Term: 1, Index: prev + 1, Data: []byte("e")}}}
}

func TestRoundTrip(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	ctx := ctxT(t)
	tr := c.tr["n1"]

	if resp, err := c.vote(ctx, "n1", "n2"); err != nil || !resp.Granted || resp.Reason != "n2" {
		t.Fatalf("RequestVote = %v, %v", resp, err)
	}
	if resp, err := tr.AppendEntries(ctx, "n2", appendReq("n2", 4)); err != nil || resp.LastLogIndex != 5 {
		t.Fatalf("AppendEntries = %v, %v", resp, err)
	}
	if resp, err := tr.InstallSnapshot(ctx, "n2", &raftpb.InstallSnapshotRequest{GroupId: "g", PeerId: "n2", Term: 3}); err != nil || !resp.Success || resp.Term != 3 {
		t.Fatalf("InstallSnapshot = %v, %v", resp, err)
	}
	if resp, err := tr.TimeoutNow(ctx, "n2", &raftpb.TimeoutNowRequest{GroupId: "g", PeerId: "n2", Term: 4}); err != nil || !resp.Success || resp.Term != 4 {
		t.Fatalf("TimeoutNow = %v, %v", resp, err)
	}
	var hooked atomic.Int64
	c.net.SetFileHook(func(from, to string, n int) {
		if from == "n1" && to == "n2" {
			hooked.Add(int64(n))
		}
	})
	if resp, err := tr.GetFile(ctx, "n2", &raftpb.GetFileRequest{ReaderId: 1, Count: 1000}); err != nil || len(resp.Data) != 1000 {
		t.Fatalf("GetFile = %d bytes, %v", len(resp.GetData()), err)
	}
	if hooked.Load() != 1000 {
		t.Errorf("file hook counted %d bytes, want 1000", hooked.Load())
	}
	if got := c.net.LinkStats("n2", "n1").FileBytes; got != 1000 {
		t.Errorf("FileBytes on n2->n1 = %d, want 1000", got)
	}

	p, err := tr.Pipeline(ctx, "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 20 {
		if err := p.Send(appendReq("n2", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if resp, err := p.Recv(); err != nil || resp.LastLogIndex != uint64(i+1) {
			t.Fatalf("Recv %d = %v, %v", i, resp, err)
		}
	}
	st := c.net.LinkStats("n1", "n2")
	if st.Sent != 25 || st.Delivered != 25 || st.Dropped != 0 {
		t.Errorf("n1->n2 stats = %+v, want 25 sent and delivered", st)
	}
	if back := c.net.Stats()[Link{"n2", "n1"}]; back.Delivered != 25 {
		t.Errorf("n2->n1 stats = %+v, want 25 delivered", back)
	}
}

func TestErrors(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	ctx := ctxT(t)
	tr := c.tr["n1"]
	_, err := tr.RequestVote(ctx, "n2", &raftpb.RequestVoteRequest{GroupId: "other", PeerId: "n2"})
	if !errors.Is(err, transport.ErrUnknownGroup) || !strings.Contains(err.Error(), `"other"`) {
		t.Errorf("unknown group: %v", err)
	}
	if _, err := tr.AppendEntries(ctx, "n2", &raftpb.AppendEntriesRequest{PeerId: "n2"}); err == nil || errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("no group id: %v", err)
	}
	if _, err := c.vote(ctx, "n1", "n9"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("nobody listening: %v", err)
	}
	if _, err := tr.Pipeline(ctx, "n9"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("pipeline, nobody listening: %v", err)
	}
	c.h["n2"].getFile = func(context.Context, *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
		return nil, status.Error(codes.PermissionDenied, "not yours")
	}
	if _, err := tr.GetFile(ctx, "n2", &raftpb.GetFileRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("file handler status: %v (code %v)", err, status.Code(err))
	}
	c.h["n2"].vote = func(context.Context, *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
		return nil, nil
	}
	if _, err := c.vote(ctx, "n1", "n2"); !errors.Is(err, errNoResponse) {
		t.Errorf("nil response: %v", err)
	}

	p, err := tr.Pipeline(ctx, "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Send(appendReq("n2", 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "other", PeerId: "n2"}); err == nil {
		t.Error("Send for another group succeeded")
	}
	if _, err := p.Recv(); err != nil {
		t.Fatal(err)
	}

	p2, err := tr.Pipeline(ctx, "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if err := p2.Send(&raftpb.AppendEntriesRequest{GroupId: "other", PeerId: "n2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Recv(); !errors.Is(err, transport.ErrUnknownGroup) {
		t.Errorf("pipeline to unknown group: %v", err)
	}
}

func TestMessagesAreCopied(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	kept := &raftpb.AppendEntriesResponse{Term: 9}
	var got *raftpb.AppendEntriesRequest
	c.h["n2"].append = func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		got = req
		req.Entries[0].Data[0] = 'Z' // the receiver scribbles on its copy
		done(kept, nil)
	}
	req := appendReq("n2", 0)
	resp, err := c.tr["n1"].AppendEntries(ctxT(t), "n2", req)
	if err != nil {
		t.Fatal(err)
	}
	if got == req || req.Entries[0].Data[0] != 'e' {
		t.Error("the handler aliased the caller's request")
	}
	resp.Term = 1
	if kept.Term != 9 {
		t.Error("the caller aliased the handler's response")
	}

	// A request modified after Send is delivered as it was sent.
	mustFaults(t, c.net.SetFaults(Faults{MinDelay: 20 * time.Millisecond, MaxDelay: 20 * time.Millisecond}))
	c.h["n2"].append = nil
	p, err := c.tr["n1"].Pipeline(ctxT(t), "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	req = appendReq("n2", 7)
	if err := p.Send(req); err != nil {
		t.Fatal(err)
	}
	req.PrevLogIndex = 100
	if resp, err := p.Recv(); err != nil || resp.LastLogIndex != 8 {
		t.Fatalf("Recv = %v, %v", resp, err)
	}
}

func TestHandlersRunConcurrently(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	first := make(chan struct{})
	var n atomic.Int32
	c.h["n2"].vote = func(ctx context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
		if n.Add(1) == 1 {
			select { // blocks until the second call runs beside it
			case <-first:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		} else {
			close(first)
		}
		return &raftpb.RequestVoteResponse{Granted: true}, nil
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := c.vote(ctxT(t), "n1", "n2"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestDisconnect(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2", "n3")
	ctx := ctxT(t)
	c.net.Disconnect("n2")
	for _, l := range []Link{{"n1", "n2"}, {"n2", "n1"}, {"n3", "n2"}} {
		if _, err := c.vote(ctx, l.From, l.To); !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("%v while n2 disconnected: %v", l, err)
		}
	}
	if _, err := c.vote(ctx, "n1", "n3"); err != nil {
		t.Errorf("n1->n3: %v", err)
	}
	if c.h["n2"].calls.Load() != 0 {
		t.Error("a disconnected process handled a request")
	}
	if _, err := c.tr["n1"].Pipeline(ctx, "n2"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("pipeline to a disconnected process: %v", err)
	}
	if st := c.net.LinkStats("n1", "n2"); st.Dropped != 1 || st.Sent != 1 {
		t.Errorf("n1->n2 stats = %+v, want 1 sent and dropped", st)
	}
	c.net.Reconnect("n2")
	if _, err := c.vote(ctx, "n1", "n2"); err != nil {
		t.Errorf("after Reconnect: %v", err)
	}
}

func TestPartition(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2", "n3", "n4")
	ctx := ctxT(t)
	c.net.Partition([]string{"n1"}, []string{"n2", "n3"})
	cases := []struct {
		from, to string
		ok       bool
	}{
		{"n1", "n2", false}, {"n2", "n1", false}, {"n2", "n3", true}, {"n3", "n2", true},
		{"n4", "n1", false}, {"n4", "n3", false}, {"n1", "n1", true},
	}
	for _, tc := range cases {
		_, err := c.vote(ctx, tc.from, tc.to)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, transport.ErrUnreachable)) {
			t.Errorf("%s->%s under partition: err = %v, want ok=%v", tc.from, tc.to, err, tc.ok)
		}
	}
	c.net.Heal()
	for _, tc := range cases {
		if _, err := c.vote(ctx, tc.from, tc.to); err != nil {
			t.Errorf("%s->%s after Heal: %v", tc.from, tc.to, err)
		}
	}
}

func TestCutOneWay(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	ctx := ctxT(t)
	c.net.Cut("n1", "n2")
	if _, err := c.vote(ctx, "n1", "n2"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("request on a cut link: %v", err)
	}
	if c.h["n2"].calls.Load() != 0 {
		t.Error("a request crossed a cut link")
	}
	c.net.Restore("n1", "n2")

	// Cutting the way back loses the response: the handler ran.
	c.net.Cut("n2", "n1")
	if _, err := c.vote(ctx, "n1", "n2"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("response on a cut link: %v", err)
	}
	if c.h["n2"].calls.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", c.h["n2"].calls.Load())
	}
	if _, err := c.vote(ctx, "n2", "n1"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("n2->n1 on a cut link: %v", err)
	}
	c.net.Restore("n2", "n1")
	if _, err := c.vote(ctx, "n1", "n2"); err != nil {
		t.Errorf("after Restore: %v", err)
	}
}

func TestDrop(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	mustFaults(t, c.net.SetLinkFaults("n1", "n2", Faults{DropRate: 1, LossDelay: 30 * time.Millisecond}))
	start := time.Now()
	if _, err := c.vote(ctxT(t), "n1", "n2"); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("dropped request: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("a lost request failed after %v, before LossDelay", d)
	}
	// The caller's context bounds the wait.
	mustFaults(t, c.net.SetLinkFaults("n1", "n2", Faults{DropRate: 1, LossDelay: time.Hour}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.vote(ctx, "n1", "n2")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("dropped request past the deadline: %v", err)
	}
	// Dropped responses: the handler ran.
	c.net.ClearLinkFaults("n1", "n2")
	mustFaults(t, c.net.SetLinkFaults("n2", "n1", Faults{DropRate: 1}))
	if _, err := c.vote(ctxT(t), "n1", "n2"); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("dropped response: %v", err)
	}
	if c.h["n2"].calls.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", c.h["n2"].calls.Load())
	}

	// Half the messages: some calls fail, some succeed.
	c.net.HealAll()
	mustFaults(t, c.net.SetFaults(Faults{DropRate: 0.5, LossDelay: 100 * time.Microsecond}))
	var ok, failed int
	for range 100 {
		if _, err := c.vote(ctxT(t), "n1", "n2"); err == nil {
			ok++
		} else if errors.Is(err, transport.ErrUnreachable) {
			failed++
		} else {
			t.Fatal(err)
		}
	}
	if ok == 0 || failed == 0 {
		t.Errorf("DropRate 0.5: %d ok, %d failed", ok, failed)
	}
	if st := c.net.LinkStats("n1", "n2"); st.Dropped == 0 || st.Delivered == 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestDeterministic(t *testing.T) {
	run := func(seed int64) []bool {
		c := newCluster(t, seed, "n1", "n2")
		mustFaults(t, c.net.SetFaults(Faults{DropRate: 0.3, LossDelay: 100 * time.Microsecond}))
		var out []bool
		for range 50 {
			_, err := c.vote(ctxT(t), "n1", "n2")
			out = append(out, err == nil)
		}
		return out
	}
	a, b := run(42), run(42)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different faults:\n%v\n%v", a, b)
	}
	if slices.Equal(a, run(43)) {
		t.Errorf("seeds 42 and 43 drew the same faults")
	}
}

func TestDelay(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	mustFaults(t, c.net.SetFaults(Faults{MinDelay: 15 * time.Millisecond, MaxDelay: 20 * time.Millisecond}))
	start := time.Now()
	if _, err := c.vote(ctxT(t), "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("round trip took %v, want at least 2 x MinDelay", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := c.vote(ctx, "n1", "n2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline shorter than the delay: %v", err)
	}
}

func TestDuplicate(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	mustFaults(t, c.net.SetFaults(Faults{DuplicateRate: 1, ReorderDelay: time.Millisecond}))
	const n = 10
	for range n {
		if _, err := c.vote(ctxT(t), "n1", "n2"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "duplicates to arrive", func() bool { return c.h["n2"].calls.Load() == 2*n })
	if st := c.net.LinkStats("n1", "n2"); st.Duplicated != n {
		t.Errorf("stats = %+v, want %d duplicated", st, n)
	}
}

func TestReorderUnary(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	var mu sync.Mutex
	var order []uint64
	c.h["n2"].vote = func(_ context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
		mu.Lock()
		order = append(order, req.Term)
		mu.Unlock()
		return &raftpb.RequestVoteResponse{Term: req.Term}, nil
	}
	// The first request is held for half to all of ReorderDelay from its
	// send; the second must be sent and handled within that window. 50ms
	// (a ReorderDelay of 100ms) is a scheduling delay on a loaded machine;
	// a second or more keeps the point: a held request is overtaken by a
	// later one.
	mustFaults(t, c.net.SetFaults(Faults{ReorderRate: 1, ReorderDelay: 2 * time.Second}))
	late := make(chan error, 1)
	go func() {
		_, err := c.tr["n1"].RequestVote(ctxT(t), "n2", &raftpb.RequestVoteRequest{GroupId: "g", PeerId: "n2", Term: 1})
		late <- err
	}()
	waitFor(t, "the first request to be sent", func() bool { return c.net.LinkStats("n1", "n2").Reordered == 1 })
	mustFaults(t, c.net.SetFaults(Faults{}))
	if _, err := c.tr["n1"].RequestVote(ctxT(t), "n2", &raftpb.RequestVoteRequest{GroupId: "g", PeerId: "n2", Term: 2}); err != nil {
		t.Fatal(err)
	}
	if err := <-late; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []uint64{2, 1}) {
		t.Errorf("arrival order %v, want [2 1]", order)
	}
}

func TestUnlisten(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	started := make(chan struct{})
	cancelled := make(chan struct{})
	c.h["n2"].vote = func(ctx context.Context, _ *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}
	c.h["n2"].append = func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error)) {}
	p, err := c.tr["n1"].Pipeline(ctxT(t), "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Send(appendReq("n2", 0)); err != nil {
		t.Fatal(err)
	}
	voteErr := make(chan error, 1)
	go func() {
		_, err := c.vote(context.Background(), "n1", "n2")
		voteErr <- err
	}()
	<-started
	c.net.Unlisten("n2")
	if err := <-voteErr; !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("call in progress to a crashed process: %v", err)
	}
	<-cancelled
	if _, err := p.Recv(); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("pipeline to a crashed process: %v", err)
	}
	if err := p.Send(appendReq("n2", 1)); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("Send to a crashed process: %v", err)
	}
	if _, err := c.vote(ctxT(t), "n1", "n2"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("call to a crashed process: %v", err)
	}
	// Restart.
	c.listen(t, "n2", &handler{name: "n2 again"})
	if resp, err := c.vote(ctxT(t), "n1", "n2"); err != nil || resp.Reason != "n2 again" {
		t.Errorf("after restart: %v, %v", resp, err)
	}
	if _, err := c.net.Listen("n2", transport.NewRouter()); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("second Listen: %v", err)
	}
}

func TestPipelineOrderedResponses(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	const n = 50
	var mu sync.Mutex
	var dones []func()
	c.h["n2"].append = func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		mu.Lock()
		dones = append(dones, func() { done(echo(req), nil) })
		mu.Unlock()
	}
	p, err := c.tr["n1"].Pipeline(ctxT(t), "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range n {
		if err := p.Send(appendReq("n2", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every request to arrive", func() bool { mu.Lock(); defer mu.Unlock(); return len(dones) == n })
	var wg sync.WaitGroup
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(n) {
		wg.Go(dones[i])
	}
	wg.Wait()
	for i := range n {
		if resp, err := p.Recv(); err != nil || resp.LastLogIndex != uint64(i+1) {
			t.Fatalf("Recv %d = %v, %v", i, resp, err)
		}
	}
}

func TestPipelineLossBreaksStream(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*Network)
	}{
		{"drop request", func(n *Network) { mustFaults(t, n.SetLinkFaults("n1", "n2", Faults{DropRate: 1})) }},
		{"drop response", func(n *Network) { mustFaults(t, n.SetLinkFaults("n2", "n1", Faults{DropRate: 1})) }},
		{"cut request", func(n *Network) { n.Cut("n1", "n2") }},
		{"cut response", func(n *Network) { n.Cut("n2", "n1") }},
		{"partition", func(n *Network) { n.Partition([]string{"n1"}, []string{"n2"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1, "n1", "n2")
			p, err := c.tr["n1"].Pipeline(ctxT(t), "n2")
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for i := range 3 {
				if err := p.Send(appendReq("n2", uint64(i))); err != nil {
					t.Fatal(err)
				}
				if _, err := p.Recv(); err != nil {
					t.Fatal(err)
				}
			}
			tc.fault(c.net)
			if err := p.Send(appendReq("n2", 3)); err != nil {
				t.Fatalf("Send of the lost message: %v", err)
			}
			if _, err := p.Recv(); !errors.Is(err, transport.ErrUnreachable) {
				t.Fatalf("Recv after a loss: %v", err)
			}
			if err := p.Send(appendReq("n2", 4)); !errors.Is(err, transport.ErrUnreachable) {
				t.Fatalf("Send on a broken stream: %v", err)
			}
			c.net.HealAll()
			if got := c.h["n2"].arrivals(); len(got) > 4 {
				t.Errorf("handler saw %v after the break", got)
			}
		})
	}
}

func TestPipelineReorderAndDuplicate(t *testing.T) {
	c := newCluster(t, 7, "n1", "n2")
	// Answer from other goroutines, in whatever order, as a follower's
	// log writer might not.
	c.h["n2"].append = func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		go done(echo(req), nil)
	}
	mustFaults(t, c.net.SetFaults(Faults{
		ReorderRate: 0.2, DuplicateRate: 0.2, ReorderDelay: 4 * time.Millisecond,
		MaxDelay: time.Millisecond,
	}))
	p, err := c.tr["n1"].Pipeline(ctxT(t), "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 400
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			if err := p.Send(appendReq("n2", uint64(i))); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	for i := range n {
		resp, err := p.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.LastLogIndex != uint64(i+1) {
			t.Fatalf("response %d answers request %d", i, resp.LastLogIndex-1)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	st := c.net.LinkStats("n1", "n2")
	waitFor(t, "duplicates to arrive", func() bool {
		return len(c.h["n2"].arrivals()) == n+int(st.Duplicated)
	})
	got := c.h["n2"].arrivals()
	if slices.IsSorted(got) {
		t.Error("the handler saw requests in order despite reordering")
	}
	if st.Reordered == 0 || st.Duplicated == 0 {
		t.Errorf("stats = %+v, want some reordered and duplicated", st)
	}
	seen := map[uint64]int{}
	for _, a := range got {
		seen[a]++
	}
	if len(seen) != n {
		t.Errorf("handler saw %d distinct requests, want %d", len(seen), n)
	}
}

func TestPipelineStraysOutliveStream(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	mustFaults(t, c.net.SetFaults(Faults{ReorderRate: 1, ReorderDelay: 30 * time.Millisecond}))
	p, err := c.tr["n1"].Pipeline(ctxT(t), "n2")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(appendReq("n2", 5)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Recv(); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
	if err := p.Send(appendReq("n2", 6)); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	waitFor(t, "the held-back request to arrive", func() bool { return len(c.h["n2"].arrivals()) == 1 })
}

func TestPipelineHandlerError(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	c.h["n2"].append = func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
		if req.PrevLogIndex == 2 {
			done(nil, errors.New("disk on fire"))
			return
		}
		done(echo(req), nil)
	}
	mustFaults(t, c.net.SetFaults(Faults{MaxDelay: 2 * time.Millisecond}))
	p, err := c.tr["n1"].Pipeline(ctxT(t), "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 5 {
		_ = p.Send(appendReq("n2", uint64(i))) // may fail once the server ended the stream
	}
	for i := range 2 {
		if resp, err := p.Recv(); err != nil || resp.LastLogIndex != uint64(i+1) {
			t.Fatalf("Recv %d = %v, %v", i, resp, err)
		}
	}
	if _, err := p.Recv(); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Recv at the failed request: %v", err)
	}
}

// A handler error at a request that overtook earlier ones still lets the
// earlier ones be answered first.
func TestPipelineHandlerErrorReordered(t *testing.T) {
	for seed := range int64(8) {
		c := newCluster(t, seed, "n1", "n2")
		const failAt = 30
		c.h["n2"].append = func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
			if req.PrevLogIndex >= failAt {
				done(nil, errors.New("disk on fire"))
				return
			}
			done(echo(req), nil)
		}
		mustFaults(t, c.net.SetFaults(Faults{ReorderRate: 0.3, ReorderDelay: 2 * time.Millisecond, MaxDelay: 6 * time.Millisecond}))
		// A bound on the stream, not on how fast it goes: the deadline
		// ends the pipeline, and a loaded machine can take a second.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p, err := c.tr["n1"].Pipeline(ctx, "n2")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 * failAt {
			if err := p.Send(appendReq("n2", uint64(i))); err != nil {
				break // the server ended the stream
			}
		}
		for i := range failAt {
			if resp, err := p.Recv(); err != nil || resp.LastLogIndex != uint64(i+1) {
				t.Fatalf("seed %d: Recv %d = %v, %v", seed, i, resp, err)
			}
		}
		if _, err := p.Recv(); err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("seed %d: Recv at the failed request: %v", seed, err)
		}
		p.Close()
		cancel()
	}
}

func TestPipelineWindowAndCancel(t *testing.T) {
	c := newCluster(t, 1, "n1", "n2")
	c.h["n2"].append = func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error)) {}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := c.tr["n1"].Pipeline(ctx, "n2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range MaxPipelineOutstanding {
		if err := p.Send(appendReq("n2", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	blocked := make(chan error, 1)
	go func() { blocked <- p.Send(appendReq("n2", MaxPipelineOutstanding)) }()
	recvErr := make(chan error, 1)
	go func() {
		_, err := p.Recv()
		recvErr <- err
	}()
	cancel()
	if err := <-blocked; !errors.Is(err, context.Canceled) {
		t.Errorf("Send blocked on a full window, then cancelled: %v", err)
	}
	if err := <-recvErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Recv, cancelled: %v", err)
	}
}

func TestTransportAndNetworkClose(t *testing.T) {
	defer leakcheck.VerifyNone(t)
	net := NewNetwork(1)
	h := &handler{name: "n2"}
	block := make(chan struct{})
	h.vote = func(ctx context.Context, _ *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
		close(block)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	h.append = func(*raftpb.AppendEntriesRequest, func(*raftpb.AppendEntriesResponse, error)) {}
	r := transport.NewRouter()
	if err := r.Register("g", "n2", h); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Listen("n2", r); err != nil {
		t.Fatal(err)
	}
	tr := net.Transport("n1")

	// Transport.Close fails its own calls.
	p, err := tr.Pipeline(context.Background(), "n2")
	if err != nil {
		t.Fatal(err)
	}
	voteErr := make(chan error, 1)
	go func() {
		_, err := tr.RequestVote(context.Background(), "n2", &raftpb.RequestVoteRequest{GroupId: "g", PeerId: "n2"})
		voteErr <- err
	}()
	<-block
	tr.Close()
	if err := <-voteErr; !errors.Is(err, transport.ErrClosed) {
		t.Errorf("call in progress at Transport.Close: %v", err)
	}
	if _, err := p.Recv(); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("pipeline at Transport.Close: %v", err)
	}
	if _, err := tr.RequestVote(context.Background(), "n2", &raftpb.RequestVoteRequest{GroupId: "g", PeerId: "n2"}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("call after Transport.Close: %v", err)
	}

	// Network.Close fails everything and cancels the handler still
	// blocked from the first call.
	tr2 := net.Transport("n3")
	p2, err := tr2.Pipeline(context.Background(), "n2")
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Send(&raftpb.AppendEntriesRequest{GroupId: "g", PeerId: "n2"}); err != nil {
		t.Fatal(err)
	}
	if err := net.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Recv(); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("pipeline at Network.Close: %v", err)
	}
	if _, err := tr2.TimeoutNow(context.Background(), "n2", &raftpb.TimeoutNowRequest{GroupId: "g", PeerId: "n2"}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("call after Network.Close: %v", err)
	}
	if _, err := net.Listen("n4", r); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Listen after Close: %v", err)
	}
}

func TestFaultsValidate(t *testing.T) {
	for _, tc := range []struct {
		f    Faults
		want string
	}{
		{Faults{DropRate: 1.5}, "DropRate 1.5"},
		{Faults{ReorderRate: -0.1}, "ReorderRate -0.1"},
		{Faults{MinDelay: time.Second}, "MinDelay 1s exceeds MaxDelay 0s"},
		{Faults{LossDelay: -time.Second}, "LossDelay -1s"},
	} {
		err := tc.f.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.f, err, tc.want)
		}
	}
	n := NewNetwork(1)
	defer n.Close()
	if err := n.SetFaults(Faults{DuplicateRate: 2}); err == nil {
		t.Error("SetFaults accepted an invalid rate")
	}
}

// TestChaos runs unary calls and pipelines among three processes with
// every fault on, changing partitions as it goes, and checks that every
// call ends, every pipeline answers in order or breaks, and Close leaves
// no goroutine behind.
func TestChaos(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	addrs := []string{"n1", "n2", "n3"}
	c := newCluster(t, seed, addrs...)
	for _, h := range c.h {
		h.append = func(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
			go done(echo(req), nil)
		}
	}
	mustFaults(t, c.net.SetFaults(Faults{
		DropRate: 0.02, DuplicateRate: 0.05, ReorderRate: 0.05, ReorderDelay: 3 * time.Millisecond,
		MaxDelay: time.Millisecond, LossDelay: time.Millisecond,
	}))
	// Run for 300ms and at least 3000 messages (a loaded machine is
	// slow), or until a 10s backstop.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var sent uint64
			for _, s := range c.net.Stats() {
				sent += s.Sent
			}
			if sent >= 3000 && time.Since(start) >= 300*time.Millisecond {
				cancel()
				return
			}
		}
	})
	errs := make(chan error, 100)
	for _, from := range addrs {
		for _, to := range addrs {
			if from == to {
				continue
			}
			wg.Go(func() { // unary traffic
				for ctx.Err() == nil {
					cctx, ccancel := context.WithTimeout(ctx, 20*time.Millisecond)
					_, err := c.vote(cctx, from, to)
					ccancel()
					if err != nil && !errors.Is(err, transport.ErrUnreachable) && ctx.Err() == nil {
						errs <- fmt.Errorf("%s->%s: %w", from, to, err)
						return
					}
				}
			})
			wg.Go(func() { // pipelines, reopened when they break
				for ctx.Err() == nil {
					if err := chaosPipeline(ctx, c.tr[from], to); err != nil {
						errs <- fmt.Errorf("pipeline %s->%s: %w", from, to, err)
						return
					}
				}
			})
		}
	}
	wg.Go(func() { // partitions come and go
		rng := rand.New(rand.NewPCG(uint64(seed), 0))
		for ctx.Err() == nil {
			i := rng.IntN(len(addrs))
			c.net.Partition([]string{addrs[i]})
			time.Sleep(5 * time.Millisecond) // the fault's duration, not synchronisation
			c.net.Heal()
			time.Sleep(5 * time.Millisecond)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := c.net.Stats()
	var total LinkStats
	for _, s := range st {
		total.Sent += s.Sent
		total.Delivered += s.Delivered
		total.Dropped += s.Dropped
		total.Duplicated += s.Duplicated
		total.Reordered += s.Reordered
	}
	t.Logf("totals: %+v", total)
	if total.Dropped == 0 || total.Duplicated == 0 || total.Reordered == 0 {
		t.Errorf("faults did not fire: %+v", total)
	}
}

// chaosPipeline sends on one pipeline until it breaks or ctx ends, and
// checks responses match requests in order.
func chaosPipeline(ctx context.Context, tr *Transport, to string) error {
	p, err := tr.Pipeline(ctx, to)
	if err != nil {
		if errors.Is(err, transport.ErrUnreachable) || ctx.Err() != nil {
			// Back off before reconnecting, as a replicator would.
			select {
			case <-ctx.Done():
			case <-time.After(time.Millisecond):
			}
			return nil
		}
		return err
	}
	defer p.Close()
	sent := make(chan uint64, MaxPipelineOutstanding)
	go func() {
		defer close(sent)
		for i := uint64(0); ; i++ {
			if err := p.Send(appendReq(to, i)); err != nil {
				return
			}
			sent <- i
		}
	}()
	for want := range sent {
		resp, err := p.Recv()
		if err != nil {
			p.Close()
			for range sent {
			}
			if errors.Is(err, transport.ErrUnreachable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			return err
		}
		if resp.LastLogIndex != want+1 {
			p.Close()
			for range sent {
			}
			return fmt.Errorf("response for request %d answers request %d", want, resp.LastLogIndex-1)
		}
	}
	return nil
}
