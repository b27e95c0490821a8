package graft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/graft-raft/graft/internal/ballot"
	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/internal/logmanager"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/transport"
)

// Role is a node's part in its group.
type Role int

// Roles.
const (
	Follower Role = iota
	Candidate
	Leader
	// Shutdown is the role of a node after Shutdown, or after a fatal error.
	Shutdown
)

// String names the role.
func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	}
	return "shutdown"
}

// ApplyResult is what Apply returns for a committed and applied entry.
type ApplyResult struct {
	Index  uint64
	Term   uint64
	Result any // set by the state machine with Iterator.SetResult
}

// Node is one peer of one raft group. Create it with NewNode; it runs
// until Shutdown. All methods are safe for concurrent use.
type Node struct {
	opts    Options
	group   string
	id      string
	log     *slog.Logger
	lm      *logmanager.Manager
	meta    storage.MetaStorage
	trans   transport.Transport
	applier *applier

	// mu guards the node's raft state below. Lock order: mu, then the
	// applier's lock, then the log manager's.
	mu struct {
		sync.Mutex
		role             Role
		term             uint64
		votedFor         string
		leader           Peer // zero when unknown
		commitIndex      uint64
		electionDeadline time.Time
		leaderContact    time.Time // last time a leader of term was heard
		electionRound    uint64    // bumped to abandon an election in flight
		votes            *ballot.Tally
		preVote          bool
		replicators      map[string]*replicator
		selfMatch        uint64 // leader: durable index of its own log this term
		termStart        uint64 // leader: index of its first entry this term
		leaderStarted    bool
		quorumCheck      time.Time
		commitCh         chan struct{} // closed and replaced when commitIndex moves
		fatal            error
		snap             snapState
		change           *confChange // membership change in progress
		transfer         string      // leadership transfer target
		transferredTerm  uint64      // leader: a transfer began in this term, so no lease reads in it
		reads            []*readReq  // reads waiting for a heartbeat round
		readSeq          uint64      // last heartbeat round started for reads
		readInFlight     bool
	}

	proposals proposalQueue

	stop     chan struct{}
	ctx      context.Context // cancelled by Shutdown; ends RPCs in flight
	cancel   context.CancelFunc
	stopOnce sync.Once
	wg       sync.WaitGroup
	rng      struct {
		sync.Mutex
		r *rand.Rand
	}
}

