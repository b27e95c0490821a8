package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// The etcd system: go.etcd.io/raft/v3, which is only the consensus core,
// in the thin harness an etcd user writes around it (as etcd's raftexample
// and server do): per node a raft.RawNode driven by one goroutine, a
// write-ahead log of its own (etcd_wal.go) behind a raft.MemoryStorage,
// and a TCP transport (etcd_transport.go).
func init() {
	registerSystem("etcd", func(cfg config, dir string) (cluster, error) { return startEtcd(dir) })
}

const (
	// etcdTick is the raft tick; with etcdElectionTicks and
	// etcdHeartbeatTicks, etcd's defaults (--heartbeat-interval 100ms,
	// --election-timeout 1s), which graft's DefaultOptions match.
	etcdTick           = 100 * time.Millisecond
	etcdElectionTicks  = 10
	etcdHeartbeatTicks = 1
	// etcdMaxDrain bounds how many messages and proposals the loop takes
	// from its channels before it handles a Ready.
	etcdMaxDrain = 4096
)

var (
	errEtcdNotLeader = errors.New("etcd: not the leader")
	errEtcdClosed    = errors.New("etcd: node stopped")
)

// etcdProposal is one apply waiting for its entry: data starts with an
// 8-byte id, which the leader's loop looks up when it applies the entry.
type etcdProposal struct {
	id   uint64
	data []byte
	done chan error
}

// etcdNode is one "server process": a RawNode, its storage and transport,
// and the goroutine that drives them (run).
type etcdNode struct {
	id      uint64
	rn      *raft.RawNode
	storage *raft.MemoryStorage
	wal     *etcdWAL
	trans   *etcdTransport
	recvc   chan *pb.Message
	propc   chan *etcdProposal
	stopc   <-chan struct{}
	done    chan struct{} // closed when run returns
	ctr     *counterSet

	leader atomic.Bool
	count  atomic.Uint64 // the state machine: applied commands
	err    error         // why run stopped early; read after done

	term uint64 // of the last HardState; owned by run

	// Owned by run.
	pending map[uint64]chan error
	batch   []*pb.Entry
	batchc  []*etcdProposal
}

type etcdCluster struct {
	nodes  []*etcdNode
	leader *etcdNode
	stopc  chan struct{}
	loops  sync.WaitGroup // the nodes' run loops
	ctr    counterSet
	nextID atomic.Uint64
}

