package graft

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/graft-raft/graft/internal/ballot"
	"github.com/graft-raft/graft/raftpb"
)

// campaignLocked starts a pre-vote (preVote) or a real election. A real
// election increments and persists the term and votes for itself first.
// transfer marks an election started by TimeoutNow, which voters must not
// refuse for having a live leader.
func (n *Node) campaignLocked(now time.Time, preVote, transfer bool) {
	n.resetElectionDeadlineLocked(now)
	ce := n.lm.Configuration()
	c := ce.Conf
	if !c.IsVoter(n.id) {
		return // learners, removed nodes and nodes not yet configured never campaign
	}
	if n.installingLocked() {
		return // no elections while a snapshot is being installed
	}
	term := n.mu.term + 1
	if !preVote {
		n.stopLeadingLocked(ErrLeadershipLost)
		if n.mu.leader.ID != "" {
			n.applier.event(task{kind: taskStopFollowing, peer: n.mu.leader, term: n.mu.term})
		}
		n.mu.role = Candidate
		n.mu.term = term
		n.mu.votedFor = n.id
		n.mu.leader = Peer{}
		if !n.persistLocked() {
			return
		}
		n.log.Info("starting election", "term", term, "transfer", transfer)
	} else {
		n.log.Debug("starting pre-vote", "term", term)
	}
	n.mu.electionRound++
	round := n.mu.electionRound
	n.mu.preVote = preVote
	n.mu.votes = ballot.NewTally(c)
	n.mu.votes.Record(n.id, true)
	if n.mu.votes.Result() == ballot.Won {
		n.electionWonLocked(now)
		return
	}
	lastIndex, lastTerm := n.lm.LastLogID()
	for _, p := range c.Voters() {
		if p.ID == n.id {
			continue
		}
		req := &raftpb.RequestVoteRequest{
			GroupId: n.group, ServerId: n.id, PeerId: p.ID, Term: term,
			LastLogIndex: lastIndex, LastLogTerm: lastTerm,
			PreVote: preVote, LeadershipTransfer: transfer,
		}
		addr := p.Addr
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, n.opts.ElectionTimeout)
			defer cancel()
			resp, err := n.trans.RequestVote(ctx, addr, req)
			if err != nil {
				n.log.Debug("vote request failed", "to", req.PeerId, "err", err)
				return
			}
			n.onVoteResponse(round, req.PeerId, resp)
		}()
	}
}

func (n *Node) onVoteResponse(round uint64, from string, resp *raftpb.RequestVoteResponse) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if round != n.mu.electionRound || n.mu.votes == nil || n.mu.role == Shutdown {
		return
	}
	now := time.Now()
	if resp.Term > n.mu.term && !resp.Granted && validTerm(resp.Term) {
		n.stepDownLocked(resp.Term, now)
		return
	}
	n.mu.votes.Record(from, resp.Granted)
	switch n.mu.votes.Result() {
	case ballot.Won:
		n.electionWonLocked(now)
	case ballot.Lost:
		n.mu.votes = nil
	}
}

func (n *Node) electionWonLocked(now time.Time) {
	n.mu.votes = nil
	if n.mu.preVote {
		n.campaignLocked(now, false, false)
		return
	}
	n.becomeLeaderLocked(now)
}

// becomeLeaderLocked takes leadership of the current term: it starts a
// replicator per peer and appends the configuration in force as the term's
// first entry, which commits every entry of earlier terms once a quorum
// has it (and serves as the no-op of Raft §8).
func (n *Node) becomeLeaderLocked(now time.Time) {
	n.mu.role = Leader
	ce := n.lm.Configuration()
	n.mu.leader = n.selfPeer(ce.Conf)
	n.mu.selfMatch = 0
	n.mu.leaderStarted = false
	n.mu.quorumCheck = now
	n.log.Info("became leader", "term", n.mu.term, "conf", ce.Conf.String())
	e := &raftpb.Entry{Term: n.mu.term, Index: n.lm.LastIndex() + 1, Type: raftpb.EntryType_ENTRY_TYPE_CONFIGURATION, Data: ce.Conf.Encode()}
	n.mu.termStart = e.Index
	if err := n.appendLocked([]*raftpb.Entry{e}); err != nil {
		n.log.Error("cannot append the term's first entry", "err", err)
		n.stepDownLocked(n.mu.term, now)
		return
	}
	n.syncReplicatorsLocked(now)
}

