package graft_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/internal/certgen"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/rafttest"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/memory"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
	memtransport "github.com/graft-raft/graft/transport/memory"
)

// The malformed-RPC tests drive a follower "sf" whose leader "sl" is the
// test itself, and compare the follower's durable state (term, vote, log
// and snapshot) before and after each request.
const (
	secFollower = "sf:7000"
	secLeader   = "sl:7000"
	secGroup    = "sec"
)

type secFollowerFixture struct {
	t     *testing.T
	node  *graft.Node
	log   *memory.Log
	meta  *memory.Meta
	snaps *snapshot.Storage
	term  uint64 // the leader's term
}

func newSecFollower(t *testing.T) *secFollowerFixture {
	t.Helper()
	net := memtransport.NewNetwork(1)
	t.Cleanup(func() { net.Close() })
	router := transport.NewRouter()
	if _, err := net.Listen(secFollower, router); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(filepath.Join(t.TempDir(), "snap"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fx := &secFollowerFixture{t: t, log: memory.NewLog(), meta: memory.NewMeta(), snaps: snaps, term: 2}
	o := graft.DefaultOptions()
	o.GroupID, o.ID = secGroup, "sf"
	o.InitialPeers = []graft.Peer{{ID: "sf", Addr: secFollower}, {ID: "sl", Addr: secLeader}}
	o.ElectionTimeout, o.HeartbeatInterval = time.Minute, time.Second // the test leads; sf never campaigns
	o.LogStorage, o.MetaStorage, o.Snapshots = fx.log, fx.meta, snaps
	o.Transport = net.Transport(secFollower)
	o.Router = router
	o.StateMachine = rafttest.NewFSM("sf", rafttest.NewChecker())
	if fx.node, err = graft.NewNode(o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.node.Shutdown() })
	// Lead it at term 2 with three entries.
	last := fx.log.LastIndex()
	prevTerm := fx.termAt(last)
	resp, err := fx.appendEntries(&raftpb.AppendEntriesRequest{
		GroupId: secGroup, ServerId: "sl", PeerId: "sf", Term: fx.term, PrevLogIndex: last, PrevLogTerm: prevTerm,
		Entries: []*raftpb.Entry{fx.entry(last+1, 2), fx.entry(last+2, 2), fx.entry(last+3, 2)}, CommittedIndex: last + 3,
	})
	if err != nil || !resp.Success {
		t.Fatalf("a valid AppendEntries: %v, %v", resp, err)
	}
	return fx
}

func (fx *secFollowerFixture) termAt(i uint64) uint64 {
	if i == 0 {
		return 0
	}
	term, err := fx.log.Term(i)
	if err != nil {
		fx.t.Fatal(err)
	}
	return term
}

func (fx *secFollowerFixture) entry(index, term uint64) *raftpb.Entry {
	return &raftpb.Entry{Index: index, Term: term, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL, Data: []byte(fmt.Sprint("e", index))}
}

func (fx *secFollowerFixture) appendEntries(req *raftpb.AppendEntriesRequest) (*raftpb.AppendEntriesResponse, error) {
	type result struct {
		resp *raftpb.AppendEntriesResponse
		err  error
	}
	ch := make(chan result, 1)
	fx.node.HandleAppendEntries(req, func(resp *raftpb.AppendEntriesResponse, err error) { ch <- result{resp, err} })
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-time.After(10 * time.Second):
		fx.t.Fatal("AppendEntries did not answer")
		return nil, nil
	}
}

// secDurable is what a node keeps on disk, and its configuration.
type secDurable struct {
	term           uint64
	vote           string
	first, last    uint64
	entries        []string // index/term/data
	snapshotIndex  uint64
	configuration  string
	lastEntryTerm  uint64
	snapshotTermAt uint64
}