// startEtcd starts a 3-node go.etcd.io/raft group on loopback under dir,
// campaigns on node 1 and waits until it leads and has applied an entry.
func startEtcd(dir string) (c *etcdCluster, err error) {
	c = &etcdCluster{stopc: make(chan struct{})}
	var listeners []net.Listener
	defer func() {
		if err != nil {
			for _, l := range listeners[len(c.nodes):] {
				l.Close()
			}
			c.close()
		}
	}()
	addrs := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return c, err
		}
		listeners = append(listeners, lis)
		addrs[id] = lis.Addr().String()
	}
	for i, lis := range listeners {
		n, err := newEtcdNode(uint64(i+1), filepath.Join(dir, fmt.Sprintf("n%d", i+1)), lis, addrs, c.stopc, &c.ctr)
		if err != nil {
			return c, err
		}
		c.nodes = append(c.nodes, n)
	}
	// Campaign on node 1 before its loop starts (a RawNode is not safe for
	// concurrent use), then start the loops.
	if err := c.nodes[0].rn.Campaign(); err != nil {
		return c, err
	}
	for _, n := range c.nodes {
		c.loops.Go(n.run)
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.leader == nil {
		if time.Now().After(deadline) {
			return c, errors.New("etcd: no leader elected within 20s")
		}
		for _, n := range c.nodes {
			if n.leader.Load() {
				c.leader = n
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.applyOn(c.leader, []byte("ready")); err != nil {
		return c, fmt.Errorf("etcd: first apply: %w", err)
	}
	return c, nil
}

// etcdConfState is the group's membership: voters 1, 2 and 3.
func etcdConfState() *pb.ConfState {
	return pb.EnsureConfState(&pb.ConfState{Voters: []uint64{1, 2, 3}})
}

func newEtcdNode(id uint64, dir string, lis net.Listener, addrs map[uint64]string, stopc <-chan struct{}, ctr *counterSet) (*etcdNode, error) {
	wal, err := openEtcdWAL(dir, ctr)
	if err != nil {
		lis.Close()
		return nil, err
	}
	// Bootstrap as the raft package recommends: a storage whose first
	// index is past a snapshot holding the membership (instead of
	// RawNode.Bootstrap's conf change entries). The WAL records it.
	boot := pb.EnsureSnapshot(&pb.Snapshot{Metadata: &pb.SnapshotMetadata{
		Index: new(uint64(1)), Term: new(uint64(1)), ConfState: etcdConfState()}})
	storage := raft.NewMemoryStorage()
	if err := storage.ApplySnapshot(boot); err != nil {
		wal.close()
		lis.Close()
		return nil, err
	}
	if err := wal.saveSnapshot(boot); err != nil {
		wal.close()
		lis.Close()
		return nil, err
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        id,
		ElectionTick:              etcdElectionTicks,
		HeartbeatTick:             etcdHeartbeatTicks,
		Storage:                   storage,
		MaxSizePerMsg:             1 << 20, // etcd's maxSizePerMsg
		MaxInflightMsgs:           256,     // etcd's maxInflightMsgs
		MaxUncommittedEntriesSize: 0,
		CheckQuorum:               true,
		PreVote:                   true,
		// Clients apply on the leader; a follower refuses rather than
		// forwards (so a lost leadership fails applies fast).
		DisableProposalForwarding: true,
		Logger:                    etcdLogger{&raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}},
	})
	if err != nil {
		wal.close()
		lis.Close()
		return nil, err
	}
	n := &etcdNode{
		id:      id,
		rn:      rn,
		storage: storage,
		wal:     wal,
		recvc:   make(chan *pb.Message, etcdMaxDrain),
		propc:   make(chan *etcdProposal, etcdMaxDrain),
		stopc:   stopc,
		done:    make(chan struct{}),
		ctr:     ctr,
		pending: map[uint64]chan error{},
	}
	peers := map[uint64]string{}
	for pid, addr := range addrs {
		if pid != id {
			peers[pid] = addr
		}
	}
	n.trans = newEtcdTransport(lis, peers, n.recvc, stopc)
	return n, nil
}

// run is the node's raft loop: tick, step received messages, propose,
// and handle each Ready, until stopc is closed.
func (n *etcdNode) run() {
	defer close(n.done)
	defer n.failPending(errEtcdClosed)
	ticker := time.NewTicker(etcdTick)
	defer ticker.Stop()
	for {
		select {
		case <-n.stopc:
			return
		case <-ticker.C:
			n.rn.Tick()
		case m := <-n.recvc:
			n.step(m)
		case p := <-n.propc:
			n.addProposal(p)
		}
		// Take what else is waiting, so that one Ready (one log write)
		// covers it all.
	drain:
		for range etcdMaxDrain {
			select {
			case m := <-n.recvc:
				n.step(m)
			case p := <-n.propc:
				n.addProposal(p)
			default:
				break drain
			}
		}
		n.proposeBatch()
		if n.rn.HasReady() {
			if err := n.handleReady(); err != nil {
				n.err = err
				return
			}
		}
	}
}

func (n *etcdNode) step(m *pb.Message) {
	// Errors are messages from unknown peers or for stale terms: dropped,
	// as etcd's server drops them.
	_ = n.rn.Step(m)
}

func (n *etcdNode) addProposal(p *etcdProposal) {
	n.batch = append(n.batch, &pb.Entry{Data: p.data})
	n.batchc = append(n.batchc, p)
}

// proposeBatch proposes the proposals taken in this round as one MsgProp:
// one append to the leader's log and one MsgApp per follower for all of
// them (RawNode.Propose would append, and send, each on its own).
func (n *etcdNode) proposeBatch() {
	if len(n.batch) == 0 {
		return
	}
	var err error
	if !n.leader.Load() {
		err = errEtcdNotLeader
	} else {
		err = n.rn.Step(&pb.Message{Type: pb.MsgProp.Enum(), From: new(n.id), Entries: n.batch})
	}
	for i, p := range n.batchc {
		if err != nil {
			p.done <- err
		} else {
			n.pending[p.id] = p.done
		}
		n.batch[i], n.batchc[i] = nil, nil
	}
	n.batch, n.batchc = n.batch[:0], n.batchc[:0]
}

// failPending fails every apply waiting on this node.
func (n *etcdNode) failPending(err error) {
	for id, done := range n.pending {
		done <- err
		delete(n.pending, id)
	}
	for _, p := range n.batchc {
		p.done <- err
	}
	n.batch, n.batchc = n.batch[:0], n.batchc[:0]
}

// persistBeforeSend reports whether m may only be sent once the Ready's
// hard state and entries are durable: votes and append acknowledgements.
// The raft package itself draws this line (raft.send: these are the
// messages it holds back in msgsAfterAppend, and with AsyncStorageWrites
// the only ones it attaches to the storage write); everything else, the
// leader's MsgApp in particular, may go out while the write is under way,
// the leader writing its log in parallel with its followers (Raft thesis
// §10.2.1), as etcd's server does.
func persistBeforeSend(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgAppResp, pb.MsgVoteResp, pb.MsgPreVoteResp:
		return true
	}
	return false
}

