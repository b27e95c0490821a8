package graft

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/graft-raft/graft/internal/ballot"
	"github.com/graft-raft/graft/raftpb"
)

// readReq is a read waiting for the leader to confirm its leadership.
type readReq struct {
	index uint64 // commit index when the read arrived
	seq   uint64 // the heartbeat round that must confirm it
	done  chan error
}

// ReadIndex returns an index at which a linearizable read may be served,
// once this node has applied it, and waits until it has. On the leader it
// takes the commit index and confirms with a round of heartbeats that a
// quorum still follows it (concurrent reads share rounds); a follower asks
// the leader for that index. After ReadIndex returns, reading the local
// state machine observes every write acknowledged before ReadIndex was
// called.
//
// With Options.LeaseReads the leader skips the heartbeat round while its
// lease holds; see LeaseReads for the clock assumption this makes.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	idx, err := n.readIndex(ctx)
	if err != nil {
		return 0, err
	}
	if err := n.applier.waitApplied(ctx, idx); err != nil {
		return 0, err
	}
	return idx, nil
}

// readIndex obtains a confirmed read index, as leader or from the leader.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	n.mu.Lock()
	if n.mu.role == Leader {
		ch, idx, err := n.leaderReadLocked()
		n.mu.Unlock()
		if err != nil || ch == nil {
			return idx, err
		}
		select {
		case err := <-ch:
			return idx, err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if err := n.leaderCheckLocked(); !errors.Is(err, ErrNotLeader) {
		n.mu.Unlock()
		return 0, err
	}
	leader := n.mu.leader
	n.mu.Unlock()
	if leader.ID == "" || leader.Addr == "" {
		return 0, &NotLeaderError{}
	}
	resp, err := n.trans.ReadIndex(ctx, leader.Addr, &raftpb.ReadIndexRequest{GroupId: n.group, ServerId: n.id, PeerId: leader.ID})
	if err != nil {
		return 0, fmt.Errorf("graft: read index from leader %s: %w", leader.ID, err)
	}
	if !resp.Success {
		return 0, &NotLeaderError{LeaderID: resp.LeaderId}
	}
	return resp.Index, nil
}

// leaderReadLocked registers a read on the leader. It returns the read
// index and either a channel that confirms it, or nil if it is confirmed
// already.
func (n *Node) leaderReadLocked() (chan error, uint64, error) {
	if n.mu.commitIndex < n.mu.termStart {
		// Until the term's first entry commits, the commit index may lag
		// what earlier leaders committed (Raft §8).
		return nil, 0, fmt.Errorf("%w: the new leader has not committed an entry of its term yet", ErrBusy)
	}
	idx := n.mu.commitIndex
	c := n.lm.Configuration().Conf
	if len(c.Voters()) == 1 && c.IsVoter(n.id) {
		return nil, idx, nil
	}
	if n.opts.LeaseReads && n.mu.transferredTerm != n.mu.term && time.Now().Before(n.leaseExpiryLocked()) {
		return nil, idx, nil
	}
	r := &readReq{index: idx, seq: n.mu.readSeq + 1, done: make(chan error, 1)}
	n.mu.reads = append(n.mu.reads, r)
	if !n.mu.readInFlight {
		n.startReadRoundLocked()
	}
	return r.done, idx, nil
}

// startReadRoundLocked starts a heartbeat round; reads registered before
// it are confirmed once a quorum answers heartbeats sent in it.
func (n *Node) startReadRoundLocked() {
	n.mu.readSeq++
	n.mu.readInFlight = true
	for _, r := range n.mu.replicators {
		r.heartbeatNow()
	}
}

// confirmReadsLocked releases the reads that a quorum's heartbeat answers
// confirm.
func (n *Node) confirmReadsLocked() {
	if len(n.mu.reads) == 0 && !n.mu.readInFlight {
		return
	}
	c := n.lm.Configuration().Conf
	confirmed := ballot.CommittedIndex(c, func(id string) uint64 {
		if id == n.id {
			return n.mu.readSeq
		}
		if r := n.mu.replicators[id]; r != nil {
			return r.readAck
		}
		return 0
	})
	if confirmed >= n.mu.readSeq {
		n.mu.readInFlight = false
	}
	kept := n.mu.reads[:0]
	for _, r := range n.mu.reads {
		if r.seq <= confirmed {
			r.done <- nil
		} else {
			kept = append(kept, r)
		}
	}
	clear(n.mu.reads[len(kept):])
	n.mu.reads = kept
	if len(n.mu.reads) > 0 && !n.mu.readInFlight {
		n.startReadRoundLocked()
	}
}

// failReadsLocked fails every pending read (the leader stepped down).
func (n *Node) failReadsLocked(err error) {
	for _, r := range n.mu.reads {
		r.done <- err
	}
	clear(n.mu.reads)
	n.mu.reads = n.mu.reads[:0]
	n.mu.readInFlight = false
}

// leaseExpiryLocked returns when the leader's lease ends: an election
// timeout (less a margin for clock drift) after the send time of the
// heartbeat round that a quorum last answered. Followers refuse to vote
// for that long after hearing from the leader, so no other leader can
// exist before then, if clocks drift apart by less than the margin.
func (n *Node) leaseExpiryLocked() time.Time {
	c := n.lm.Configuration().Conf
	now := time.Now()
	// The quorum's oldest acknowledged send time, computed like a commit
	// index over nanoseconds.
	sent := ballot.CommittedIndex(c, func(id string) uint64 {
		if id == n.id {
			return uint64(now.UnixNano())
		}
		if r := n.mu.replicators[id]; r != nil && !r.ackSentAt.IsZero() {
			return uint64(r.ackSentAt.UnixNano())
		}
		return 0
	})
	if sent == 0 {
		return time.Time{}
	}
	lease := n.opts.ElectionTimeout * 9 / 10
	return time.Unix(0, int64(sent)).Add(lease)
}

// HandleReadIndex confirms a read index for a follower. It implements
// transport.Handler.
func (n *Node) HandleReadIndex(ctx context.Context, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error) {
	n.mu.Lock()
	if n.mu.role != Leader {
		resp := &raftpb.ReadIndexResponse{Term: n.mu.term, LeaderId: n.mu.leader.ID}
		n.mu.Unlock()
		return resp, nil
	}
	term := n.mu.term
	ch, idx, err := n.leaderReadLocked()
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if ch != nil {
		select {
		case err := <-ch:
			if err != nil {
				return &raftpb.ReadIndexResponse{Term: term}, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &raftpb.ReadIndexResponse{Term: term, Success: true, Index: idx}, nil
}
