package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
)

// hcTuning holds the harness's choices for hashicorp/raft beyond
// shared/PEERS.md's fair setup.
type hcTuning struct {
	// logCache wraps the log store in raft.NewLogCache of this many
	// entries; 0 (PEERS.md's setup) uses the store directly.
	logCache int
	// wal uses raft-wal (hashicorp's segmented write-ahead log, fsync on
	// every append) as log and stable store in place of the BoltStore.
	wal bool
}

// hcStore is a node's log and stable store: a BoltStore or a raft-wal WAL.
type hcStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// openHCStore opens the log and stable store tune asks for in pdir.
func openHCStore(pdir string, tune hcTuning) (hcStore, error) {
	if tune.wal {
		dir := filepath.Join(pdir, "wal")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		return raftwal.Open(dir)
	}
	return raftboltdb.NewBoltStore(filepath.Join(pdir, "raft.db"))
}

// hcCounter is the same counting state machine as graftCounter. It
// implements raft.BatchingFSM so that hashicorp/raft, like graft, hands it
// committed entries in batches.
// hcCounter counts the commands it applies and, once ids is set, records
// their ids too.
type hcCounter struct {
	n   atomic.Uint64
	ids atomic.Pointer[appliedIDs]
}

func (c *hcCounter) Apply(l *raft.Log) any {
	if l.Type == raft.LogCommand {
		c.n.Add(1)
		if ids := c.ids.Load(); ids != nil {
			ids.add(l.Data)
		}
	}
	return nil
}

func (c *hcCounter) ApplyBatch(logs []*raft.Log) []any {
	var k uint64
	ids := c.ids.Load()
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			k++
			if ids != nil {
				ids.add(l.Data)
			}
		}
	}
	c.n.Add(k)
	return make([]any, len(logs))
}

func (c *hcCounter) Snapshot() (raft.FSMSnapshot, error) { return hcSnapshot{}, nil }
func (c *hcCounter) Restore(r io.ReadCloser) error       { return r.Close() }

type hcSnapshot struct{}

func (hcSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (hcSnapshot) Release()                             {}

type hcNode struct {
	raft  *raft.Raft
	trans *raft.NetworkTransport
	store hcStore
	fsm   *hcCounter
}

type hcCluster struct {
	nodes  []*hcNode
	leader *hcNode
	ctr    counterSet
}

// startHashicorp starts a 3-node hashicorp/raft cluster set up as
// shared/PEERS.md says: BoltStore (fsync on) as log and stable store, TCP
// transport on loopback, BatchApplyCh, MaxAppendEntries 1024, snapshots out
// of the way, bootstrapped on the first node.
func startHashicorp(dir string, tune hcTuning) (*hcCluster, error) {
	c, _, err := startHashicorpWith(dir, tune, nil, false)
	return c, err
}

func (c *hcCluster) apply(data []byte) error { return c.leader.raft.Apply(data, 0).Error() }

func (c *hcCluster) applied() uint64 { return c.leader.fsm.n.Load() }

func (c *hcCluster) counters() counters { return c.ctr.load() }

func (c *hcCluster) close() error {
	var errs []error
	for _, n := range c.nodes {
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		}
		errs = append(errs, n.trans.Close(), n.store.Close())
	}
	return errors.Join(errs...)
}
