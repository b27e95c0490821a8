package graft_test

// The follower's install-snapshot registration rules (DESIGN.md §4), each
// on its own: a real follower node, and a fake leader whose FileService
// serves prepared snapshots through a gate the test opens when it wants
// the download to proceed.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/rafttest"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/memory"
	"github.com/graft-raft/graft/transport"
	memtransport "github.com/graft-raft/graft/transport/memory"
	"google.golang.org/protobuf/proto"
)

const (
	followerAddr = "f:7000"
	leaderAddr   = "l:7000"
)

// gatedFiles holds GetFile calls until the gate opens.
type gatedFiles struct {
	fs   *snapshot.FileService
	gate chan struct{}
}

func (g *gatedFiles) HandleGetFile(ctx context.Context, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.fs.HandleGetFile(ctx, req)
}

// gatedFSM is a rafttest.FSM whose saves and loads can be held.
type gatedFSM struct {
	*rafttest.FSM
	saveGate chan struct{}
	loadGate chan struct{}
	loading  chan struct{} // closed when a load starts
	once     sync.Once
}

func (g *gatedFSM) SaveSnapshot(w graft.SnapshotWriter, done func(error)) {
	g.FSM.SaveSnapshot(w, func(err error) {
		<-g.saveGate
		done(err)
	})
}

func (g *gatedFSM) LoadSnapshot(r graft.SnapshotReader) error {
	g.once.Do(func() { close(g.loading) })
	<-g.loadGate
	return g.FSM.LoadSnapshot(r)
}

type installFixture struct {
	t      *testing.T
	net    *memtransport.Network
	store  *snapshot.Storage // the fake leader's snapshots
	files  *snapshot.FileService
	gated  *gatedFiles
	node   *graft.Node
	fsm    *gatedFSM
	peers  []graft.Peer
	keep   []*snapshot.Reader
	leader string
}

