package graft

import (
	"errors"
	"fmt"
	"time"

	"github.com/graft-raft/graft/internal/logmanager"
	"github.com/graft-raft/graft/raftpb"
)

// HandleAppendEntries handles replication and heartbeats from the leader.
// done runs once the response is ready: for entries, once they are
// durable. It implements transport.Handler.
func (n *Node) HandleAppendEntries(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
	resp, wait, err := n.appendEntries(req, done)
	if !wait {
		done(resp, err)
	}
}

// appendEntries does the work of HandleAppendEntries under the lock. When
// it returns wait, done will be called by the log manager once durable.
func (n *Node) appendEntries(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) (*raftpb.AppendEntriesResponse, bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role == Shutdown {
		return nil, false, ErrShutdown
	}
	if !validTerm(req.Term) || req.ServerId == "" || req.ServerId == n.id {
		return nil, false, fmt.Errorf("graft: malformed AppendEntries: term %d from %q", req.Term, req.ServerId)
	}
	if err := checkEntries(req); err != nil {
		return nil, false, err
	}
	if req.Term < n.mu.term {
		return &raftpb.AppendEntriesResponse{Term: n.mu.term, LastLogIndex: n.lm.LastIndex()}, false, nil
	}
	now := time.Now()
	if req.Term > n.mu.term || n.mu.role != Follower {
		n.stepDownLocked(req.Term, now)
		if n.mu.role == Shutdown {
			return nil, false, n.mu.fatal
		}
	}
	n.noteLeaderLocked(req.ServerId, now)
	term := n.mu.term
	need := n.mu.snap.restore // asked for in every answer until a snapshot arrives

	if n.installingLocked() && len(req.Entries) > 0 {
		return &raftpb.AppendEntriesResponse{Term: term, Busy: true, LastLogIndex: n.lm.LastIndex(), NeedSnapshot: need}, false, nil
	}
	prev := req.PrevLogIndex
	lastIndex := n.lm.LastIndex()
	if prev > lastIndex {
		return &raftpb.AppendEntriesResponse{Term: term, LastLogIndex: lastIndex, NeedSnapshot: need}, false, nil
	}
	if local, err := n.lm.Term(prev); err == nil {
		if local != req.PrevLogTerm {
			return &raftpb.AppendEntriesResponse{
				Term: term, LastLogIndex: lastIndex,
				ConflictTerm: local, ConflictIndex: n.firstIndexOfTermLocked(prev, local),
				NeedSnapshot: need,
			}, false, nil
		}
	} else if !errors.Is(err, logmanager.ErrCompacted) {
		// A compacted prev is covered by our snapshot, hence committed and
		// matching; anything else is a storage failure.
		return nil, false, err
	}
	matched := prev + uint64(len(req.Entries))
	ok := &raftpb.AppendEntriesResponse{Term: term, Success: true, LastLogIndex: matched, NeedSnapshot: need}
	if len(req.Entries) == 0 && prev <= n.lm.DurableIndex() {
		n.setCommitLocked(min(req.CommittedIndex, matched))
		return ok, false, nil
	}
	err := n.lm.AppendFollower(req.Entries, n.mu.commitIndex, func(err error) {
		if err != nil {
			n.fail(err)
			done(nil, err)
			return
		}
		done(ok, nil)
	})
	if err != nil {
		return nil, false, err
	}
	n.setCommitLocked(min(req.CommittedIndex, matched))
	return nil, true, nil
}

// checkEntries rejects a request whose entries are not contiguous after
// prev_log_index.
func checkEntries(req *raftpb.AppendEntriesRequest) error {
	want := req.PrevLogIndex + 1
	for _, e := range req.Entries {
		if e == nil || e.Index != want || e.Term == 0 || e.Term > req.Term {
			return errMalformed
		}
		want++
	}
	return nil
}

var errMalformed = errors.New("graft: malformed AppendEntries: entries must follow prev_log_index contiguously with terms in (0, term]")

// firstIndexOfTermLocked returns the first index of the run of entries of
// term that ends at idx, looking no further back than the commit index
// (committed entries match the leader's).
func (n *Node) firstIndexOfTermLocked(idx, term uint64) uint64 {
	floor := max(n.mu.commitIndex+1, n.lm.FirstIndex(), 1)
	for idx > floor {
		t, err := n.lm.Term(idx - 1)
		if err != nil || t != term {
			break
		}
		idx--
	}
	return idx
}

// noteLeaderLocked records a message from the leader of the current term.
func (n *Node) noteLeaderLocked(id string, now time.Time) {
	if n.mu.leader.ID != id {
		if n.mu.leader.ID != "" {
			n.applier.event(task{kind: taskStopFollowing, peer: n.mu.leader, term: n.mu.term})
		}
		p, ok := n.lm.Configuration().Conf.Lookup(id)
		if !ok {
			p = Peer{ID: id}
		}
		n.mu.leader = p
		n.log.Info("following leader", "leader", id, "term", n.mu.term)
		n.applier.event(task{kind: taskStartFollowing, peer: p, term: n.mu.term})
	}
	n.mu.leaderContact = now
	n.resetElectionDeadlineLocked(now)
}

// installingLocked reports whether a snapshot is being downloaded or
// loaded.
func (n *Node) installingLocked() bool {
	st := n.mu.snap.state
	return st == SnapshotDownloading || st == SnapshotLoading
}
