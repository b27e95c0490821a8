package graft_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/rafttest"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/memory"
	"github.com/graft-raft/graft/transport"
	memtransport "github.com/graft-raft/graft/transport/memory"
	"github.com/graft-raft/graft/vfs"
)

func TestOptionsValidate(t *testing.T) {
	good := func() graft.Options {
		o := graft.DefaultOptions()
		o.GroupID, o.ID = "g", "n1"
		o.LogStorage, o.MetaStorage = memory.NewLog(), memory.NewMeta()
		o.Transport = memtransport.NewNetwork(1).Transport("a")
		o.StateMachine = rafttest.NewFSM("n1", rafttest.NewChecker())
		return o
	}
	o := good()
	if err := o.Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(*graft.Options)
		match string
	}{
		{"no group", func(o *graft.Options) { o.GroupID = "" }, "GroupID"},
		{"no id", func(o *graft.Options) { o.ID = "" }, "ID"},
		{"heartbeat too slow", func(o *graft.Options) { o.HeartbeatInterval = 2 * o.ElectionTimeout }, "HeartbeatInterval 2s"},
		{"no inflight", func(o *graft.Options) { o.MaxInflightAppends = 0 }, "MaxInflightAppends 0"},
		{"no log", func(o *graft.Options) { o.LogStorage = nil }, "LogStorage"},
		{"no fsm", func(o *graft.Options) { o.StateMachine = nil }, "StateMachine"},
		{"bad peers", func(o *graft.Options) {
			o.InitialPeers = []graft.Peer{{ID: "a", Addr: "x:1"}, {ID: "a", Addr: "x:1"}}
		}, "listed twice"},
	} {
		o := good()
		tc.mod(&o)
		err := o.Validate()
		if !errors.Is(err, graft.ErrInvalidOptions) || !strings.Contains(err.Error(), tc.match) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidOptions naming %q", tc.name, err, tc.match)
		}
	}
}

// singleNode starts a one-node group with snapshots on fs and waits for it
// to lead.
func singleNode(t *testing.T, fs vfs.FS) (*graft.Node, *rafttest.FSM) {
	t.Helper()
	net := memtransport.NewNetwork(1)
	t.Cleanup(func() { net.Close() })
	router := transport.NewRouter()
	if _, err := net.Listen("n1:1", router); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(filepath.Join(t.TempDir(), "snap"), snapshot.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	fsm := rafttest.NewFSM("n1", rafttest.NewChecker())
	o := graft.DefaultOptions()
	o.GroupID, o.ID = "g", "n1"
	o.InitialPeers = []graft.Peer{{ID: "n1", Addr: "n1:1"}}
	o.ElectionTimeout, o.HeartbeatInterval = 50*time.Millisecond, 10*time.Millisecond
	o.LogStorage, o.MetaStorage = memory.NewLog(), memory.NewMeta()
	o.Snapshots = snaps
	o.SnapshotTrailingEntries = 1
	o.Transport = net.Transport("n1:1")
	o.Router = router
	o.StateMachine = fsm
	n, err := graft.NewNode(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	deadline := time.Now().Add(5 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("single node did not become leader")
		}
		time.Sleep(time.Millisecond)
	}
	return n, fsm
}

// A save that fails because the disk is full reports the error and keeps
// the whole log; once space frees, the next save succeeds and compacts.
func TestSnapshotDiskFullKeepsLog(t *testing.T) {
	full := &vfs.DiskFull{}
	n, _ := singleNode(t, vfs.WithInjector(vfs.Default, full))
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if _, err := n.Apply(ctx, cmd("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	full.SetFull(true)
	if _, err := n.Snapshot(ctx); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("snapshot on a full disk: %v, want ENOSPC", err)
	}
	st := n.Status()
	if st.FirstIndex != 1 || st.Snapshot.LastIndex != 0 || st.Snapshot.State != graft.SnapshotIdle {
		t.Fatalf("after a failed save: first index %d, snapshot %+v; want the whole log kept", st.FirstIndex, st.Snapshot)
	}
	full.SetFull(false)
	idx, err := n.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot after space frees: %v", err)
	}
	if st := n.Status(); st.Snapshot.LastIndex != idx || st.FirstIndex != idx {
		t.Fatalf("after the save at %d: first index %d, snapshot %+v", idx, st.FirstIndex, st.Snapshot)
	}
}

func TestApplyTooLarge(t *testing.T) {
	n, _ := singleNode(t, vfs.Default)
	big := make([]byte, graft.DefaultOptions().MaxEntrySize+1)
	if _, err := n.Apply(context.Background(), big); !errors.Is(err, graft.ErrTooLarge) {
		t.Fatalf("oversized Apply: %v, want ErrTooLarge", err)
	}
}

// Malformed RPCs get clear errors and change no durable state.
func TestMalformedRPCs(t *testing.T) {
	n, _ := singleNode(t, vfs.Default)
	before := n.Status()
	ent := func(idx, term uint64) *raftpb.Entry {
		return &raftpb.Entry{Index: idx, Term: term, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL}
	}
	for name, req := range map[string]*raftpb.AppendEntriesRequest{
		"zero term":       {GroupId: "g", ServerId: "x", PeerId: "n1"},
		"no sender":       {GroupId: "g", PeerId: "n1", Term: before.Term + 5},
		"entries gap":     {GroupId: "g", ServerId: "x", PeerId: "n1", Term: before.Term, PrevLogIndex: before.LastIndex, PrevLogTerm: before.Term, Entries: []*raftpb.Entry{ent(before.LastIndex+2, before.Term)}},
		"entry term > rq": {GroupId: "g", ServerId: "x", PeerId: "n1", Term: before.Term, PrevLogIndex: before.LastIndex, PrevLogTerm: before.Term, Entries: []*raftpb.Entry{ent(before.LastIndex+1, before.Term+1)}},
	} {
		errc := make(chan error, 1)
		n.HandleAppendEntries(req, func(_ *raftpb.AppendEntriesResponse, err error) { errc <- err })
		if err := <-errc; err == nil {
			t.Errorf("AppendEntries %s: accepted", name)
		}
	}
	for name, req := range map[string]*raftpb.RequestVoteRequest{
		"zero term": {GroupId: "g", ServerId: "x", PeerId: "n1"},
		"no sender": {GroupId: "g", PeerId: "n1", Term: 99},
	} {
		if _, err := n.HandleRequestVote(context.Background(), req); err == nil {
			t.Errorf("RequestVote %s: accepted", name)
		}
	}
	after := n.Status()
	if after.Term != before.Term || after.LastIndex != before.LastIndex || after.Role != graft.Leader {
		t.Fatalf("malformed RPCs changed the node: term %d -> %d, last index %d -> %d, role %v", before.Term, after.Term, before.LastIndex, after.LastIndex, after.Role)
	}
}