func newInstallFixture(t *testing.T, alone bool) *installFixture {
	t.Helper()
	fx := &installFixture{t: t, net: memtransport.NewNetwork(1), leader: "l"}
	t.Cleanup(func() { fx.net.Close() })
	var err error
	fx.store, err = snapshot.Open(filepath.Join(t.TempDir(), "leader"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.store.Close() })
	fx.files = snapshot.NewFileService(snapshot.FileServiceOptions{})
	t.Cleanup(fx.files.Close)
	fx.gated = &gatedFiles{fs: fx.files, gate: make(chan struct{})}
	lr := transport.NewRouter()
	lr.SetFileHandler(fx.gated)
	if _, err := fx.net.Listen(leaderAddr, lr); err != nil {
		t.Fatal(err)
	}

	fx.peers = []graft.Peer{{ID: "f", Addr: followerAddr}}
	if !alone {
		fx.peers = append(fx.peers, graft.Peer{ID: "l", Addr: leaderAddr})
	}
	fr := transport.NewRouter()
	if _, err := fx.net.Listen(followerAddr, fr); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(filepath.Join(t.TempDir(), "follower"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fx.fsm = &gatedFSM{FSM: rafttest.NewFSM("f", rafttest.NewChecker()), saveGate: make(chan struct{}),
		loadGate: make(chan struct{}), loading: make(chan struct{})}
	o := graft.DefaultOptions()
	o.GroupID, o.ID, o.InitialPeers = "test", "f", fx.peers
	o.ElectionTimeout, o.HeartbeatInterval = 50*time.Millisecond, 10*time.Millisecond
	if !alone {
		o.ElectionTimeout = time.Minute // the fake leader never votes: keep f from campaigning
	}
	o.LogStorage, o.MetaStorage = memory.NewLog(), memory.NewMeta()
	o.Snapshots = snaps
	o.Transport = fx.net.Transport(followerAddr)
	o.Router = fr
	o.StateMachine = fx.fsm
	fx.node, err = graft.NewNode(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fx.open(fx.gated.gate)
		fx.open(fx.fsm.loadGate)
		fx.open(fx.fsm.saveGate)
		fx.node.Shutdown()
	})
	return fx
}

func (fx *installFixture) open(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// snapshotAt makes a leader snapshot at index (term 1) with a few files
// and returns the install request for it.
func (fx *installFixture) snapshotAt(index uint64) *raftpb.InstallSnapshotRequest {
	fx.t.Helper()
	var peers []string
	for _, p := range fx.peers {
		peers = append(peers, p.String())
	}
	return fx.jointSnapshotAt(index, peers, nil)
}

// jointSnapshotAt is snapshotAt with the given configuration.
func (fx *installFixture) jointSnapshotAt(index uint64, peers, oldPeers []string) *raftpb.InstallSnapshotRequest {
	fx.t.Helper()
	w, err := fx.store.Create()
	if err != nil {
		fx.t.Fatal(err)
	}
	for _, name := range []string{"a.dat", "b.dat"} {
		if err := os.WriteFile(filepath.Join(w.Path(), name), make([]byte, 64<<10), 0o644); err != nil {
			fx.t.Fatal(err)
		}
		if err := w.AddFile(name, nil); err != nil {
			fx.t.Fatal(err)
		}
	}
	meta := &raftpb.SnapshotMeta{LastIncludedIndex: index, LastIncludedTerm: 1, Peers: peers, OldPeers: oldPeers}
	w.SetMeta(meta)
	if err := w.Close(); err != nil {
		fx.t.Fatal(err)
	}
	r, err := fx.store.Open()
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.keep = append(fx.keep, r)
	return fx.request(r, 5)
}

// request registers another reader of r's snapshot and returns an install
// request for it in term.
func (fx *installFixture) request(r *snapshot.Reader, term uint64) *raftpb.InstallSnapshotRequest {
	uri, _ := fx.files.Register(r.Ref(), leaderAddr)
	return &raftpb.InstallSnapshotRequest{GroupId: "test", ServerId: fx.leader, PeerId: "f", Term: term, Meta: r.Meta(), Uri: uri}
}

type installResult struct {
	resp *raftpb.InstallSnapshotResponse
	err  error
}

func (fx *installFixture) install(req *raftpb.InstallSnapshotRequest) <-chan installResult {
	ch := make(chan installResult, 1)
	go func() {
		resp, err := fx.node.HandleInstallSnapshot(context.Background(), req)
		ch <- installResult{resp, err}
	}()
	return ch
}

func (fx *installFixture) waitState(want graft.SnapshotState) {
	fx.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for fx.node.Status().Snapshot.State != want {
		if time.Now().After(deadline) {
			fx.t.Fatalf("snapshot state %v, want %v", fx.node.Status().Snapshot.State, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func wait(t *testing.T, ch <-chan installResult) installResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("install did not answer")
	}
	return installResult{}
}

func mustSucceed(t *testing.T, r installResult) {
	t.Helper()
	if r.err != nil || r.resp == nil || !r.resp.Success {
		t.Fatalf("install = %+v, %v; want success", r.resp, r.err)
	}
}

func TestInstallWhenStopped(t *testing.T) {
	fx := newInstallFixture(t, false)
	req := fx.snapshotAt(10)
	fx.node.Shutdown()
	if _, err := fx.node.HandleInstallSnapshot(context.Background(), req); !errors.Is(err, graft.ErrShutdown) {
		t.Fatalf("install on a stopped node: %v, want ErrShutdown", err)
	}
}

func TestInstallIdleStartsAndCompletes(t *testing.T) {
	fx := newInstallFixture(t, false)
	req := fx.snapshotAt(10)
	fx.open(fx.gated.gate)
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, wait(t, fx.install(req)))
	st := fx.node.Status()
	if st.Snapshot.LastIndex != 10 || st.AppliedIndex != 10 || st.Snapshot.State != graft.SnapshotIdle {
		t.Fatalf("after install: %+v applied %d", st.Snapshot, st.AppliedIndex)
	}
	if p := st.Snapshot.Progress; p.FilesDone != p.FilesTotal || p.BytesDone != 128<<10 {
		t.Fatalf("progress %+v, want all files and 128 KiB", p)
	}
	if st.FirstIndex != 11 || st.LastIndex != 10 {
		t.Fatalf("log [%d, %d] after install, want it to restart at 11", st.FirstIndex, st.LastIndex)
	}
	// Rule: an index at or below the last snapshot succeeds at once.
	mustSucceed(t, wait(t, fx.install(req)))
}

func TestInstallWhileSavingIsBusy(t *testing.T) {
	fx := newInstallFixture(t, true)
	for !fx.node.IsLeader() {
		time.Sleep(time.Millisecond)
	}
	if _, err := fx.node.Apply(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	saved := make(chan error, 1)
	go func() {
		_, err := fx.node.Snapshot(context.Background())
		saved <- err
	}()
	fx.waitState(graft.SnapshotSaving)
	req := fx.snapshotAt(10)
	req.Term = fx.node.Status().Term + 1
	if _, err := fx.node.HandleInstallSnapshot(context.Background(), req); !errors.Is(err, graft.ErrBusy) {
		t.Fatalf("install while saving: %v, want ErrBusy", err)
	}
	fx.open(fx.fsm.saveGate)
	if err := <-saved; err != nil {
		t.Fatalf("save: %v", err)
	}
}

func TestInstallSameIndexTakesOver(t *testing.T) {
	fx := newInstallFixture(t, false)
	first := fx.snapshotAt(10)
	a := fx.install(first)
	fx.waitState(graft.SnapshotDownloading)
	second := fx.request(fx.keep[0], 5)
	b := fx.install(second)
	if r := wait(t, a); !errors.Is(r.err, graft.ErrInstallInterrupted) {
		t.Fatalf("superseded install: %+v %v, want interrupted", r.resp, r.err)
	}
	fx.open(fx.gated.gate)
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, wait(t, b))
	if fx.fsm.Loads() != 1 {
		t.Fatalf("loads = %d, want 1", fx.fsm.Loads())
	}
}

func TestInstallConcurrentIdenticalRequests(t *testing.T) {
	fx := newInstallFixture(t, false)
	fx.snapshotAt(10)
	const n = 5
	results := make(chan installResult, n)
	for i := 0; i < n; i++ {
		ch := fx.install(fx.request(fx.keep[0], 5))
		go func() { results <- <-ch }()
	}
	// Each request that registers takes over from the one before, which
	// ends interrupted; with the gate closed nothing else can answer. Wait
	// for the n-1 interrupted answers before opening it: a request that
	// registered only after the install completed would succeed at once
	// (its index is no longer newer), and the count would be off.
	next := func() installResult {
		t.Helper()
		select {
		case r := <-results:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("install did not answer")
		}
		return installResult{}
	}
	for i := 0; i < n-1; i++ {
		if r := next(); !errors.Is(r.err, graft.ErrInstallInterrupted) {
			t.Fatalf("answer %d before the download could proceed: %+v %v, want interrupted", i+1, r.resp, r.err)
		}
	}
	fx.waitState(graft.SnapshotDownloading)
	fx.open(fx.gated.gate)
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, next())
	if st := fx.node.Status(); st.Snapshot.LastIndex != 10 || fx.fsm.Loads() != 1 {
		t.Fatalf("snapshot %+v loads %d", st.Snapshot, fx.fsm.Loads())
	}
}

func TestInstallOlderIsRefused(t *testing.T) {
	fx := newInstallFixture(t, false)
	older := fx.snapshotAt(10)
	newer := fx.snapshotAt(20)
	a := fx.install(newer)
	fx.waitState(graft.SnapshotDownloading)
	if _, err := fx.node.HandleInstallSnapshot(context.Background(), older); !errors.Is(err, graft.ErrStaleInstall) {
		t.Fatalf("older install: %v, want ErrStaleInstall", err)
	}
	fx.open(fx.gated.gate)
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, wait(t, a))
	if got := fx.node.Status().Snapshot.LastIndex; got != 20 {
		t.Fatalf("snapshot at %d, want 20", got)
	}
}

func TestInstallNewerCancelsDownload(t *testing.T) {
	fx := newInstallFixture(t, false)
	older := fx.snapshotAt(10)
	newer := fx.snapshotAt(20)
	a := fx.install(older)
	fx.waitState(graft.SnapshotDownloading)
	if _, err := fx.node.HandleInstallSnapshot(context.Background(), newer); !errors.Is(err, graft.ErrBusy) {
		t.Fatalf("newer install during a download: %v, want ErrBusy", err)
	}
	if r := wait(t, a); r.err == nil {
		t.Fatal("the cancelled download succeeded")
	}
	fx.waitState(graft.SnapshotIdle)
	fx.open(fx.gated.gate)
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, wait(t, fx.install(newer)))
	if got := fx.node.Status().Snapshot.LastIndex; got != 20 {
		t.Fatalf("snapshot at %d, want 20", got)
	}
}

