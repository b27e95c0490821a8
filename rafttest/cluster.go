// Package rafttest runs graft groups in one process for tests: nodes on an
// in-memory network with fault injection (transport/memory), durable logs
// on crash-simulating in-memory disks (vfs.MemFS + storage/segment), and a
// Checker that asserts raft's safety properties as the test runs.
//
// A crash stops a node abruptly and throws away every write it had not
// synced; a restart brings it back from what survived.
package rafttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/metafile"
	"github.com/graft-raft/graft/storage/segment"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
	"github.com/graft-raft/graft/vfs"
)

// Options configure a Cluster.
type Options struct {
	// N is the number of nodes, named n1..nN. Default 3.
	N int
	// Voters is how many of them (n1..nVoters) form the group's initial
	// configuration; the others start empty and wait to be added with a
	// membership change. Default N.
	Voters int
	// Seed seeds the network's randomness; 0 picks one. The seed is
	// logged so a failure can be replayed.
	Seed int64
	// ElectionTimeout and HeartbeatInterval of every node. Defaults 250ms
	// and 40ms.
	ElectionTimeout   time.Duration
	HeartbeatInterval time.Duration
	// Configure, if set, adjusts each node's options before it starts.
	Configure func(id string, o *graft.Options)
	// Verbose sends the nodes' logs to t.Log.
	Verbose bool
}

// Cluster is a group of in-process nodes. Methods are safe for concurrent
// use, except that a test must not crash or restart a node concurrently
// with another crash or restart of the same node.
type Cluster struct {
	t       testing.TB
	opts    Options
	Net     *memory.Network
	Checker *Checker
	Seed    int64
	Peers   []graft.Peer

	dir string // real directory for snapshots (state machines write files with package os)

	mu      sync.Mutex
	members map[string]*member
	closed  bool
}

type member struct {
	peer   graft.Peer
	disk   *vfs.MemFS
	dead   *atomic.Bool // set when this incarnation crashes: its disk access fails
	ep     *memory.Endpoint
	trans  *memory.Transport
	files  *snapshot.FileService
	node   *graft.Node
	fsm    *FSM
	up     bool
	starts int
	// held, while set, is closed to let the log's syncs of this member
	// proceed (HoldLogSyncs).
	held atomic.Pointer[chan struct{}]
}

// New starts a cluster and registers its Close with t.Cleanup.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.N == 0 {
		opts.N = 3
	}
	if opts.Voters == 0 {
		opts.Voters = opts.N
	}
	if opts.ElectionTimeout == 0 {
		opts.ElectionTimeout = 250 * time.Millisecond
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 40 * time.Millisecond
	}
	if opts.Seed == 0 {
		opts.Seed = time.Now().UnixNano()
	}
	t.Logf("rafttest: seed %d (replay with Options.Seed)", opts.Seed)
	c := &Cluster{
		t:       t,
		opts:    opts,
		Net:     memory.NewNetwork(opts.Seed),
		Checker: NewChecker(),
		Seed:    opts.Seed,
		members: map[string]*member{},
		dir:     t.TempDir(),
	}
	for i := 1; i <= opts.N; i++ {
		id := fmt.Sprintf("n%d", i)
		c.Peers = append(c.Peers, graft.Peer{ID: id, Addr: id + ":7000"})
	}
	for _, p := range c.Peers {
		c.members[p.ID] = &member{peer: p, disk: vfs.NewMem()}
	}
	for _, p := range c.Peers {
		if err := c.Start(p.ID); err != nil {
			t.Fatalf("rafttest: start %s: %v", p.ID, err)
		}
	}
	t.Cleanup(c.Close)
	return c
}

// Rand returns a random source derived from the cluster's seed, for test
// schedules that must replay with it.
func (c *Cluster) Rand() *rand.Rand {
	return rand.New(rand.NewPCG(uint64(c.Seed), 0x9e3779b97f4a7c15))
}

// IDs returns the node ids, n1..nN.
func (c *Cluster) IDs() []string {
	ids := make([]string, len(c.Peers))
	for i, p := range c.Peers {
		ids[i] = p.ID
	}
	return ids
}

// Addr returns the network address of node id.
func (c *Cluster) Addr(id string) string { return c.member(id).peer.Addr }

func (c *Cluster) member(id string) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.members[id]
	if !ok {
		c.t.Fatalf("rafttest: no node %q", id)
	}
	return m
}