// NewNode starts a node with opts. The node owns opts.LogStorage,
// opts.MetaStorage and opts.Snapshots from now on and closes them on
// Shutdown, or before NewNode returns an error.
func NewNode(opts Options) (n *Node, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var lm *logmanager.Manager
	defer func() {
		if err == nil {
			return
		}
		if lm != nil {
			lm.Close() // closes opts.LogStorage
		} else {
			opts.LogStorage.Close()
		}
		opts.MetaStorage.Close()
		if opts.Snapshots != nil {
			opts.Snapshots.Close()
		}
	}()
	opts.InitialPeers = append([]Peer(nil), opts.InitialPeers...)
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("group", opts.GroupID, "peer", opts.ID)
	term, votedFor, err := opts.MetaStorage.Load()
	if err != nil {
		return nil, fmt.Errorf("graft: loading term and vote: %w", err)
	}
	lm, err = logmanager.New(logmanager.Options{Storage: opts.LogStorage, CacheEntries: opts.LogCacheEntries, Logger: logger})
	if err != nil {
		lm = nil
		return nil, fmt.Errorf("graft: opening log: %w", err)
	}
	if term == 0 && (lm.LastIndex() > 0 || snapshotIndex(opts) > 0) {
		// Entries are only ever written after their term was saved: a log
		// without a term means the term-and-vote file was lost, and with it
		// the vote this node may already have cast in its last term.
		return nil, fmt.Errorf("graft: the log holds entries (last index %d) but no term or vote was found: %w",
			lm.LastIndex(), storage.ErrCorrupt)
	}
	if lm.Configuration().Conf.IsEmpty() && lm.LastIndex() == 0 && len(opts.InitialPeers) > 0 {
		lm.SetInitialConfiguration(Configuration{Peers: opts.InitialPeers})
	}
	n = &Node{
		opts:  opts,
		group: opts.GroupID,
		id:    opts.ID,
		log:   logger,
		lm:    lm,
		meta:  opts.MetaStorage,
		trans: opts.Transport,
		stop:  make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.proposals.wake = make(chan struct{}, 1)
	n.rng.r = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) // election jitter: any seed will do
	n.mu.term = term
	n.mu.votedFor = votedFor
	n.mu.replicators = make(map[string]*replicator)
	n.mu.commitCh = make(chan struct{})
	n.applier = newApplier(n)
	if err := n.loadSnapshotAtStartup(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	now := time.Now()
	n.resetElectionDeadlineLocked(now)
	if iv := opts.SnapshotInterval; iv > 0 {
		n.rng.Lock()
		n.mu.snap.nextAuto = now.Add(iv/2 + time.Duration(n.rng.r.Int64N(int64(iv))))
		n.rng.Unlock()
	}
	n.mu.Unlock()
	if opts.Router != nil {
		if err := opts.Router.Register(opts.GroupID, opts.ID, n); err != nil {
			return nil, err
		}
	}
	n.log.Info("node started", "term", term, "first_index", lm.FirstIndex(), "last_index", lm.LastIndex(),
		"conf", lm.Configuration().Conf.String())
	n.wg.Add(3)
	go n.applier.run()
	go n.tickLoop()
	go n.proposeLoop()
	return n, nil
}

// snapshotIndex returns the index of the newest local snapshot, 0 if none.
func snapshotIndex(opts Options) uint64 {
	if opts.Snapshots == nil {
		return 0
	}
	idx, _ := opts.Snapshots.LastIndex()
	return idx
}

// ID returns the node's peer id.
func (n *Node) ID() string { return n.id }

// GroupID returns the node's group id.
func (n *Node) GroupID() string { return n.group }

// Apply proposes data as a new log entry and waits until it is committed
// and applied to this node's state machine, returning its index, term and
// the state machine's result. Only the leader accepts proposals; others
// return a *NotLeaderError. If ctx ends first, Apply returns ctx's error
// and the entry may still commit. The caller must not modify data after
// the call.
func (n *Node) Apply(ctx context.Context, data []byte) (ApplyResult, error) {
	f, err := n.propose(raftpb.EntryType_ENTRY_TYPE_NORMAL, data)
	if err != nil {
		return ApplyResult{}, err
	}
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		return ApplyResult{}, ctx.Err()
	}
}

// propose queues a new entry for the proposal loop, which appends queued
// proposals in batches. The future completes when the entry is applied, or
// with the reason it was not appended (not the leader, shutting down).
func (n *Node) propose(typ raftpb.EntryType, data []byte) (*future, error) {
	if len(data) > n.opts.MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes > MaxEntrySize %d", ErrTooLarge, len(data), n.opts.MaxEntrySize)
	}
	f := newFuture(0, 0)
	f.entry = &raftpb.Entry{Type: typ, Data: data}
	q := &n.proposals
	q.Lock()
	if q.closed {
		q.Unlock()
		return nil, ErrShutdown
	}
	q.items = append(q.items, f)
	if q.draining {
		q.Unlock()
		q.signal()
		return f, nil
	}
	// Nobody is appending: append what is queued on this goroutine rather
	// than hand it to the loop (one goroutine switch less per proposal
	// when the load is light); the loop takes over what arrives meanwhile.
	q.draining = true
	batch := q.items
	q.items = nil
	q.Unlock()
	n.appendProposals(batch)
	q.Lock()
	q.draining = false
	more := len(q.items) > 0
	q.Unlock()
	if more {
		q.signal()
	}
	return f, nil
}