func TestInstallNewerWhileLoadingIsBusy(t *testing.T) {
	fx := newInstallFixture(t, false)
	older := fx.snapshotAt(10)
	newer := fx.snapshotAt(20)
	fx.open(fx.gated.gate)
	a := fx.install(older)
	<-fx.fsm.loading
	fx.waitState(graft.SnapshotLoading)
	if _, err := fx.node.HandleInstallSnapshot(context.Background(), newer); !errors.Is(err, graft.ErrBusy) {
		t.Fatalf("newer install while loading: %v, want ErrBusy", err)
	}
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, wait(t, a))
	mustSucceed(t, wait(t, fx.install(newer)))
}

func TestInstallInterruptedByTermChange(t *testing.T) {
	fx := newInstallFixture(t, false)
	req := fx.snapshotAt(10)
	a := fx.install(req)
	fx.waitState(graft.SnapshotDownloading)
	// While downloading: entries are refused as busy, heartbeats answered.
	resp := appendEntries(t, fx.node, &raftpb.AppendEntriesRequest{GroupId: "test", ServerId: "l", PeerId: "f", Term: 5,
		Entries: []*raftpb.Entry{{Index: 1, Term: 5, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL}}})
	if !resp.Busy || resp.Success {
		t.Fatalf("entries during a download: %+v, want busy", resp)
	}
	if resp := appendEntries(t, fx.node, &raftpb.AppendEntriesRequest{GroupId: "test", ServerId: "l", PeerId: "f", Term: 5}); !resp.Success {
		t.Fatalf("heartbeat during a download: %+v", resp)
	}
	// A newer term interrupts the download.
	appendEntries(t, fx.node, &raftpb.AppendEntriesRequest{GroupId: "test", ServerId: "l", PeerId: "f", Term: 6})
	if r := wait(t, a); !errors.Is(r.err, graft.ErrInstallInterrupted) {
		t.Fatalf("install across a term change: %+v %v, want interrupted", r.resp, r.err)
	}
	// The new term's leader installs it; the copy resumes.
	fx.open(fx.gated.gate)
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, wait(t, fx.install(fx.request(fx.keep[0], 6))))
}

