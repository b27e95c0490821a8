package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

func TestEtcdCluster(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	dir := t.TempDir()
	c, err := startEtcd(dir)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.close()
		}
	}()
	if c.leader != c.nodes[0] {
		t.Errorf("leader is node %d, want node 1 (which campaigned)", c.leader.id)
	}

	const clients, perClient = 8, 125
	const want = clients*perClient + 1 // and startEtcd's "ready"
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			for j := range perClient {
				if err := c.apply(fmt.Appendf(nil, "client %d command %d", i, j)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := c.applied(); got != want {
		t.Errorf("leader applied %d commands, want %d", got, want)
	}
	// Followers learn the commit index from the next append or heartbeat.
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range c.nodes {
		for n.count.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := n.count.Load(); got != want {
			t.Errorf("node %d applied %d commands, want %d", n.id, got, want)
		}
	}

	if err := c.applyOn(c.nodes[1], []byte("on a follower")); !errors.Is(err, errEtcdNotLeader) {
		t.Errorf("apply on a follower: %v, want %v", err, errEtcdNotLeader)
	}

	ctr := c.counters()
	if ctr.logWrites == 0 || ctr.logEntries < 3*want {
		t.Errorf("counted %d log writes of %d entries, want at least %d entries", ctr.logWrites, ctr.logEntries, 3*want)
	}
	if ctr.appendRequests == 0 || ctr.appendEntries < 2*want {
		t.Errorf("counted %d MsgApp of %d entries, want at least %d entries", ctr.appendRequests, ctr.appendEntries, 2*want)
	}
	t.Logf("log writes %d, entries per write %.1f; MsgApp %d, entries per MsgApp %.1f",
		ctr.logWrites, float64(ctr.logEntries)/float64(ctr.logWrites), ctr.appendRequests, float64(ctr.appendEntries)/float64(ctr.appendRequests))

	closed = true
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if err := c.apply([]byte("after close")); !errors.Is(err, errEtcdClosed) {
		t.Errorf("apply after close: %v, want %v", err, errEtcdClosed)
	}

	// Every node's WAL holds every command, in order, after the bootstrap
	// snapshot.
	for i := 1; i <= 3; i++ {
		wal, err := readEtcdWAL(filepath.Join(dir, fmt.Sprintf("n%d", i)))
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if wal.snapshot.GetMetadata().GetIndex() != 1 {
			t.Errorf("node %d: WAL snapshot at index %d, want 1", i, wal.snapshot.GetMetadata().GetIndex())
		}
		var cmds uint64
		for k, e := range wal.entries {
			if e.GetIndex() != uint64(k+2) {
				t.Fatalf("node %d: WAL entry %d has index %d, want %d", i, k, e.GetIndex(), k+2)
			}
			if e.GetType() == pb.EntryNormal && len(e.GetData()) > 0 {
				cmds++
			}
		}
		if cmds != want {
			t.Errorf("node %d: WAL holds %d commands, want %d", i, cmds, want)
		}
		if wal.state.GetTerm() == 0 {
			t.Errorf("node %d: WAL holds no hard state", i)
		}
	}

	// No goroutine outlives the cluster.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before the cluster, %d after:\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEtcdWALSegments(t *testing.T) {
	dir := t.TempDir()
	var ctr counterSet
	w, err := openEtcdWAL(dir, &ctr)
	if err != nil {
		t.Fatal(err)
	}
	// Segments of 1 MiB (the first one, already open, of 64 MiB) take 21
	// writes of 48 KiB: 60 writes use three.
	w.segSize = 1 << 20
	data := make([]byte, 16<<10)
	index := uint64(0)
	for range 60 {
		var ents []*pb.Entry
		for range 3 {
			index++
			ents = append(ents, &pb.Entry{Term: new(uint64(1)), Index: new(index), Data: data})
		}
		if err := w.save(&pb.HardState{Term: new(uint64(1)), Commit: new(index)}, ents, true); err != nil {
			t.Fatal(err)
		}
	}
	// A new term's entries replace the tail.
	if err := w.save(nil, []*pb.Entry{{Term: new(uint64(2)), Index: new(uint64(100)), Data: []byte("x")}}, true); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	if w.seq != 2 {
		t.Errorf("%d segments, want 3", w.seq+1)
	}
	got, err := readEtcdWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.entries) != 100 || got.entries[99].GetTerm() != 2 || got.entries[98].GetIndex() != 99 {
		t.Errorf("replayed %d entries, want 100 ending with the term-2 one", len(got.entries))
	}
	if got.state.GetCommit() != 180 {
		t.Errorf("replayed commit %d, want 180", got.state.GetCommit())
	}
	if c := ctr.load(); c.logWrites != 61 || c.logEntries != 181 {
		t.Errorf("counted %d writes of %d entries, want 61 of 181", c.logWrites, c.logEntries)
	}
}
