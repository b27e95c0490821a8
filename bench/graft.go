package main

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/graft-raft/graft"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
)

// graftTuning holds the graft options the harness may change from their
// defaults; zero keeps graft's default.
type graftTuning struct {
	maxInflightAppends int
	maxAppendEntries   int
	// preallocate is segment.Options.Preallocate (0: the default;
	// negative: off).
	preallocate int64
}

// graftCounter is the benchmark's state machine: it counts applied
// commands and keeps nothing else.
// graftCounter counts the commands it applies and, once ids is set,
// records their ids too.
type graftCounter struct {
	n   atomic.Uint64
	ids atomic.Pointer[appliedIDs]
}

func (c *graftCounter) Apply(it *graft.Iterator) error {
	var k uint64
	ids := c.ids.Load()
	for it.Next() {
		k++
		if ids != nil {
			ids.add(it.Data())
		}
	}
	c.n.Add(k)
	return nil
}

func (c *graftCounter) SaveSnapshot(w graft.SnapshotWriter, done func(error)) { done(nil) }
func (c *graftCounter) LoadSnapshot(r graft.SnapshotReader) error             { return nil }

// graftProc is one "server process" of the cluster: a gRPC server with its
// router, a client transport and one node, wired as cmd/graft-example does.
type graftProc struct {
	server *grpctransport.Server
	trans  *grpctransport.Transport
	node   *graft.Node
	fsm    *graftCounter
}

type graftCluster struct {
	procs  []*graftProc
	leader *graft.Node
	lfsm   *graftCounter
	ctr    counterSet
}

// startGraft starts a 3-node graft group on loopback, each node with a
// segment log and a meta file under dir, and waits for a leader that has
// committed an entry.
func startGraft(dir string, tune graftTuning) (*graftCluster, error) {
	c, _, err := startGraftWith(dir, tune, nil, false)
	return c, err
}

func (c *graftCluster) apply(data []byte) error {
	_, err := c.leader.Apply(context.Background(), data)
	return err
}

func (c *graftCluster) applied() uint64 { return c.lfsm.n.Load() }

func (c *graftCluster) counters() counters { return c.ctr.load() }

func (c *graftCluster) close() error {
	var errs []error
	for _, p := range c.procs {
		p.server.Stop()
		errs = append(errs, p.node.Shutdown(), p.trans.Close())
	}
	return errors.Join(errs...)
}
