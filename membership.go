package graft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/raftpb"
)

// Membership errors.
var (
	// ErrTransferFailed reports a leadership transfer whose target did not
	// win within an election timeout; the old leader resumes.
	ErrTransferFailed = errors.New("graft: leadership transfer failed")
	// ErrCatchUpTimeout reports new peers that did not catch up with the
	// leader's log before the change's context ended.
	ErrCatchUpTimeout = errors.New("graft: new peers did not catch up")
	// ErrInvalidChange reports a membership change that cannot be made:
	// adding a voter that already is one, removing a peer that is not a
	// member, or a target configuration that is not valid.
	ErrInvalidChange = errors.New("graft: invalid membership change")
)

// confChange is a membership change in progress on the leader.
type confChange struct {
	catchingUp []Peer // new members replicated to before they join
}

// ChangePeers replaces the group's voters with peers and its learners with
// learners (nil keeps none). It runs in stages: new members first receive
// the log (or a snapshot) until they are within Options.CatchUpMargin
// entries of the leader; then the group runs in the joint configuration,
// where every decision needs a quorum of the old voters and of the new;
// then in the new configuration alone. A configuration is in force as soon
// as it is appended. Only the leader accepts a change, and one at a time
// (ErrBusy). A leader that is not among the new voters steps down once the
// change commits. ChangePeers returns when the new configuration is
// committed.
func (n *Node) ChangePeers(ctx context.Context, peers []Peer, learners ...Peer) error {
	target := Configuration{Peers: slices.Clone(peers), Learners: slices.Clone(learners)}
	return n.changeConfiguration(ctx, func(Configuration) (Configuration, error) { return target, nil }, true)
}

// AddPeer adds one voter (promoting it if it is a learner). A single-voter
// change skips the joint stage.
func (n *Node) AddPeer(ctx context.Context, p Peer) error {
	return n.changeConfiguration(ctx, func(cur Configuration) (Configuration, error) {
		if slices.ContainsFunc(cur.Peers, func(q Peer) bool { return q.ID == p.ID }) {
			return Configuration{}, fmt.Errorf("%w: %s is already a voter", ErrInvalidChange, p.ID)
		}
		next := cur.Clone()
		next.Learners = slices.DeleteFunc(next.Learners, func(q Peer) bool { return q.ID == p.ID })
		next.Peers = append(next.Peers, p)
		return next, nil
	}, false)
}

// RemovePeer removes one voter or learner. A single-voter change skips the
// joint stage.
func (n *Node) RemovePeer(ctx context.Context, id string) error {
	return n.changeConfiguration(ctx, func(cur Configuration) (Configuration, error) {
		if !cur.Contains(id) {
			return Configuration{}, fmt.Errorf("%w: %s is not a member", ErrInvalidChange, id)
		}
		next := cur.Clone()
		next.Peers = slices.DeleteFunc(next.Peers, func(q Peer) bool { return q.ID == id })
		next.Learners = slices.DeleteFunc(next.Learners, func(q Peer) bool { return q.ID == id })
		return next, nil
	}, false)
}

// AddLearner adds a non-voting member: it receives the log and snapshots
// but never votes, never counts toward a quorum and never campaigns.
// Promote it with AddPeer or ChangePeers.
func (n *Node) AddLearner(ctx context.Context, p Peer) error {
	return n.changeConfiguration(ctx, func(cur Configuration) (Configuration, error) {
		if cur.Contains(p.ID) {
			return Configuration{}, fmt.Errorf("%w: %s is already a member", ErrInvalidChange, p.ID)
		}
		next := cur.Clone()
		next.Learners = append(next.Learners, p)
		return next, nil
	}, false)
}

