package graft_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/storage/memory"
	"github.com/graft-raft/graft/transport"
	memtransport "github.com/graft-raft/graft/transport/memory"
)

// counter is a tiny state machine: it adds up the commands' lengths.
type counter struct {
	mu    sync.Mutex
	total int
}

func (c *counter) Apply(it *graft.Iterator) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for it.Next() {
		c.total += len(it.Data())
		it.SetResult(c.total)
	}
	return nil
}

func (c *counter) SaveSnapshot(w graft.SnapshotWriter, done func(error)) { done(nil) }
func (c *counter) LoadSnapshot(r graft.SnapshotReader) error             { return nil }

// A single-node group elects itself and applies proposals. A real group
// lists every peer in InitialPeers and uses durable storage and the gRPC
// transport.
func ExampleNewNode() {
	network := memtransport.NewNetwork(1)
	defer network.Close()
	router := transport.NewRouter()
	if _, err := network.Listen("n1:7000", router); err != nil {
		panic(err)
	}

	opts := graft.DefaultOptions()
	opts.GroupID = "example"
	opts.ID = "n1"
	opts.InitialPeers = []graft.Peer{{ID: "n1", Addr: "n1:7000"}}
	opts.ElectionTimeout = 50 * time.Millisecond
	opts.HeartbeatInterval = 10 * time.Millisecond
	opts.LogStorage = memory.NewLog()
	opts.MetaStorage = memory.NewMeta()
	opts.Transport = network.Transport("n1:7000")
	opts.Router = router
	opts.StateMachine = &counter{}
	node, err := graft.NewNode(opts)
	if err != nil {
		panic(err)
	}
	defer node.Shutdown()

	for !node.IsLeader() {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, cmd := range []string{"a", "bb", "ccc"} {
		res, err := node.Apply(ctx, []byte(cmd))
		if err != nil {
			panic(err)
		}
		fmt.Printf("index %d: total %d\n", res.Index, res.Result)
	}
	// Output:
	// index 2: total 1
	// index 3: total 3
	// index 4: total 6
}

// Apply on a follower fails with a *NotLeaderError naming the leader.
func ExampleNotLeaderError() {
	err := error(&graft.NotLeaderError{LeaderID: "n2", LeaderAddr: "10.0.0.2:7000"})
	var nl *graft.NotLeaderError
	if errors.As(err, &nl) && errors.Is(err, graft.ErrNotLeader) {
		fmt.Println("retry on", nl.LeaderID, "at", nl.LeaderAddr)
	}
	// Output: retry on n2 at 10.0.0.2:7000
}