// Start starts node id from whatever its disk holds.
func (c *Cluster) Start(id string) error {
	m := c.member(id)
	c.mu.Lock()
	if m.up {
		c.mu.Unlock()
		return fmt.Errorf("rafttest: %s is already up", id)
	}
	c.mu.Unlock()
	dead := &atomic.Bool{}
	disk := vfs.WithInjector(m.disk, vfs.InjectorFunc(func(op vfs.Op, path string) error {
		if g := m.held.Load(); g != nil && op == vfs.OpSync && strings.HasPrefix(path, "/raft/log") {
			<-*g
		}
		if dead.Load() {
			return errCrashed
		}
		return nil
	}))
	if err := vfs.MkdirAllDurable(disk, "/raft/log", 0o755); err != nil {
		return err
	}
	logs, err := segment.Open(disk, "/raft/log", segment.Options{SegmentSize: 1 << 20})
	if err != nil {
		return err
	}
	meta, err := metafile.Open(disk, "/raft")
	if err != nil {
		logs.Close()
		return err
	}
	snaps, err := snapshot.Open(c.SnapshotDir(id), snapshot.Options{})
	if err != nil {
		logs.Close()
		meta.Close()
		return err
	}
	files := snapshot.NewFileService(snapshot.FileServiceOptions{})
	router := transport.NewRouter()
	router.SetFileHandler(files)
	ep, err := c.Net.Listen(m.peer.Addr, router)
	if err != nil {
		logs.Close()
		meta.Close()
		snaps.Close()
		files.Close()
		return err
	}
	trans := c.Net.Transport(m.peer.Addr)
	fsm := NewFSM(id, c.Checker)
	o := graft.DefaultOptions()
	o.GroupID = "test"
	o.ID = id
	o.InitialPeers = c.Peers[:c.opts.Voters]
	if !slices.ContainsFunc(o.InitialPeers, func(p graft.Peer) bool { return p.ID == id }) {
		o.InitialPeers = nil // a node to be added later
	}
	o.ElectionTimeout = c.opts.ElectionTimeout
	o.HeartbeatInterval = c.opts.HeartbeatInterval
	o.LogStorage = logs
	o.MetaStorage = meta
	o.Snapshots = snaps
	o.FileService = files
	o.Copy.ChunkTimeout = time.Second
	o.Transport = trans
	o.Router = router
	o.StateMachine = fsm
	if c.opts.Verbose {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{c.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if c.opts.Configure != nil {
		c.opts.Configure(id, &o)
	}
	node, err := graft.NewNode(o)
	if err != nil {
		ep.Close()
		trans.Close()
		files.Close()
		return err // NewNode closed the storage
	}
	c.mu.Lock()
	m.dead, m.ep, m.trans, m.files, m.node, m.fsm, m.up = dead, ep, trans, files, node, fsm, true
	m.starts++
	c.mu.Unlock()
	return nil
}

var errCrashed = errors.New("rafttest: node crashed")

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// Crash stops node id abruptly: it vanishes from the network, its disk
// loses every unsynced write, and the process's remains are shut down
// without touching the disk again.
func (c *Cluster) Crash(id string) {
	m := c.member(id)
	c.mu.Lock()
	if !m.up {
		c.mu.Unlock()
		return
	}
	m.up = false
	node, ep, trans, files, dead := m.node, m.ep, m.trans, m.files, m.dead
	c.mu.Unlock()
	dead.Store(true)
	if g := m.held.Swap(nil); g != nil {
		close(*g) // held syncs now fail: the disk is gone
	}
	ep.Close()
	m.disk.Crash()
	trans.Close()
	node.Shutdown() // its disk access now fails; errors are expected
	files.Close()
}

// HoldLogSyncs makes every sync of node id's log block, as on a disk that
// stalls, until the returned release is called or the node crashes (its
// held syncs then fail, and what they would have made durable is lost).
// Writes go on; only their durability waits.
func (c *Cluster) HoldLogSyncs(id string) (release func()) {
	m := c.member(id)
	g := make(chan struct{})
	if !m.held.CompareAndSwap(nil, &g) {
		c.t.Fatalf("rafttest: syncs of %s are held already", id)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if m.held.CompareAndSwap(&g, nil) {
				close(g)
			}
		})
	}
}

// SnapshotDir returns the directory of node id's snapshots.
func (c *Cluster) SnapshotDir(id string) string { return filepath.Join(c.dir, id, "snapshots") }