func (fx *secFollowerFixture) durable() secDurable {
	fx.t.Helper()
	var d secDurable
	var err error
	if d.term, d.vote, err = fx.meta.Load(); err != nil {
		fx.t.Fatal(err)
	}
	d.first, d.last = fx.log.FirstIndex(), fx.log.LastIndex()
	if d.last >= d.first {
		es, err := fx.log.Entries(d.first, d.last+1, math.MaxUint64)
		if err != nil {
			fx.t.Fatal(err)
		}
		for _, e := range es {
			d.entries = append(d.entries, fmt.Sprintf("%d/%d/%x", e.Index, e.Term, e.Data))
		}
	}
	d.lastEntryTerm = fx.termAt(d.last)
	d.snapshotIndex, d.snapshotTermAt = fx.snaps.LastIndex()
	d.configuration = fx.node.Status().Configuration.String()
	return d
}

func (fx *secFollowerFixture) unchanged(what string, before secDurable) {
	fx.t.Helper()
	after := fx.durable()
	if fmt.Sprint(after) != fmt.Sprint(before) {
		fx.t.Errorf("%s changed the durable state:\n before %+v\n after  %+v", what, before, after)
	}
	if st := fx.node.Status(); st.Role != graft.Follower || st.Leader.ID != "sl" {
		fx.t.Errorf("%s: the node is %v following %q, want a follower of sl", what, st.Role, st.Leader.ID)
	}
}

// secNegativeTerm is what int64(-1) becomes in a uint64 field on the wire:
// a peer that sends a "negative" term sends this.
const secNegativeTerm = uint64(math.MaxUint64)

// TestMalformedAppendEntries sends AppendEntries that must be refused —
// zero and negative terms, no or a forged sender, entries with gaps or
// bad terms — and one whose prev_log_index is beyond the log, which must
// be answered "no" with a hint: none may change the durable state.
func TestMalformedAppendEntries(t *testing.T) {
	fx := newSecFollower(t)
	before := fx.durable()
	last, term := before.last, fx.term
	ok := func(r *raftpb.AppendEntriesRequest) *raftpb.AppendEntriesRequest {
		r.GroupId, r.PeerId = secGroup, "sf"
		if r.ServerId == "" {
			r.ServerId = "sl"
		}
		return r
	}
	e := fx.entry
	for _, tc := range []struct {
		name string
		req  *raftpb.AppendEntriesRequest
	}{
		{"zero term", ok(&raftpb.AppendEntriesRequest{Term: 0, PrevLogIndex: last, PrevLogTerm: term})},
		{"zero term with entries", ok(&raftpb.AppendEntriesRequest{Term: 0, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+1, 0)}})},
		{"negative term", ok(&raftpb.AppendEntriesRequest{Term: secNegativeTerm, PrevLogIndex: last, PrevLogTerm: term})},
		{"negative term with entries", ok(&raftpb.AppendEntriesRequest{Term: secNegativeTerm, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+1, secNegativeTerm)}})},
		{"no sender", &raftpb.AppendEntriesRequest{GroupId: secGroup, PeerId: "sf", Term: term + 1, PrevLogIndex: last, PrevLogTerm: term}},
		{"from itself", ok(&raftpb.AppendEntriesRequest{ServerId: "sf", Term: term + 1, PrevLogIndex: last, PrevLogTerm: term})},
		{"entries with a gap", ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+2, term)}})},
		{"entries with a gap inside", ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+1, term), e(last+3, term)}})},
		{"entries going back", ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+1, term), e(last+1, term)}})},
		{"entries overlapping prev", ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last, term)}})},
		{"entry of term 0", ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+1, 0)}})},
		{"entry from a later term", ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+1, term+1)}})},
		{"nil entry", ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{nil}})},
		{"gap at a higher term", ok(&raftpb.AppendEntriesRequest{Term: term + 5, PrevLogIndex: last, PrevLogTerm: term, Entries: []*raftpb.Entry{e(last+2, term+5)}})},
	} {
		resp, err := fx.appendEntries(tc.req)
		if err == nil {
			t.Errorf("%s: accepted: %v", tc.name, resp)
		}
		fx.unchanged(tc.name, before)
	}

	// prev_log_index beyond the log is not malformed, only ahead of us:
	// the answer is no, with our last index so that the leader backs up.
	for _, prev := range []uint64{last + 1, last + 1000, math.MaxUint64} {
		for _, entries := range [][]*raftpb.Entry{nil, {e(prev+1, term)}} {
			if prev == math.MaxUint64 && entries != nil {
				entries = nil // no index after it
			}
			name := fmt.Sprintf("prev %d beyond the log (%d entries)", prev, len(entries))
			resp, err := fx.appendEntries(ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: prev, PrevLogTerm: term, Entries: entries, CommittedIndex: prev}))
			if err != nil || resp.Success || resp.LastLogIndex != last || resp.Term != term {
				t.Errorf("%s: %v, %v; want success=false with last_log_index %d", name, resp, err, last)
			}
			fx.unchanged(name, before)
		}
	}
	// A prev that exists with another term is a conflict, answered the
	// same way, and truncates nothing.
	resp, err := fx.appendEntries(ok(&raftpb.AppendEntriesRequest{Term: term, PrevLogIndex: last, PrevLogTerm: term - 1}))
	if err != nil || resp.Success {
		t.Errorf("prev term mismatch: %v, %v", resp, err)
	}
	fx.unchanged("a prev term mismatch", before)
}