func appendEntries(t *testing.T, n *graft.Node, req *raftpb.AppendEntriesRequest) *raftpb.AppendEntriesResponse {
	t.Helper()
	type res struct {
		resp *raftpb.AppendEntriesResponse
		err  error
	}
	ch := make(chan res, 1)
	n.HandleAppendEntries(req, func(r *raftpb.AppendEntriesResponse, err error) { ch <- res{r, err} })
	r := <-ch
	if r.err != nil {
		t.Fatalf("AppendEntries: %v", r.err)
	}
	return r.resp
}

func TestInstallMalformedRequests(t *testing.T) {
	fx := newInstallFixture(t, false)
	good := fx.snapshotAt(10)
	for _, tc := range []struct {
		name string
		mod  func(r *raftpb.InstallSnapshotRequest)
	}{
		{"empty uri", func(r *raftpb.InstallSnapshotRequest) { r.Uri = "" }},
		{"uri at another host", func(r *raftpb.InstallSnapshotRequest) { r.Uri = "remote://evil:1/5" }},
		{"no meta", func(r *raftpb.InstallSnapshotRequest) { r.Meta = nil }},
		{"zero index", func(r *raftpb.InstallSnapshotRequest) {
			r.Meta = &raftpb.SnapshotMeta{LastIncludedTerm: 1, Peers: good.Meta.Peers}
		}},
		{"meta term beyond the request's", func(r *raftpb.InstallSnapshotRequest) {
			r.Meta = &raftpb.SnapshotMeta{LastIncludedIndex: 10, LastIncludedTerm: 9, Peers: good.Meta.Peers}
		}},
		{"bad peers", func(r *raftpb.InstallSnapshotRequest) {
			r.Meta = &raftpb.SnapshotMeta{LastIncludedIndex: 10, LastIncludedTerm: 1, Peers: []string{"no-address"}}
		}},
	} {
		req := proto.Clone(good).(*raftpb.InstallSnapshotRequest)
		tc.mod(req)
		before := fx.node.Status()
		if _, err := fx.node.HandleInstallSnapshot(context.Background(), req); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
		if after := fx.node.Status(); after.Term != before.Term || after.Snapshot.State != graft.SnapshotIdle {
			t.Errorf("%s: changed the node: term %d -> %d, snapshot %v", tc.name, before.Term, after.Term, after.Snapshot.State)
		}
	}
}
