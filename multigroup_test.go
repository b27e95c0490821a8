package graft_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/internal/testnode"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage/memory"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
)

// multiGroupProcess is one "process" of TestMultiGroup: a gRPC server with
// one Router for every group it hosts, and one Transport they share.
type multiGroupProcess struct {
	addr   string
	router *transport.Router
	server *grpctransport.Server
	trans  *grpctransport.Transport
	served chan error
}

// TestMultiGroup runs 4 groups of 3 nodes over 3 gRPC servers, one node of
// every group on each: every group elects its own leader, commits its own
// entries and never sees another group's, and a request for a group a
// server does not host gets transport.ErrUnknownGroup.
func TestMultiGroup(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		nProcs   = 3
		nGroups  = 4
		nEntries = 20
		wait     = 10 * time.Second
	)
	logger := testnode.Logger(t, slog.LevelInfo)
	start := time.Now()

	procs := make([]*multiGroupProcess, nProcs)
	var peers []graft.Peer
	for i := range procs {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := &multiGroupProcess{addr: lis.Addr().String(), router: transport.NewRouter(), served: make(chan error, 1)}
		p.server = grpctransport.NewServer(p.router)
		go func() { p.served <- p.server.Serve(lis) }()
		topts := grpctransport.DefaultOptions()
		topts.MaxReconnectDelay = 100 * time.Millisecond
		p.trans = grpctransport.New(topts)
		procs[i] = p
		peers = append(peers, graft.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: p.addr})
	}

	groups := make([]string, nGroups)
	nodes := make([][]*graft.Node, nGroups)       // [group][process]
	fsms := make([][]*testnode.Recorder, nGroups) // [group][process]
	defer func() {
		t0 := time.Now()
		var wg sync.WaitGroup
		for g := range nodes {
			for _, n := range nodes[g] {
				wg.Go(func() {
					if err := n.Shutdown(); err != nil {
						t.Errorf("%s/%s: shutdown: %v", n.GroupID(), n.ID(), err)
					}
				})
			}
		}
		wg.Wait()
		for i, p := range procs {
			p.server.Stop()
			if err := <-p.served; err != nil {
				t.Errorf("process %d: Serve: %v", i, err)
			}
			if err := p.trans.Close(); err != nil {
				t.Errorf("process %d: closing transport: %v", i, err)
			}
		}
		t.Logf("shut down in %v", time.Since(t0).Round(time.Millisecond))
	}()
	for g := range groups {
		groups[g] = fmt.Sprintf("g%d", g)
		for i, p := range procs {
			opts := graft.DefaultOptions()
			opts.GroupID = groups[g]
			opts.ID = peers[i].ID
			opts.InitialPeers = peers
			opts.ElectionTimeout = 300 * time.Millisecond
			opts.HeartbeatInterval = 30 * time.Millisecond
			opts.LogStorage = memory.NewLog()
			opts.MetaStorage = memory.NewMeta()
			opts.Transport = p.trans
			opts.Router = p.router
			fsm := &testnode.Recorder{}
			opts.StateMachine = fsm
			opts.Logger = logger
			n, err := graft.NewNode(opts)
			if err != nil {
				t.Fatalf("%s/%s: %v", groups[g], opts.ID, err)
			}
			nodes[g] = append(nodes[g], n)
			fsms[g] = append(fsms[g], fsm)
		}
	}

	leaderOf := func(g int) *graft.Node {
		for _, n := range nodes[g] {
			if n.IsLeader() {
				return n
			}
		}
		return nil
	}
	multiGroupWaitFor(t, wait, "every group to elect a leader", func() bool {
		for g := range groups {
			if leaderOf(g) == nil {
				return false
			}
		}
		return true
	})
	for g := range groups {
		l := leaderOf(g)
		t.Logf("%s: leader %s in term %d after %v", groups[g], l.ID(), l.Status().Term, time.Since(start).Round(time.Millisecond))
	}

	t.Run("UnknownGroup", func(t *testing.T) {
		tr := grpctransport.New(grpctransport.DefaultOptions())
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		addr := procs[0].addr
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, transport.ErrUnknownGroup) {
				t.Errorf("%s: got %v, want an error wrapping transport.ErrUnknownGroup", what, err)
			} else {
				t.Logf("%s: %v", what, err)
			}
		}
		_, err := tr.RequestVote(ctx, addr, &raftpb.RequestVoteRequest{GroupId: "g-unknown", ServerId: "n2", PeerId: "n1", Term: 1})
		check("RequestVote for an unknown group", err)
		_, err = tr.AppendEntries(ctx, addr, &raftpb.AppendEntriesRequest{GroupId: "g-unknown", ServerId: "n2", PeerId: "n1", Term: 1})
		check("AppendEntries for an unknown group", err)
		_, err = tr.TimeoutNow(ctx, addr, &raftpb.TimeoutNowRequest{GroupId: "g-unknown", ServerId: "n2", PeerId: "n1", Term: 1})
		check("TimeoutNow for an unknown group", err)
		// g0 is hosted there, but as n1 only.
		_, err = tr.AppendEntries(ctx, addr, &raftpb.AppendEntriesRequest{GroupId: "g0", ServerId: "n2", PeerId: "n2", Term: 1})
		check("AppendEntries for a known group's peer hosted elsewhere", err)

		p, err := tr.Pipeline(ctx, addr)
		if err != nil {
			t.Fatalf("Pipeline: %v", err)
		}
		defer p.Close()
		if err := p.Send(&raftpb.AppendEntriesRequest{GroupId: "g-unknown", ServerId: "n2", PeerId: "n1", Term: 1}); err != nil {
			check("Pipeline.Send for an unknown group", err)
		} else {
			_, err = p.Recv()
			check("Pipeline.Recv for an unknown group", err)
		}
	})

	// Two writers per group, all groups at once. A write that fails is
	// retried as a new command (attempt suffix), so no command can be
	// applied twice by a correct node even if the failed one committed.
	var mu sync.Mutex
	acked := make([]map[string]uint64, nGroups) // per group: command -> index
	entries := make([]map[string]bool, nGroups) // per group: entry ids acknowledged
	for g := range groups {
		acked[g], entries[g] = map[string]uint64{}, map[string]bool{}
	}
	var wg sync.WaitGroup
	for g := range groups {
		for w := range 2 {
			wg.Go(func() {
				for e := w; e < nEntries; e += 2 {
					entry := fmt.Sprintf("%s/e%02d", groups[g], e)
					deadline := time.Now().Add(wait)
					for attempt := 0; ; attempt++ {
						if time.Now().After(deadline) {
							t.Errorf("%s: not acknowledged within %v", entry, wait)
							return
						}
						l := leaderOf(g)
						if l == nil {
							time.Sleep(10 * time.Millisecond) // retry backoff
							continue
						}
						cmd := fmt.Sprintf("%s/a%d", entry, attempt)
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
						res, err := l.Apply(ctx, []byte(cmd))
						cancel()
						if err != nil {
							t.Logf("%s: Apply on %s/%s: %v (retrying)", cmd, groups[g], l.ID(), err)
							time.Sleep(10 * time.Millisecond) // retry backoff
							continue
						}
						mu.Lock()
						acked[g][cmd] = res.Index
						entries[g][entry] = true
						mu.Unlock()
						break
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("every write acknowledged after %v", time.Since(start).Round(time.Millisecond))

	multiGroupWaitFor(t, wait, "every group's state machines to converge", func() bool {
		for g := range groups {
			first := fsms[g][0].Entries()
			for _, f := range fsms[g][1:] {
				if !slices.Equal(f.Entries(), first) {
					return false
				}
			}
			have := map[string]bool{}
			for _, e := range first {
				have[e.Cmd] = true
			}
			for cmd := range acked[g] {
				if !have[cmd] {
					return false
				}
			}
		}
		return true
	})

	t.Logf("state machines converged after %v", time.Since(start).Round(time.Millisecond))
	for g, group := range groups {
		if n := len(entries[g]); n != nEntries {
			t.Errorf("%s: %d entries acknowledged, want %d", group, n, nEntries)
		}
		ents := fsms[g][0].Entries()
		seen := map[string]uint64{}
		for _, e := range ents {
			if !strings.HasPrefix(e.Cmd, group+"/") {
				t.Errorf("%s applied %q at index %d: another group's entry", group, e.Cmd, e.Index)
			}
			if prev, ok := seen[e.Cmd]; ok {
				t.Errorf("%s applied %q twice, at indexes %d and %d", group, e.Cmd, prev, e.Index)
			}
			seen[e.Cmd] = e.Index
		}
		for cmd, idx := range acked[g] {
			if seen[cmd] != idx {
				t.Errorf("%s: %q acknowledged at index %d, applied at %d", group, cmd, idx, seen[cmd])
			}
		}
		for i, f := range fsms[g] {
			if err := f.Err(); err != nil {
				t.Errorf("%s/%s: %v", group, peers[i].ID, err)
			}
		}
		t.Logf("%s: every node applied the same %d commands", group, len(ents))
	}
}

// multiGroupWaitFor polls cond every 10ms until it holds, and fails the
// test if it does not within timeout.
func multiGroupWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}