// Wipe replaces the disk of node id, which must be down, with an empty
// one: its log, vote and snapshots are gone.
func (c *Cluster) Wipe(id string) {
	m := c.member(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.up {
		c.t.Fatalf("rafttest: wipe %s while it is up", id)
	}
	m.disk = vfs.NewMem()
	if err := os.RemoveAll(filepath.Join(c.dir, id)); err != nil {
		c.t.Fatalf("rafttest: wipe %s: %v", id, err)
	}
}

// Restart crashes node id (if up) and starts it again from its disk.
func (c *Cluster) Restart(id string) {
	c.Crash(id)
	if err := c.Start(id); err != nil {
		c.t.Fatalf("rafttest: restart %s: %v", id, err)
	}
}

// Stop shuts node id down cleanly.
func (c *Cluster) Stop(id string) {
	m := c.member(id)
	c.mu.Lock()
	if !m.up {
		c.mu.Unlock()
		return
	}
	m.up = false
	node, ep, trans, files := m.node, m.ep, m.trans, m.files
	c.mu.Unlock()
	ep.Close()
	if err := node.Shutdown(); err != nil {
		c.t.Errorf("rafttest: shutdown %s: %v", id, err)
	}
	trans.Close()
	files.Close()
}

// Node returns node id, or nil if it is down.
func (c *Cluster) Node(id string) *graft.Node {
	m := c.member(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !m.up {
		return nil
	}
	return m.node
}

// FSM returns the state machine of node id's current incarnation.
func (c *Cluster) FSM(id string) *FSM {
	m := c.member(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.fsm
}

// Up reports whether node id is running.
func (c *Cluster) Up(id string) bool {
	m := c.member(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.up
}

// Disconnect cuts node id off the network, both ways.
func (c *Cluster) Disconnect(id string) { c.Net.Disconnect(c.Addr(id)) }

// Reconnect undoes Disconnect.
func (c *Cluster) Reconnect(id string) { c.Net.Reconnect(c.Addr(id)) }

// connected reports whether id is up and not disconnected, as far as the
// cluster's own bookkeeping knows (partitions set directly on Net are not
// tracked).
func (c *Cluster) live() []string {
	var out []string
	for _, id := range c.IDs() {
		if c.Up(id) {
			out = append(out, id)
		}
	}
	return out
}

// Leaders returns, for each term, the running nodes that believe they lead
// in it.
func (c *Cluster) Leaders(ids ...string) map[uint64][]string {
	if len(ids) == 0 {
		ids = c.live()
	}
	out := map[uint64][]string{}
	for _, id := range ids {
		n := c.Node(id)
		if n == nil {
			continue
		}
		st := n.Status()
		if st.Role == graft.Leader {
			out[st.Term] = append(out[st.Term], id)
		}
	}
	return out
}

// CheckOneLeader waits until exactly one of ids (default: every running
// node) leads in the newest term in which any of them leads, and returns
// it. Two leaders in one term fail the test.
func (c *Cluster) CheckOneLeader(ids ...string) string {
	c.t.Helper()
	limit := c.electionWait()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		leaders := c.Leaders(ids...)
		var newest uint64
		for term, ls := range leaders {
			if len(ls) > 1 {
				c.t.Fatalf("rafttest: term %d has %d leaders: %v", term, len(ls), ls)
			}
			newest = max(newest, term)
		}
		if newest > 0 {
			return leaders[newest][0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("rafttest: no leader among %v within %v", ids, limit)
	return ""
}

// electionWait bounds the waits for elections: 5s, or ten election
// timeouts if that is longer (an election takes one to two timeouts, and
// a split vote another).
func (c *Cluster) electionWait() time.Duration {
	return max(5*time.Second, 10*c.opts.ElectionTimeout)
}

// CheckNoLeader fails the test if any of ids leads.
func (c *Cluster) CheckNoLeader(ids ...string) {
	c.t.Helper()
	for term, ls := range c.Leaders(ids...) {
		c.t.Fatalf("rafttest: expected no leader, but %v lead term %d", ls, term)
	}
}

// Terms returns the current term of every running node among ids.
func (c *Cluster) Terms(ids ...string) map[string]uint64 {
	if len(ids) == 0 {
		ids = c.live()
	}
	out := map[string]uint64{}
	for _, id := range ids {
		if n := c.Node(id); n != nil {
			out[id] = n.Status().Term
		}
	}
	return out
}

// CheckTerms waits for every running node among ids to agree on the term
// and returns it.
func (c *Cluster) CheckTerms(ids ...string) uint64 {
	c.t.Helper()
	var terms map[string]uint64
	for deadline := time.Now().Add(c.electionWait()); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		terms = c.Terms(ids...)
		var t uint64
		agree, first := true, true
		for _, v := range terms {
			if !first && v != t {
				agree = false
			}
			t, first = v, false
		}
		if agree {
			return t
		}
	}
	c.t.Fatalf("rafttest: nodes disagree on the term: %v", terms)
	return 0
}

// NCommitted returns how many nodes (of their current incarnations) have
// applied index, and the command there. Disagreement is recorded by the
// Checker.
func (c *Cluster) NCommitted(index uint64) (int, []byte) {
	count := 0
	var cmd []byte
	for _, id := range c.IDs() {
		if d, ok := c.FSM(id).Has(index); ok {
			if count > 0 && !bytes.Equal(d, cmd) {
				c.t.Fatalf("rafttest: index %d is %q on one node and %q on another", index, cmd, d)
			}
			count++
			cmd = d
		}
	}
	return count, cmd
}

// Propose submits cmd on node id, if it leads, without waiting. It returns
// the index it would take and whether id accepted it.
func (c *Cluster) Propose(id string, cmd []byte) (graft.ApplyResult, error) {
	n := c.Node(id)
	if n == nil {
		return graft.ApplyResult{}, graft.ErrShutdown
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*c.opts.ElectionTimeout)
	defer cancel()
	return n.Apply(ctx, cmd)
}

// One submits cmd until some leader commits it and at least expected nodes
// have applied it, like 6.824's one(): with retry, it tries again after a
// leader fails; without, a lost first attempt fails the test. It returns
// the index.
func (c *Cluster) One(cmd []byte, expected int, retry bool) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var index uint64
		for _, id := range c.live() {
			n := c.Node(id)
			if n == nil || !n.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			res, err := n.Apply(ctx, cmd)
			cancel()
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				index = res.Index
				break
			}
		}
		if index != 0 {
			for t0 := time.Now(); time.Since(t0) < 2*time.Second; time.Sleep(10 * time.Millisecond) {
				nd, got := c.NCommitted(index)
				if nd >= expected && bytes.Equal(got, cmd) {
					return index
				}
			}
			if !retry {
				c.t.Fatalf("rafttest: one(%q) failed to reach agreement on %d nodes", cmd, expected)
			}
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	c.t.Fatalf("rafttest: one(%q) failed to reach agreement on %d nodes in 10s", cmd, expected)
	return 0
}

// Wait waits until at least n nodes applied index, and returns the
// command; it gives up (returning nil) if some node moved past startTerm,
// since the entry may then never commit.
func (c *Cluster) Wait(index uint64, n int, startTerm uint64) []byte {
	c.t.Helper()
	to := 10 * time.Millisecond
	for iters := 0; iters < 60; iters++ {
		nd, _ := c.NCommitted(index)
		if nd >= n {
			break
		}
		time.Sleep(to)
		if to < time.Second {
			to *= 2
		}
		if startTerm > 0 {
			for _, t := range c.Terms() {
				if t > startTerm {
					return nil
				}
			}
		}
	}
	nd, cmd := c.NCommitted(index)
	if nd < n {
		c.t.Fatalf("rafttest: only %d nodes applied index %d, want %d", nd, index, n)
	}
	return cmd
}

// WaitFor polls cond until it holds or the timeout passes, then fails the
// test with what.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("rafttest: timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CheckConverged waits until every running node has applied the same
// entries up to the highest index any of them applied.
func (c *Cluster) CheckConverged(timeout time.Duration) {
	c.t.Helper()
	c.WaitFor(timeout, "all running nodes to apply the same entries", func() bool {
		var last uint64
		first := true
		for _, id := range c.live() {
			n := c.Node(id)
			if n == nil {
				continue
			}
			a := n.Status().AppliedIndex
			if !first && a != last {
				return false
			}
			last, first = a, false
		}
		return true
	})
}

// Close shuts every node down and fails the test on any safety violation
// the Checker saw.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	for _, id := range c.IDs() {
		if c.Up(id) {
			c.Stop(id)
		}
	}
	c.Net.Close()
	if err := c.Checker.Err(); err != nil {
		c.t.Errorf("rafttest: safety violation (seed %d): %v", c.Seed, err)
	}
}