// handleReady handles one Ready in the order the raft package documents:
// messages that need no durable state are sent first, then the hard state
// and entries are written (fdatasync'd if MustSync) and appended to the
// MemoryStorage, then the rest of the messages are sent, and the RawNode
// advanced; committed entries are applied before the write if they were
// durable already, after it if not.
func (n *etcdNode) handleReady() error {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		isLeader := rd.SoftState.RaftState == raft.StateLeader
		n.leader.Store(isLeader)
		if !isLeader {
			// Entries this node proposed may be lost or committed by
			// another leader: their applies fail.
			n.failPending(errEtcdNotLeader)
		}
	}
	if rd.HardState != nil && rd.HardState.GetTerm() != n.term {
		// A new term: whatever this node proposed before may have been
		// replaced, even if it leads again.
		if n.term != 0 {
			n.failPending(errEtcdNotLeader)
		}
		n.term = rd.HardState.GetTerm()
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		// The harness never compacts a log, so no leader sends one.
		return errors.New("etcd: unexpected snapshot in Ready")
	}
	// Committed entries that were durable before this Ready are applied
	// now, while this Ready's entries are written (the raft package lets
	// the steps run in parallel; etcd's server applies in a goroutine of
	// its own while it writes the WAL): on the leader that is always the
	// case, so an apply does not wait for the next batch's fdatasync.
	// Entries committed in the Ready that brings them (a follower catching
	// up) are applied once written.
	applyFirst := len(rd.Entries) == 0 || len(rd.CommittedEntries) == 0 ||
		rd.CommittedEntries[len(rd.CommittedEntries)-1].GetIndex() < rd.Entries[0].GetIndex()
	late := 0
	for _, m := range rd.Messages {
		if persistBeforeSend(m) {
			rd.Messages[late] = m
			late++
			continue
		}
		if err := n.send(m); err != nil {
			return err
		}
	}
	if applyFirst {
		n.apply(rd.CommittedEntries)
	}
	if err := n.wal.save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
		return fmt.Errorf("etcd: wal: %w", err)
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		if err := n.storage.SetHardState(rd.HardState); err != nil {
			return err
		}
	}
	if err := n.storage.Append(rd.Entries); err != nil {
		return err
	}
	for _, m := range rd.Messages[:late] {
		if err := n.send(m); err != nil {
			return err
		}
	}
	if !applyFirst {
		n.apply(rd.CommittedEntries)
	}
	n.rn.Advance(rd)
	return nil
}

func (n *etcdNode) send(m *pb.Message) error {
	frame, err := etcdFrame(m)
	if err != nil {
		return err
	}
	if !n.trans.send(m.GetTo(), frame) {
		// Dropped (buffer full), as rafthttp drops: raft probes again.
		n.rn.ReportUnreachable(m.GetTo())
		return nil
	}
	if m.GetType() == pb.MsgApp && len(m.GetEntries()) > 0 {
		// Like graft's AppendEntries count: requests carrying entries
		// (not the leader's empty, commit-only MsgApps).
		n.ctr.appendRequests.Add(1)
		n.ctr.appendEntries.Add(uint64(len(m.GetEntries())))
	}
	return nil
}

// apply applies committed entries to the counting state machine and
// completes the applies waiting for them. The group's membership never
// changes, so there are no conf change entries; empty entries are the ones
// new leaders append.
func (n *etcdNode) apply(ents []*pb.Entry) {
	var k uint64
	for _, e := range ents {
		if e.GetType() != pb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		k++
		if len(n.pending) > 0 && len(e.GetData()) >= 8 {
			id := binary.BigEndian.Uint64(e.GetData())
			if done, ok := n.pending[id]; ok {
				done <- nil
				delete(n.pending, id)
			}
		}
	}
	n.count.Add(k)
}

// applyOn submits data on n and waits until it is applied there.
func (c *etcdCluster) applyOn(n *etcdNode, data []byte) error {
	id := c.nextID.Add(1)
	buf := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(buf, id)
	copy(buf[8:], data)
	p := &etcdProposal{id: id, data: buf, done: make(chan error, 1)}
	select {
	case n.propc <- p:
	case <-n.done:
		return errEtcdClosed
	}
	select {
	case err := <-p.done:
		return err
	case <-n.done:
		// run fails what it holds as it returns; p may still be queued.
		select {
		case err := <-p.done:
			return err
		default:
			return errEtcdClosed
		}
	}
}

func (c *etcdCluster) apply(data []byte) error { return c.applyOn(c.leader, data) }

func (c *etcdCluster) applied() uint64 { return c.leader.count.Load() }

func (c *etcdCluster) counters() counters { return c.ctr.load() }

func (c *etcdCluster) close() error {
	select {
	case <-c.stopc:
		return nil // closed already
	default:
	}
	close(c.stopc)
	c.loops.Wait()
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.trans.close())
	}
	for _, n := range c.nodes {
		errs = append(errs, n.err, n.wal.close())
	}
	return errors.Join(errs...)
}

// etcdLogger drops raft's debug, info and warning logs, prints errors,
// and panics on fatal errors (rather than exit the benchmark).
type etcdLogger struct{ *raft.DefaultLogger }

func (etcdLogger) Error(v ...any) { log.New(os.Stderr, "etcd raft: ", log.LstdFlags).Print(v...) }
func (etcdLogger) Errorf(format string, v ...any) {
	log.New(os.Stderr, "etcd raft: ", log.LstdFlags).Printf(format, v...)
}
func (etcdLogger) Fatal(v ...any) { panic(fmt.Sprint(v...)) }
func (etcdLogger) Fatalf(format string, v ...any) {
	panic(fmt.Sprintf(format, v...))
}
