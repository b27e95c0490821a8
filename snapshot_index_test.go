package graft_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
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

// soloNode starts a one-node group "n" on a memory network with sm as
// its state machine and its snapshots under dir.
func soloNode(t *testing.T, sm graft.StateMachine, dir string) *graft.Node {
	t.Helper()
	net := memtransport.NewNetwork(1)
	t.Cleanup(func() { net.Close() })
	r := transport.NewRouter()
	if _, err := net.Listen("n:7000", r); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(dir, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := graft.DefaultOptions()
	o.GroupID, o.ID, o.InitialPeers = "test", "n", []graft.Peer{{ID: "n", Addr: "n:7000"}}
	o.ElectionTimeout, o.HeartbeatInterval = 50*time.Millisecond, 10*time.Millisecond
	o.LogStorage, o.MetaStorage, o.Snapshots = memory.NewLog(), memory.NewMeta(), snaps
	o.Transport, o.Router, o.StateMachine = net.Transport("n:7000"), r, sm
	n, err := graft.NewNode(o)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Snapshot returns the index its snapshot covers, also when entries are
// applied between the call and the save (the save captures what is
// applied when it starts, after the entries queued before it).
func TestSnapshotReturnsTheIndexItSaved(t *testing.T) {
	fsm := &blockingFSM{blocked: make(chan struct{}), release: make(chan struct{})}
	n := soloNode(t, fsm, filepath.Join(t.TempDir(), "snap"))
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

// slowSaveFSM saves on its own goroutine, which says so on saving and
// writes its file only once release is closed.
type slowSaveFSM struct {
	saving  chan struct{}
	release chan struct{}
	saved   atomic.Bool // the file is added and done is being called
}

func (f *slowSaveFSM) Apply(it *graft.Iterator) error {
	for it.Next() {
	}
	return nil
}

func (f *slowSaveFSM) SaveSnapshot(w graft.SnapshotWriter, done func(error)) {
	go func() {
		close(f.saving)
		<-f.release
		err := os.WriteFile(filepath.Join(w.Path(), "state"), []byte("state"), 0o644)
		if err == nil {
			err = w.AddFile("state", nil)
		}
		f.saved.Store(err == nil)
		done(err)
	}()
}

func (f *slowSaveFSM) LoadSnapshot(graft.SnapshotReader) error { return nil }

// Shutdown waits for a save the state machine runs on its own goroutine:
// once Shutdown returns nothing writes into the snapshot directory, which
// the caller may then remove, and the snapshot is complete on disk.
func TestShutdownWaitsForSnapshotSave(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	fsm := &slowSaveFSM{saving: make(chan struct{}), release: make(chan struct{})}
	n := soloNode(t, fsm, dir)
	t.Cleanup(func() { n.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	multiGroupWaitFor(t, 10*time.Second, "n to lead", n.IsLeader)
	if _, err := n.Apply(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	snapc := make(chan error, 1)
	go func() { _, err := n.Snapshot(ctx); snapc <- err }()
	<-fsm.saving
	shut := make(chan bool, 1) // whether the save had finished when Shutdown returned
	go func() {
		n.Shutdown()
		shut <- fsm.saved.Load()
	}()
	multiGroupWaitFor(t, 10*time.Second, "n to shut down", func() bool { return n.Status().Role == graft.Shutdown })
	select {
	case <-shut:
		t.Fatal("Shutdown returned while the state machine was still saving")
	case <-time.After(100 * time.Millisecond): // a negative check: Shutdown must not return
	}
	close(fsm.release)
	select {
	case saved := <-shut:
		if !saved {
			t.Fatal("Shutdown returned before the save finished")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the save finished")
	}
	if err := <-snapc; err != nil && !errors.Is(err, graft.ErrShutdown) {
		t.Fatalf("Snapshot: %v", err)
	}
	reopened, err := snapshot.Open(dir, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if r, err := reopened.Open(); err != nil {
		t.Fatalf("the snapshot saved during Shutdown: %v", err)
	} else {
		r.Close()
	}
}

// twiceDoneFSM breaks SaveSnapshot's contract: it calls done twice.
type twiceDoneFSM struct{ slowSaveFSM }

func (f *twiceDoneFSM) SaveSnapshot(w graft.SnapshotWriter, done func(error)) {
	done(nil)
	done(errors.New("second call"))
}

// A state machine that calls done twice costs it nothing: the second call
// is ignored, the save counts once and later saves and Shutdown go on.
func TestSnapshotDoneCalledTwice(t *testing.T) {
	n := soloNode(t, &twiceDoneFSM{}, filepath.Join(t.TempDir(), "snap"))
	t.Cleanup(func() { n.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	multiGroupWaitFor(t, 10*time.Second, "n to lead", n.IsLeader)
	for i := range 2 {
		res, err := n.Apply(ctx, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		idx, err := n.Snapshot(ctx)
		if err != nil || idx != res.Index {
			t.Fatalf("save %d: snapshot at %d, %v; want %d", i, idx, err, res.Index)
		}
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
}