// changeConfiguration drives a membership change on the leader: catch-up,
// then (if joint and more than one voter changes) the joint stage, then
// the new configuration.
func (n *Node) changeConfiguration(ctx context.Context, next func(Configuration) (Configuration, error), joint bool) error {
	n.mu.Lock()
	if err := n.leaderCheckLocked(); err != nil {
		n.mu.Unlock()
		return err
	}
	switch cur := n.lm.Configuration(); {
	case n.mu.change != nil:
		n.mu.Unlock()
		return fmt.Errorf("%w: a membership change is in progress", ErrBusy)
	case n.mu.transfer != "":
		n.mu.Unlock()
		return fmt.Errorf("%w: a leadership transfer is in progress", ErrBusy)
	case n.mu.commitIndex < n.mu.termStart || cur.Index > n.mu.commitIndex:
		// A leader changes membership only once its term's first entry and
		// the configuration in force are committed.
		n.mu.Unlock()
		return fmt.Errorf("%w: the current configuration is not committed yet", ErrBusy)
	}
	cur := n.lm.Configuration().Conf
	target, err := next(cur.Clone())
	if err != nil {
		n.mu.Unlock()
		return err
	}
	target.OldPeers = nil
	if err := target.Validate(); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrInvalidChange, err)
	}
	if len(target.Peers) == 0 {
		n.mu.Unlock()
		return fmt.Errorf("%w: a configuration needs at least one voter (%w)", ErrInvalidChange, conf.ErrInvalid)
	}
	var newcomers []Peer
	for _, p := range target.Members() {
		if !cur.Contains(p.ID) {
			newcomers = append(newcomers, p)
		}
	}
	ch := &confChange{catchingUp: newcomers}
	n.mu.change = ch
	n.syncReplicatorsLocked(time.Now())
	term := n.mu.term
	n.mu.Unlock()
	n.log.Info("changing membership", "from", cur.String(), "to", target.String())

	defer func() {
		n.mu.Lock()
		if n.mu.change == ch {
			n.mu.change = nil
			if n.mu.role == Leader {
				n.syncReplicatorsLocked(time.Now())
			}
		}
		n.mu.Unlock()
	}()

	if err := n.waitCaughtUp(ctx, term, newcomers); err != nil {
		return err
	}
	if joint && votersChanged(cur, target) > 1 {
		j := target.Clone()
		j.OldPeers = slices.Clone(cur.Peers)
		if err := n.proposeConfiguration(ctx, j); err != nil {
			return err
		}
	}
	if err := n.proposeConfiguration(ctx, target); err != nil {
		return err
	}
	n.log.Info("membership changed", "conf", target.String())
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role == Leader && n.mu.term == term && !target.IsVoter(n.id) {
		n.log.Info("stepping down: removed from the configuration")
		n.stepDownLocked(n.mu.term, time.Now())
	}
	return nil
}

// votersChanged counts the voters added or removed.
func votersChanged(a, b Configuration) int {
	d := 0
	for _, p := range a.Peers {
		if !slices.ContainsFunc(b.Peers, func(q Peer) bool { return q.ID == p.ID }) {
			d++
		}
	}
	for _, p := range b.Peers {
		if !slices.ContainsFunc(a.Peers, func(q Peer) bool { return q.ID == p.ID }) {
			d++
		}
	}
	return d
}