// TestMalformedRequestVote checks that votes with a zero or negative term,
// no sender or a forged one are refused with an error and change nothing.
func TestMalformedRequestVote(t *testing.T) {
	fx := newSecFollower(t)
	before := fx.durable()
	for _, tc := range []struct {
		name string
		req  *raftpb.RequestVoteRequest
	}{
		{"zero term", &raftpb.RequestVoteRequest{ServerId: "sl", Term: 0, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40}},
		{"negative term", &raftpb.RequestVoteRequest{ServerId: "sl", Term: secNegativeTerm, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40, LeadershipTransfer: true}},
		{"negative term pre-vote", &raftpb.RequestVoteRequest{ServerId: "sl", Term: secNegativeTerm, PreVote: true, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40}},
		{"no sender", &raftpb.RequestVoteRequest{Term: fx.term + 1, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40, LeadershipTransfer: true}},
		{"from itself", &raftpb.RequestVoteRequest{ServerId: "sf", Term: fx.term + 1, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40, LeadershipTransfer: true}},
	} {
		tc.req.GroupId, tc.req.PeerId = secGroup, "sf"
		if resp, err := fx.node.HandleRequestVote(context.Background(), tc.req); err == nil {
			t.Errorf("RequestVote %s: accepted: %v", tc.name, resp)
		}
		fx.unchanged("RequestVote "+tc.name, before)
	}
}

// TestMalformedInstallSnapshot checks that InstallSnapshot requests with
// an empty or malformed uri, a uri at another host than the leader's, a
// zero or negative term, or a bad meta are refused with an error, start
// no download and change nothing.
func TestMalformedInstallSnapshot(t *testing.T) {
	fx := newSecFollower(t)
	before := fx.durable()
	good := func() *raftpb.InstallSnapshotRequest {
		return &raftpb.InstallSnapshotRequest{
			GroupId: secGroup, ServerId: "sl", PeerId: "sf", Term: fx.term,
			Meta: &raftpb.SnapshotMeta{LastIncludedIndex: before.last + 100, LastIncludedTerm: fx.term,
				Peers: []string{"sf=" + secFollower, "sl=" + secLeader}},
			Uri: snapshot.FormatURI(secLeader, 12345),
		}
	}
	for _, tc := range []struct {
		name string
		mod  func(r *raftpb.InstallSnapshotRequest)
	}{
		{"empty uri", func(r *raftpb.InstallSnapshotRequest) { r.Uri = "" }},
		{"uri at another host", func(r *raftpb.InstallSnapshotRequest) { r.Uri = snapshot.FormatURI("evil:7000", 12345) }},
		{"uri at another port of the leader's host", func(r *raftpb.InstallSnapshotRequest) { r.Uri = snapshot.FormatURI("sl:7001", 12345) }},
		{"uri of another scheme", func(r *raftpb.InstallSnapshotRequest) { r.Uri = "http://" + secLeader + "/12345" }},
		{"uri with a path", func(r *raftpb.InstallSnapshotRequest) { r.Uri = "remote://" + secLeader + "/../12345" }},
		{"uri without a reader", func(r *raftpb.InstallSnapshotRequest) { r.Uri = "remote://" + secLeader + "/" }},
		{"zero term", func(r *raftpb.InstallSnapshotRequest) { r.Term = 0 }},
		{"no sender", func(r *raftpb.InstallSnapshotRequest) { r.ServerId = "" }},
		{"from itself", func(r *raftpb.InstallSnapshotRequest) { r.ServerId = "sf" }},
		{"negative term", func(r *raftpb.InstallSnapshotRequest) {
			r.Term, r.Meta.LastIncludedTerm = secNegativeTerm, secNegativeTerm
		}},
		{"no meta", func(r *raftpb.InstallSnapshotRequest) { r.Meta = nil }},
		{"meta index 0", func(r *raftpb.InstallSnapshotRequest) { r.Meta.LastIncludedIndex = 0 }},
		{"meta term 0", func(r *raftpb.InstallSnapshotRequest) { r.Meta.LastIncludedTerm = 0 }},
		{"meta term after the request's", func(r *raftpb.InstallSnapshotRequest) { r.Meta.LastIncludedTerm = r.Term + 1 }},
		{"meta without peers' addresses", func(r *raftpb.InstallSnapshotRequest) { r.Meta.Peers = []string{"sf"} }},
		{"meta with a peer twice", func(r *raftpb.InstallSnapshotRequest) { r.Meta.Peers = []string{"sf=a:1", "sf=b:1"} }},
	} {
		req := good()
		tc.mod(req)
		if resp, err := fx.node.HandleInstallSnapshot(context.Background(), req); err == nil {
			t.Errorf("InstallSnapshot %s: accepted: %v", tc.name, resp)
		}
		if st := fx.node.Status().Snapshot.State; st != graft.SnapshotIdle {
			t.Errorf("InstallSnapshot %s: snapshot state %v, want IDLE", tc.name, st)
		}
		fx.unchanged("InstallSnapshot "+tc.name, before)
	}
}