// syncReplicatorsLocked starts a replicator for every member of the
// configuration in force that has none, and stops those of peers no longer
// in it.
func (n *Node) syncReplicatorsLocked(now time.Time) {
	want := map[string]bool{}
	for _, p := range n.replicationTargetsLocked() {
		if p.ID == n.id {
			continue
		}
		want[p.ID] = true
		if _, ok := n.mu.replicators[p.ID]; !ok {
			r := newReplicator(n, p, n.mu.term, now)
			n.mu.replicators[p.ID] = r
			r.start()
		}
	}
	for id, r := range n.mu.replicators {
		if !want[id] {
			r.stop()
			delete(n.mu.replicators, id)
		}
	}
}

// replicationTargetsLocked returns the peers the leader replicates to: the
// members of the configuration in force and the newcomers of a membership
// change in progress.
func (n *Node) replicationTargetsLocked() []Peer {
	ps := n.lm.Configuration().Conf.Members()
	if n.mu.change != nil {
		for _, p := range n.mu.change.catchingUp {
			if !slices.ContainsFunc(ps, func(q Peer) bool { return q.ID == p.ID }) {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// maxTerm is the largest term a node accepts from a peer. Terms are
// uint64 on the wire, so a peer that sends a negative int64 (-1) sends a
// term of 2^64-1: adopting one would make it durable and leave the node a
// term it cannot increment. No real cluster gets near 2^63 elections.
const maxTerm = math.MaxInt64

// validTerm reports whether a term from a peer is one to act on.
func validTerm(t uint64) bool { return t != 0 && t <= maxTerm }

// HandleRequestVote answers a (pre-)vote request. It implements
// transport.Handler.
func (n *Node) HandleRequestVote(_ context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role == Shutdown {
		return nil, ErrShutdown
	}
	if !validTerm(req.Term) || req.ServerId == "" || req.ServerId == n.id {
		return nil, fmt.Errorf("graft: malformed RequestVote: term %d from %q", req.Term, req.ServerId)
	}
	now := time.Now()
	refuse := func(reason string) (*raftpb.RequestVoteResponse, error) {
		return &raftpb.RequestVoteResponse{Term: n.mu.term, Reason: reason}, nil
	}
	lastIndex, lastTerm := n.lm.LastLogID()
	upToDate := req.LastLogTerm > lastTerm || (req.LastLogTerm == lastTerm && req.LastLogIndex >= lastIndex)
	// A node that hears from a live leader (or is one) refuses to help
	// unseat it, unless the leader itself asked for the election.
	inLease := !req.LeadershipTransfer && (n.mu.role == Leader ||
		(n.mu.leader.ID != "" && now.Sub(n.mu.leaderContact) < n.opts.ElectionTimeout))
	if req.PreVote {
		switch {
		case req.Term <= n.mu.term:
			return refuse("stale term")
		case inLease:
			return refuse("leader is alive")
		case !upToDate:
			return refuse("log not up to date")
		}
		return &raftpb.RequestVoteResponse{Term: n.mu.term, Granted: true}, nil
	}
	if req.Term < n.mu.term {
		return refuse("stale term")
	}
	if inLease {
		return refuse("leader is alive")
	}
	if req.Term > n.mu.term {
		n.stepDownLocked(req.Term, now)
		if n.mu.role == Shutdown {
			return nil, n.mu.fatal
		}
	}
	if n.mu.votedFor != "" && n.mu.votedFor != req.ServerId {
		return refuse("already voted for " + n.mu.votedFor)
	}
	if !upToDate {
		return refuse("log not up to date")
	}
	if n.mu.votedFor == "" {
		n.mu.votedFor = req.ServerId
		if !n.persistLocked() {
			return nil, n.mu.fatal
		}
	}
	n.resetElectionDeadlineLocked(now)
	return &raftpb.RequestVoteResponse{Term: n.mu.term, Granted: true}, nil
}

// HandleTimeoutNow starts an election at once, at the leader's request
// (leadership transfer). It implements transport.Handler.
func (n *Node) HandleTimeoutNow(_ context.Context, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role == Shutdown {
		return nil, ErrShutdown
	}
	if req.Term != n.mu.term || n.mu.role != Follower || n.mu.snap.restore > 0 {
		return &raftpb.TimeoutNowResponse{Term: n.mu.term}, nil
	}
	n.log.Info("election requested by the leader", "leader", req.ServerId, "term", req.Term)
	n.campaignLocked(time.Now(), false, true)
	return &raftpb.TimeoutNowResponse{Term: n.mu.term, Success: n.mu.role != Follower}, nil
}