// proposeConfiguration appends c as a configuration entry (in force at
// once) and waits until it is committed and applied.
func (n *Node) proposeConfiguration(ctx context.Context, c Configuration) error {
	f, err := n.propose(raftpb.EntryType_ENTRY_TYPE_CONFIGURATION, c.Encode())
	if err != nil {
		return err
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitCaughtUp waits until every peer has answered the leader and its
// replicator is within CatchUpMargin entries of the leader's last index: a
// peer that cannot be reached (down, wrong address, refused by TLS) never
// counts as caught up, however short the log.
func (n *Node) waitCaughtUp(ctx context.Context, term uint64, peers []Peer) error {
	if len(peers) == 0 {
		return nil
	}
	t := time.NewTicker(n.opts.HeartbeatInterval / 4)
	defer t.Stop()
	for {
		n.mu.Lock()
		if n.mu.role != Leader || n.mu.term != term {
			n.mu.Unlock()
			return ErrLeadershipLost
		}
		last := n.lm.LastIndex()
		behind := ""
		for _, p := range peers {
			r := n.mu.replicators[p.ID]
			if r == nil || !r.answered || r.matchIndex+n.opts.CatchUpMargin < last {
				behind = p.ID
				break
			}
		}
		n.mu.Unlock()
		if behind == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %v", ErrCatchUpTimeout, behind, ctx.Err())
		case <-t.C:
		case <-n.stop:
			return ErrShutdown
		}
	}
}

// ResetPeers forces this node's configuration to peers, without consensus,
// for recovery after the permanent loss of a quorum: for example, on the
// lone survivor of a three-node group, ResetPeers with just itself lets it
// elect itself and serve again. It is unsafe by nature: entries the lost
// nodes committed but this node never received are gone, and running it
// while the old quorum may still be alive can split the group in two. It
// is never done automatically. The node must not be the leader.
func (n *Node) ResetPeers(peers []Peer) error {
	c := Configuration{Peers: slices.Clone(peers)}
	if err := c.Validate(); err != nil {
		return err
	}
	if len(c.Peers) == 0 {
		return fmt.Errorf("%w: no peers", conf.ErrInvalid)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch n.mu.role {
	case Shutdown:
		return ErrShutdown
	case Leader:
		return fmt.Errorf("%w: reset peers on a leader; use ChangePeers", ErrBusy)
	}
	if n.installingLocked() {
		return fmt.Errorf("%w: installing a snapshot", ErrBusy)
	}
	// A new term, so that the forced configuration entry cannot collide
	// with an entry some leader of the current term wrote at that index.
	n.mu.term++
	n.mu.votedFor = ""
	if !n.persistLocked() {
		return n.mu.fatal
	}
	e := &raftpb.Entry{Term: n.mu.term, Index: n.lm.LastIndex() + 1, Type: raftpb.EntryType_ENTRY_TYPE_CONFIGURATION, Data: c.Encode()}
	done := make(chan error, 1)
	if err := n.lm.Append([]*raftpb.Entry{e}, func(err error) { done <- err }); err != nil {
		return err
	}
	n.log.Warn("configuration reset by hand", "conf", c.String(), "term", n.mu.term)
	n.mu.leader = Peer{}
	n.mu.leaderContact = time.Time{}
	n.mu.electionDeadline = time.Now() // campaign at the next tick
	n.mu.Unlock()
	err := <-done
	n.mu.Lock()
	return err
}

// TransferLeadership hands leadership to target, or if target is empty to
// the most caught-up voter. The leader stops accepting proposals, brings
// the target's log up to date, and sends it TimeoutNow so that it
// campaigns at once. It returns nil once this node knows the target leads.
// If the target has not won within an election timeout, or another peer
// won, the transfer fails with ErrTransferFailed (the leader resumes if it
// still leads). With Options.LeaseReads, a leader that began a transfer
// confirms every read with a heartbeat round for the rest of its term.
func (n *Node) TransferLeadership(ctx context.Context, target string) error {
	n.mu.Lock()
	if err := n.leaderCheckLocked(); err != nil {
		n.mu.Unlock()
		return err
	}
	if n.mu.transfer != "" || n.mu.change != nil {
		n.mu.Unlock()
		return fmt.Errorf("%w: a transfer or membership change is in progress", ErrBusy)
	}
	c := n.lm.Configuration().Conf
	if target == "" {
		var best uint64
		for _, p := range c.Voters() {
			if r := n.mu.replicators[p.ID]; r != nil && p.ID != n.id && (target == "" || r.matchIndex > best) {
				target, best = p.ID, r.matchIndex
			}
		}
		if target == "" {
			n.mu.Unlock()
			return fmt.Errorf("%w: no other voter to transfer to", ErrTransferFailed)
		}
	}
	if target == n.id {
		n.mu.Unlock()
		return nil
	}
	p, ok := c.Lookup(target)
	if !ok || !c.IsVoter(target) {
		n.mu.Unlock()
		return fmt.Errorf("%w: %s is not a voter", ErrTransferFailed, target)
	}
	term := n.mu.term
	n.mu.transfer = target
	// The target campaigns without waiting out this leader's lease, and
	// may win even after the transfer is given up: no lease reads for the
	// rest of this term.
	n.mu.transferredTerm = term
	deadline := time.Now().Add(n.opts.ElectionTimeout)
	n.mu.Unlock()
	n.log.Info("transferring leadership", "to", target, "term", term)

	err := n.runTransfer(ctx, p, term, deadline)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.transfer == target {
		n.mu.transfer = ""
	}
	if err != nil {
		n.log.Warn("leadership transfer failed", "to", target, "err", err)
	}
	return err
}

func (n *Node) runTransfer(ctx context.Context, p Peer, term uint64, deadline time.Time) error {
	t := time.NewTicker(max(n.opts.HeartbeatInterval/8, time.Millisecond))
	defer t.Stop()
	sent := false
	for {
		n.mu.Lock()
		if n.mu.term != term || n.mu.role != Leader {
			// Leadership has moved on. Succeed only once the target is
			// known to lead; until the winner's first message arrives,
			// keep waiting (up to the deadline).
			leader, now := n.mu.leader.ID, n.mu.term
			n.mu.Unlock()
			switch {
			case leader == p.ID:
				return nil
			case leader != "":
				return fmt.Errorf("%w: %s leads term %d, not %s", ErrTransferFailed, leader, now, p.ID)
			case now == term && !sent:
				return ErrLeadershipLost // stepped down before any campaign of the target's
			}
		} else {
			r := n.mu.replicators[p.ID]
			caughtUp := r != nil && r.matchIndex >= n.lm.LastIndex()
			n.mu.Unlock()
			if caughtUp && !sent {
				sent = n.sendTimeoutNow(ctx, p, term)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s did not take over within %v", ErrTransferFailed, p.ID, n.opts.ElectionTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrShutdown
		case <-t.C:
		}
	}
}

// sendTimeoutNow asks p to campaign at once and reports whether it agreed;
// an answer with a higher term makes this leader step down.
func (n *Node) sendTimeoutNow(ctx context.Context, p Peer, term uint64) bool {
	rctx, cancel := context.WithTimeout(ctx, n.opts.ElectionTimeout)
	resp, err := n.trans.TimeoutNow(rctx, p.Addr, &raftpb.TimeoutNowRequest{GroupId: n.group, ServerId: n.id, PeerId: p.ID, Term: term})
	cancel()
	if err == nil && resp.Term > term && validTerm(resp.Term) {
		n.mu.Lock()
		n.stepDownLocked(resp.Term, time.Now())
		n.mu.Unlock()
	}
	return err == nil && resp.Success
}