// tlsPeer is a graft node of a TLS test cluster: its own gRPC server
// and transport, with a certificate from ca.
type tlsPeer struct {
	id, addr string
	node     *graft.Node
	tr       *grpctransport.Transport
}

// TestTLSPeerCannotJoin runs three nodes over real gRPC with mutual TLS:
// they elect a leader and replicate. A fourth process with a certificate
// from another CA cannot disturb them (its RPCs fail the handshake), cannot
// fetch snapshot files, and cannot be added: the leader cannot reach it,
// so AddPeer fails and the configuration stays as it was.
func TestTLSPeerCannotJoin(t *testing.T) {
	dir := t.TempDir()
	ca, err := certgen.NewCA("cluster CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rogueCA, err := certgen.NewCA("rogue CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, err := ca.WriteFiles(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *certgen.CA, name string) (cert, key string) {
		pair, err := ca.Issue(name, []string{"127.0.0.1"}, certgen.Node, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err = pair.WriteFiles(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	var listeners []net.Listener
	var peers []graft.Peer
	for i := range 4 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, lis)
		peers = append(peers, graft.Peer{ID: fmt.Sprintf("t%d", i+1), Addr: lis.Addr().String()})
	}
	start := func(i int, ca *certgen.CA, initial []graft.Peer) *tlsPeer {
		p := &tlsPeer{id: peers[i].ID, addr: peers[i].Addr}
		cert, key := issue(ca, p.id)
		// Every node trusts the cluster's CA: the rogue knows it too.
		serverCreds, err := grpctransport.ServerTLS(cert, key, caFile)
		if err != nil {
			t.Fatal(err)
		}
		clientCreds, err := grpctransport.ClientTLS(cert, key, caFile)
		if err != nil {
			t.Fatal(err)
		}
		router := transport.NewRouter()
		files := snapshot.NewFileService(snapshot.FileServiceOptions{})
		t.Cleanup(files.Close)
		router.SetFileHandler(files)
		srv := grpctransport.NewServer(router, serverCreds)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(listeners[i]) }()
		opts := grpctransport.DefaultOptions()
		opts.DialOptions = append(opts.DialOptions, clientCreds)
		opts.MaxReconnectDelay = 50 * time.Millisecond
		p.tr = grpctransport.New(opts)
		snaps, err := snapshot.Open(filepath.Join(dir, p.id, "snap"), snapshot.Options{})
		if err != nil {
			t.Fatal(err)
		}
		o := graft.DefaultOptions()
		o.GroupID, o.ID, o.InitialPeers = "tls", p.id, initial
		o.ElectionTimeout, o.HeartbeatInterval = 300*time.Millisecond, 30*time.Millisecond
		o.LogStorage, o.MetaStorage, o.Snapshots = memory.NewLog(), memory.NewMeta(), snaps
		o.Transport, o.Router, o.FileService = p.tr, router, files
		o.StateMachine = rafttest.NewFSM(p.id, rafttest.NewChecker())
		if p.node, err = graft.NewNode(o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.node.Shutdown()
			srv.Stop()
			<-served
			_ = p.tr.Close()
		})
		return p
	}
	var cluster []*tlsPeer
	for i := range 3 {
		cluster = append(cluster, start(i, ca, peers[:3]))
	}
	leader := waitTLSLeader(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := leader.node.Apply(ctx, []byte("over mTLS"))
	if err != nil {
		t.Fatalf("Apply over mutual TLS: %v", err)
	}
	secWaitUntil(t, "every node to apply the entry", func() bool {
		for _, p := range cluster {
			if p.node.Status().AppliedIndex < res.Index {
				return false
			}
		}
		return true
	})

	// The rogue believes it is a member and campaigns at a high term.
	rogue := start(3, rogueCA, peers)
	term := leader.node.Status().Term
	for _, p := range cluster {
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := rogue.tr.RequestVote(rctx, p.addr, &raftpb.RequestVoteRequest{
			GroupId: "tls", ServerId: rogue.id, PeerId: p.id, Term: term + 100,
			LastLogIndex: 1 << 40, LastLogTerm: term + 99, LeadershipTransfer: true,
		})
		if !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("RequestVote from the rogue to %s: %v, want refused", p.id, err)
		}
		_, err = rogue.tr.AppendEntries(rctx, p.addr, &raftpb.AppendEntriesRequest{
			GroupId: "tls", ServerId: rogue.id, PeerId: p.id, Term: term + 100,
		})
		if !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("AppendEntries from the rogue to %s: %v, want refused", p.id, err)
		}
		_, err = rogue.tr.GetFile(rctx, p.addr, &raftpb.GetFileRequest{ReaderId: 1, Filename: snapshot.MetaFileName, Count: 1 << 20})
		if !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("GetFile from the rogue to %s: %v, want refused", p.id, err)
		}
		rcancel()
	}
	// The leader cannot reach it, so it never catches up and is not added.
	actx, acancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err = leader.node.AddPeer(actx, graft.Peer{ID: rogue.id, Addr: rogue.addr})
	acancel()
	if !errors.Is(err, graft.ErrCatchUpTimeout) {
		t.Errorf("AddPeer of the rogue: %v, want ErrCatchUpTimeout", err)
	}
	for _, p := range cluster {
		st := p.node.Status()
		if st.Term != term || st.Configuration.Contains(rogue.id) || len(st.Configuration.Peers) != 3 {
			t.Errorf("%s: term %d (was %d), configuration %v: the rogue got in", p.id, st.Term, term, st.Configuration)
		}
	}
	if st := rogue.node.Status(); st.Leader.ID != "" || st.AppliedIndex >= res.Index {
		t.Errorf("the rogue follows %q and applied %d: it joined", st.Leader.ID, st.AppliedIndex)
	}
	if l := waitTLSLeader(t, cluster); l != leader {
		t.Errorf("leadership moved from %s to %s", leader.id, l.id)
	}
}

func waitTLSLeader(t *testing.T, nodes []*tlsPeer) *tlsPeer {
	t.Helper()
	var leader *tlsPeer
	secWaitUntil(t, "a leader all agree on", func() bool {
		leader = nil
		for _, p := range nodes {
			st := p.node.Status()
			if st.Role == graft.Leader {
				leader = p
			}
		}
		if leader == nil {
			return false
		}
		return !slices.ContainsFunc(nodes, func(p *tlsPeer) bool { return p.node.Status().Leader.ID != leader.id })
	})
	return leader
}

// secWaitUntil polls cond until it holds, failing the test after 10s.
func secWaitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
}