func (q *proposalQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// proposalQueue holds proposals waiting to be appended.
type proposalQueue struct {
	sync.Mutex
	items    []*future
	draining bool // a goroutine is appending a batch
	closed   bool
	wake     chan struct{}
}

// proposeLoop appends queued proposals: every proposal that arrived since
// the last round goes into the log under one lock, as one write, with one
// wake-up of the replicators (braft's apply queue).
func (n *Node) proposeLoop() {
	defer n.wg.Done()
	q := &n.proposals
	for {
		var batch []*future
		select {
		case <-q.wake:
		case <-n.stop:
			q.Lock()
			q.closed = true
			batch, q.items = q.items, nil
			q.Unlock()
			for _, f := range batch {
				f.complete(ErrShutdown)
			}
			return
		}
		for {
			q.Lock()
			if q.draining || len(q.items) == 0 {
				q.Unlock()
				break
			}
			q.draining = true
			batch, q.items = q.items, nil
			q.Unlock()
			n.appendProposals(batch)
			q.Lock()
			q.draining = false
			q.Unlock()
		}
	}
}

// appendProposals appends one batch of proposals as the leader.
func (n *Node) appendProposals(batch []*future) {
	var rejected []*future
	var rejectErr error
	n.mu.Lock()
	err := n.leaderCheckLocked()
	entries := make([]*raftpb.Entry, 0, len(batch))
	next := n.lm.LastIndex() + 1
	for _, f := range batch {
		e := f.entry
		f.entry = nil
		if err == nil && n.mu.transfer != "" && e.Type == raftpb.EntryType_ENTRY_TYPE_NORMAL {
			rejected = append(rejected, f)
			rejectErr = fmt.Errorf("%w: leadership is being transferred to %s", ErrBusy, n.mu.transfer)
			continue
		}
		if err != nil {
			continue
		}
		e.Term, e.Index = n.mu.term, next
		f.index, f.term = next, n.mu.term
		next++
		entries = append(entries, e)
	}
	if err == nil && len(entries) > 0 {
		n.applier.registerAll(batch, entries[0].Index)
		if aerr := n.appendLocked(entries); aerr != nil {
			n.applier.failAll(aerr) // completes the futures just registered
		}
	}
	n.mu.Unlock()
	if err != nil {
		for _, f := range batch {
			f.complete(err)
		}
		return
	}
	for _, f := range rejected {
		f.complete(rejectErr)
	}
}

func (n *Node) leaderCheckLocked() error {
	switch {
	case n.mu.role == Shutdown:
		if n.mu.fatal != nil {
			return n.mu.fatal
		}
		return ErrShutdown
	case n.mu.role != Leader:
		return &NotLeaderError{LeaderID: n.mu.leader.ID, LeaderAddr: n.mu.leader.Addr}
	}
	return nil
}

// appendLocked appends entries of the leader's current term; their durable
// write counts as the leader's own ack.
func (n *Node) appendLocked(entries []*raftpb.Entry) error {
	term, idx := entries[0].Term, entries[len(entries)-1].Index
	return n.lm.Append(entries, func(err error) {
		if err != nil {
			n.fail(err)
			return
		}
		n.mu.Lock()
		if n.mu.role == Leader && n.mu.term == term && idx > n.mu.selfMatch {
			n.mu.selfMatch = idx
			n.maybeCommitLocked()
		}
		n.mu.Unlock()
	})
}

// maybeCommitLocked advances the leader's commit index to what a quorum of
// the configuration in force has stored, for entries of its own term.
func (n *Node) maybeCommitLocked() {
	c := n.lm.Configuration().Conf
	idx := ballot.CommittedIndex(c, func(id string) uint64 {
		if id == n.id {
			return n.mu.selfMatch
		}
		if r := n.mu.replicators[id]; r != nil {
			return r.matchIndex
		}
		return 0
	})
	if idx <= n.mu.commitIndex {
		return
	}
	if t, err := n.lm.Term(idx); err != nil || t != n.mu.term {
		return // Raft §5.4.2: only count entries of the current term
	}
	n.setCommitLocked(idx)
}

func (n *Node) setCommitLocked(idx uint64) {
	if idx <= n.mu.commitIndex || n.mu.snap.restore > 0 {
		return // nothing to apply on until a snapshot replaces the damaged one
	}
	n.mu.commitIndex = idx
	close(n.mu.commitCh)
	n.mu.commitCh = make(chan struct{})
	n.applier.commit(idx)
	if n.mu.role == Leader && !n.mu.leaderStarted && idx >= n.mu.termStart {
		n.mu.leaderStarted = true
		n.applier.event(task{kind: taskLeaderStart, term: n.mu.term})
	}
}

// fail stops the node after an unrecoverable error (storage or state
// machine failure). It must not be called with n.mu held.
func (n *Node) fail(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role == Shutdown {
		return
	}
	n.log.Error("node stopping after fatal error", "err", err)
	n.stopLeadingLocked(fmt.Errorf("%w: %v", ErrLeadershipLost, err))
	n.mu.role = Shutdown
	n.mu.fatal = err
	n.applier.event(task{kind: taskError, err: err})
}

// Shutdown stops the node: it stops leading, finishes applying the
// entries already committed, waits for a snapshot the state machine is
// saving to call back, closes its storage and unregisters from the
// Router. Pending Apply calls fail. It is safe to call more than once.
func (n *Node) Shutdown() error {
	var err error
	n.stopOnce.Do(func() {
		n.mu.Lock()
		n.stopLeadingLocked(ErrShutdown)
		n.interruptDownloadLocked()
		if n.mu.role != Shutdown {
			n.mu.role = Shutdown
		}
		n.mu.electionRound++
		n.mu.Unlock()
		close(n.stop)
		n.cancel()
		if n.opts.Router != nil {
			n.opts.Router.Unregister(n.group, n.id)
		}
		n.applier.close()
		n.wg.Wait()
		n.applier.failAll(ErrShutdown)
		err = errors.Join(n.lm.Close(), n.meta.Close())
		if n.opts.Snapshots != nil {
			err = errors.Join(err, n.opts.Snapshots.Close())
		}
		n.log.Info("node shut down")
	})
	return err
}

// stopLeadingLocked ends this node's leadership, if it leads: replicators
// stop, pending proposals fail with cause.
func (n *Node) stopLeadingLocked(cause error) {
	if n.mu.role != Leader {
		return
	}
	for id, r := range n.mu.replicators {
		r.stop()
		delete(n.mu.replicators, id)
	}
	n.applier.failAll(cause)
	n.failReadsLocked(&NotLeaderError{})
	n.mu.transfer = ""
	n.applier.event(task{kind: taskLeaderStop, term: n.mu.term})
	n.mu.role = Follower
	n.mu.leader = Peer{}
}

// stepDownLocked makes the node a follower in term (persisting a new term)
// and abandons any election in flight.
func (n *Node) stepDownLocked(term uint64, now time.Time) {
	if n.mu.role == Shutdown {
		return
	}
	n.stopLeadingLocked(ErrLeadershipLost)
	n.mu.role = Follower
	n.mu.electionRound++
	n.mu.votes = nil
	if term > n.mu.term {
		n.interruptDownloadLocked()
		if n.mu.leader.ID != "" {
			n.applier.event(task{kind: taskStopFollowing, peer: n.mu.leader, term: n.mu.term})
			n.mu.leader = Peer{}
		}
		n.mu.term = term
		n.mu.votedFor = ""
		n.persistLocked()
	}
	n.resetElectionDeadlineLocked(now)
}

// persistLocked makes the term and vote durable; failure is fatal.
func (n *Node) persistLocked() bool {
	if err := n.meta.Save(n.mu.term, n.mu.votedFor); err != nil {
		err = fmt.Errorf("graft: saving term and vote: %w", err)
		n.log.Error("node stopping after fatal error", "err", err)
		n.stopLeadingLocked(ErrLeadershipLost)
		n.mu.role = Shutdown
		n.mu.fatal = err
		n.applier.event(task{kind: taskError, err: err})
		return false
	}
	return true
}

func (n *Node) resetElectionDeadlineLocked(now time.Time) {
	n.rng.Lock()
	jitter := time.Duration(n.rng.r.Int64N(int64(n.opts.ElectionTimeout)))
	n.rng.Unlock()
	n.mu.electionDeadline = now.Add(n.opts.ElectionTimeout + jitter)
}

// tickLoop drives the node's timers: election timeouts for followers and
// candidates, check-quorum for leaders.
func (n *Node) tickLoop() {
	defer n.wg.Done()
	t := time.NewTicker(max(n.opts.HeartbeatInterval/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case now := <-t.C:
			n.tick(now)
		}
	}
}

func (n *Node) tick(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.maybeAutoSnapshotLocked(now)
	switch n.mu.role {
	case Follower, Candidate:
		if n.mu.snap.restore > 0 {
			// Without its state machine's base this node cannot lead.
			n.resetElectionDeadlineLocked(now)
			break
		}
		if now.After(n.mu.electionDeadline) {
			n.campaignLocked(now, n.opts.PreVote, false)
		}
	case Leader:
		if n.opts.CheckQuorum && now.Sub(n.mu.quorumCheck) >= n.opts.ElectionTimeout {
			n.mu.quorumCheck = now
			c := n.lm.Configuration().Conf
			ok := ballot.HasQuorum(c, func(id string) bool {
				if id == n.id {
					return true
				}
				r := n.mu.replicators[id]
				return r != nil && now.Sub(r.lastContact) < n.opts.ElectionTimeout
			})
			if !ok {
				n.log.Warn("stepping down: no quorum heard from within the election timeout", "term", n.mu.term)
				n.stepDownLocked(n.mu.term, now)
			}
		}
	}
}

// Status is a point-in-time view of a node.
type Status struct {
	GroupID      string
	ID           string
	Role         Role
	Term         uint64
	Leader       Peer
	CommitIndex  uint64
	AppliedIndex uint64
	FirstIndex   uint64
	LastIndex    uint64
	// Configuration in force, and the log index that set it.
	Configuration      Configuration
	ConfigurationIndex uint64
	// Followers is the leader's view of each follower's replication.
	Followers []FollowerStatus
	// Snapshot is the snapshot executor's state.
	Snapshot SnapshotStatus
	// ChangingPeers reports a membership change in progress (leader).
	ChangingPeers bool
	// TransferringTo names the target of a leadership transfer in
	// progress (leader).
	TransferringTo string
	// Err is the fatal error that stopped the node, if any.
	Err error
}

// FollowerStatus is the leader's view of one follower.
type FollowerStatus struct {
	Peer       Peer
	MatchIndex uint64
	NextIndex  uint64
	// LastContact is when the follower last answered.
	LastContact time.Time
}

// Status returns the node's current state.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	ce := n.lm.Configuration()
	s := Status{
		GroupID:            n.group,
		ID:                 n.id,
		Role:               n.mu.role,
		Term:               n.mu.term,
		Leader:             n.mu.leader,
		CommitIndex:        n.mu.commitIndex,
		AppliedIndex:       n.applier.applied(),
		FirstIndex:         n.lm.FirstIndex(),
		LastIndex:          n.lm.LastIndex(),
		Configuration:      ce.Conf.Clone(),
		ConfigurationIndex: ce.Index,
		Snapshot:           n.snapshotStatusLocked(),
		ChangingPeers:      n.mu.change != nil,
		TransferringTo:     n.mu.transfer,
		Err:                n.mu.fatal,
	}
	for _, p := range n.replicationTargetsLocked() {
		if r := n.mu.replicators[p.ID]; r != nil {
			s.Followers = append(s.Followers, FollowerStatus{Peer: r.peer, MatchIndex: r.matchIndex, NextIndex: r.nextIndex, LastContact: r.lastContact})
		}
	}
	return s
}

// IsLeader reports whether the node currently believes it leads.
func (n *Node) IsLeader() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.role == Leader
}

// Leader returns the leader this node knows of, if any.
func (n *Node) Leader() (Peer, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.leader, n.mu.leader.ID != ""
}

// selfPeer returns this node's entry in the configuration in force.
func (n *Node) selfPeer(c conf.Configuration) Peer {
	if p, ok := c.Lookup(n.id); ok {
		return p
	}
	return Peer{ID: n.id}
}
