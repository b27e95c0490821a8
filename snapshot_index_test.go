package graft_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/memory"
	"github.com/graft-raft/graft/transport"
	memtransport "github.com/graft-raft/graft/transport/memory"
)

// blockingFSM counts applies; the Apply that meets the command "block"
// says so on blocked and waits until release is closed.
type blockingFSM struct {
	blocked chan struct{}
	release chan struct{}
}

func (f *blockingFSM) Apply(it *graft.Iterator) error {
	for it.Next() {
		if bytes.Equal(it.Data(), []byte("block")) {
			close(f.blocked)
			<-f.release
		}
	}
	return nil
}

func (f *blockingFSM) SaveSnapshot(w graft.SnapshotWriter, done func(error)) { done(nil) }
func (f *blockingFSM) LoadSnapshot(graft.SnapshotReader) error               { return nil }

// Snapshot returns the index its snapshot covers, also when entries are
// applied between the call and the save (the save captures what is
// applied when it starts, after the entries queued before it).
func TestSnapshotReturnsTheIndexItSaved(t *testing.T) {
	net := memtransport.NewNetwork(1)
	t.Cleanup(func() { net.Close() })
	r := transport.NewRouter()
	if _, err := net.Listen("n:7000", r); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(filepath.Join(t.TempDir(), "snap"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fsm := &blockingFSM{blocked: make(chan struct{}), release: make(chan struct{})}
	o := graft.DefaultOptions()
	o.GroupID, o.ID, o.InitialPeers = "test", "n", []graft.Peer{{ID: "n", Addr: "n:7000"}}
	o.ElectionTimeout, o.HeartbeatInterval = 50*time.Millisecond, 10*time.Millisecond
	o.LogStorage, o.MetaStorage, o.Snapshots = memory.NewLog(), memory.NewMeta(), snaps
	o.Transport, o.Router, o.StateMachine = net.Transport("n:7000"), r, fsm
	n, err := graft.NewNode(o)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			close(fsm.release)
		}
		n.Shutdown()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	multiGroupWaitFor(t, 10*time.Second, "n to lead", n.IsLeader)
	for i := range 3 {
		if _, err := n.Apply(ctx, []byte(fmt.Sprint("before-", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Hold the applier in the middle of "block", then commit two more.
	errc := make(chan error, 3)
	go func() { _, err := n.Apply(ctx, []byte("block")); errc <- err }()
	<-fsm.blocked
	for i := range 2 {
		go func() { _, err := n.Apply(ctx, []byte(fmt.Sprint("after-", i))); errc <- err }()
	}
	var last uint64
	multiGroupWaitFor(t, 10*time.Second, "block and both after-i to commit", func() bool {
		st := n.Status()
		last = st.CommitIndex
		return st.CommitIndex >= st.AppliedIndex+3
	})
	type result struct {
		idx uint64
		err error
	}
	snapc := make(chan result, 1)
	go func() { idx, err := n.Snapshot(ctx); snapc <- result{idx, err} }()
	// The save is queued behind the commits; let them apply.
	multiGroupWaitFor(t, 10*time.Second, "the snapshot to be SAVING", func() bool {
		return n.Status().Snapshot.State == graft.SnapshotSaving
	})
	close(fsm.release)
	released = true
	res := <-snapc
	if res.err != nil {
		t.Fatal(res.err)
	}
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Status().Snapshot.LastIndex; res.idx != got || res.idx != last {
		t.Fatalf("Snapshot returned %d; the snapshot saved covers %d; %d was committed before the call", res.idx, got, last)
	}
}
