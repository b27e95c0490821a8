package graft

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/graft-raft/graft/internal/logmanager"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// A replicator brings one follower's log in line with the leader's for one
// term. It probes for the point where the logs agree, then streams entries
// through a pipeline (several AppendEntries in flight), and sends
// heartbeats on its own schedule, over a pipeline of their own, so that a
// slow entries pipeline never delays them. It stops when the leader steps
// down or the peer leaves the configuration.
type replicator struct {
	n    *Node
	peer Peer
	term uint64

	// Guarded by n.mu.
	matchIndex  uint64
	nextIndex   uint64
	lastContact time.Time
	answered    bool      // the peer has answered in this term
	needSnap    uint64    // the peer asks for a snapshot at or after this index (its own was damaged)
	readAck     uint64    // newest read round whose heartbeat this peer answered
	ackSentAt   time.Time // send time of the newest heartbeat it answered

	hbNow chan struct{} // asks for a heartbeat at once (read rounds)
	kick  chan struct{} // the peer asked for a snapshot: leave the pipeline

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newReplicator(n *Node, p Peer, term uint64, now time.Time) *replicator {
	ctx, cancel := context.WithCancel(context.Background())
	return &replicator{n: n, peer: p, term: term, lastContact: now, ctx: ctx, cancel: cancel,
		nextIndex: n.lm.LastIndex() + 1, hbNow: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
}

func (r *replicator) start() {
	r.wg.Add(2)
	r.n.wg.Add(1)
	go func() {
		defer r.n.wg.Done()
		r.wg.Wait()
	}()
	go r.run()
	go r.heartbeatLoop()
}

// stop ends the replicator without waiting; the node's WaitGroup tracks
// its goroutines.
func (r *replicator) stop() { r.cancel() }

func (r *replicator) stopped() bool { return r.ctx.Err() != nil }

func (r *replicator) run() {
	defer r.wg.Done()
	next := r.n.lm.LastIndex() + 1
	backoff := r.n.opts.HeartbeatInterval
	for !r.stopped() {
		var res probeResult
		next, res = r.probe(next)
		switch res {
		case probeMatched:
			next = r.pipeline(next)
		case probeBackoff:
			r.wait(backoff)
		}
	}
}

type probeResult int

const (
	probeMatched probeResult = iota // logs agree at next-1
	probeRetry                      // backed up; probe again at once
	probeBackoff                    // unreachable or busy; wait first
)

// wait sleeps for d or until the replicator stops.
func (r *replicator) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
	case <-t.C:
	}
}

func (r *replicator) rpcContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.ctx, r.n.opts.ElectionTimeout)
}

func (r *replicator) commitIndex() uint64 {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	return r.n.mu.commitIndex
}

// probe sends an empty AppendEntries at next-1 and returns the index to
// continue from, and whether the follower agreed with the leader's log
// there.
func (r *replicator) probe(next uint64) (uint64, probeResult) {
	if r.neededSnapshot() > 0 {
		return r.installSnapshot(next)
	}
	prev := next - 1
	prevTerm, err := r.n.lm.Term(prev)
	if errors.Is(err, logmanager.ErrCompacted) || next < r.n.lm.FirstIndex() {
		// The entries the follower needs are gone from the log.
		return r.installSnapshot(next)
	}
	if err != nil {
		return r.n.lm.LastIndex() + 1, probeBackoff
	}
	req := &raftpb.AppendEntriesRequest{
		GroupId: r.n.group, ServerId: r.n.id, PeerId: r.peer.ID, Term: r.term,
		PrevLogIndex: prev, PrevLogTerm: prevTerm, CommittedIndex: r.commitIndex(),
	}
	ctx, cancel := r.rpcContext()
	resp, err := r.n.trans.AppendEntries(ctx, r.peer.Addr, req)
	cancel()
	if err != nil {
		r.n.log.Debug("probe failed", "follower", r.peer.ID, "err", err)
		return next, probeBackoff
	}
	if !r.n.onAppendResponse(r, resp) {
		return next, probeBackoff
	}
	if resp.Success {
		return next, probeMatched
	}
	if resp.Busy {
		return next, probeBackoff
	}
	// Back up to where the follower's log could agree: no further than its
	// last entry, and past the whole conflicting term if it reported one.
	hint := resp.LastLogIndex + 1
	if resp.ConflictIndex > 0 {
		hint = min(hint, resp.ConflictIndex)
	}
	next = max(1, min(next-1, hint))
	r.setNext(next)
	return next, probeRetry
}

// installSnapshot sends the follower the newest snapshot, because the
// entries it needs are compacted. No entries go to the follower until it
// answers (heartbeats go on). On success replication resumes after the
// snapshot; on failure the replicator backs off and probes again.
func (r *replicator) installSnapshot(next uint64) (uint64, probeResult) {
	n := r.n
	if n.opts.Snapshots == nil || n.opts.FileService == nil {
		n.log.Error("follower needs compacted entries but this node cannot send snapshots", "follower", r.peer.ID)
		return next, probeBackoff
	}
	reader, err := n.opts.Snapshots.Open()
	if err != nil {
		n.log.Warn("cannot open the snapshot to send", "follower", r.peer.ID, "err", err)
		return next, probeBackoff
	}
	if need := r.neededSnapshot(); reader == nil || reader.Index() < need {
		if reader != nil {
			reader.Close()
		}
		if need == 0 {
			n.log.Warn("no snapshot to send", "follower", r.peer.ID)
			return next, probeBackoff
		}
		// The follower's damaged snapshot is newer than ours. It covered
		// applied, hence committed, entries: a save now covers them, or
		// one a little later once this leader has applied that far.
		if _, err := n.startSave(func(uint64, error) {}); err != nil {
			n.log.Debug("snapshot for a follower to restore from not started", "follower", r.peer.ID, "err", err)
		}
		n.log.Info("follower needs a newer snapshot than ours: saving one", "follower", r.peer.ID, "need", need)
		return next, probeBackoff
	}
	meta := reader.Meta()
	n.mu.Lock()
	self := n.selfPeer(n.lm.Configuration().Conf)
	n.mu.Unlock()
	uri, id := n.opts.FileService.Register(reader, self.Addr) // the service owns reader now
	defer n.opts.FileService.Unregister(id)
	req := &raftpb.InstallSnapshotRequest{
		GroupId: n.group, ServerId: n.id, PeerId: r.peer.ID, Term: r.term, Meta: meta, Uri: uri,
	}
	n.log.Info("sending snapshot", "follower", r.peer.ID, "index", meta.LastIncludedIndex, "uri", uri)
	ctx, cancel := context.WithTimeout(r.ctx, n.opts.InstallTimeout)
	resp, err := n.trans.InstallSnapshot(ctx, r.peer.Addr, req)
	cancel()
	if err != nil {
		if r.ctx.Err() == nil {
			n.log.Warn("snapshot install failed", "follower", r.peer.ID, "index", meta.LastIncludedIndex, "err", err)
		}
		return next, probeBackoff
	}
	ok := n.onAppendResponse(r, &raftpb.AppendEntriesResponse{
		Term: resp.Term, Success: resp.Success, LastLogIndex: meta.LastIncludedIndex,
	})
	if !ok || !resp.Success {
		return next, probeBackoff
	}
	n.log.Info("follower installed snapshot", "follower", r.peer.ID, "index", meta.LastIncludedIndex)
	next = meta.LastIncludedIndex + 1
	r.setNext(next)
	return next, probeRetry
}

// neededSnapshot returns the index the follower asks a snapshot to cover,
// or 0.
func (r *replicator) neededSnapshot() uint64 {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	return r.needSnap
}

func (r *replicator) setNext(next uint64) {
	r.n.mu.Lock()
	r.nextIndex = next
	r.n.mu.Unlock()
}

// pipeline streams entries from next on until an error or a rejection, and
// returns where to probe next.
func (r *replicator) pipeline(next uint64) (resume uint64) {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	if r.neededSnapshot() > 0 {
		return next
	}
	p, err := r.n.trans.Pipeline(ctx, r.peer.Addr)
	if err != nil {
		r.wait(r.n.opts.HeartbeatInterval)
		return next
	}
	var failNext atomic.Uint64 // where to probe after a rejection (0: keep next)
	// Whatever ends the pipeline, probe again from the last index the
	// follower is known to hold: answers to requests in flight are lost.
	defer func() { resume = r.resumeIndex(resume, &failNext) }()

	slots := make(chan struct{}, r.n.opts.MaxInflightAppends)
	answered := make(chan struct{}, 1) // a response arrived
	failed := make(chan struct{})
	var recvWG sync.WaitGroup
	recvWG.Add(1)
	go func() {
		defer recvWG.Done()
		defer close(failed)
		for {
			resp, err := p.Recv()
			if err != nil {
				return
			}
			<-slots
			select {
			case answered <- struct{}{}:
			default:
			}
			if !r.n.onAppendResponse(r, resp) || resp.NeedSnapshot > 0 {
				return
			}
			if !resp.Success {
				if !resp.Busy {
					failNext.Store(max(1, resp.LastLogIndex+1))
				}
				return
			}
		}
	}()
	defer recvWG.Wait()
	defer p.Close() // unblocks Recv before we wait for it

	maxEntries := uint64(r.n.opts.MaxAppendEntries)
	maxBytes := uint64(r.n.opts.MaxAppendBytes)
	// While requests are in flight, a few new entries wait for the next
	// answer (or for a batch worth sending) instead of going out as a
	// request of their own: the follower would only queue them behind its
	// fsync in progress anyway, and fewer, larger requests cost less.
	minBatch := max(1, maxEntries/16)
	var sentCommit uint64
	for {
		last := r.n.lm.LastIndex()
		newEntries := r.n.lm.Wait(last)
		r.n.mu.Lock()
		commit := r.n.mu.commitIndex
		commitCh := r.n.mu.commitCh
		r.n.mu.Unlock()
		if next > last && commit <= sentCommit {
			select {
			case <-r.ctx.Done():
				return next
			case <-failed:
				return next
			case <-newEntries:
			case <-commitCh:
			case <-r.kick:
				return next
			}
			continue
		}
		if next <= last && len(slots) > 0 && last+1-next < minBatch {
			select {
			case <-r.ctx.Done():
				return next
			case <-failed:
				return next
			case <-answered:
			case <-newEntries:
			case <-r.kick:
				return next
			}
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-r.ctx.Done():
			return next
		case <-failed:
			return next
		}
		var ents []*raftpb.Entry
		if next <= last {
			ents, err = r.n.lm.Entries(next, min(last+1, next+maxEntries), maxBytes)
			if err != nil {
				<-slots
				return next
			}
		}
		prevTerm, err := r.n.lm.Term(next - 1)
		if err != nil {
			<-slots
			return next
		}
		req := &raftpb.AppendEntriesRequest{
			GroupId: r.n.group, ServerId: r.n.id, PeerId: r.peer.ID, Term: r.term,
			PrevLogIndex: next - 1, PrevLogTerm: prevTerm, Entries: ents, CommittedIndex: commit,
		}
		if err := p.Send(req); err != nil {
			<-slots
			return next
		}
		sentCommit = commit
		next += uint64(len(ents))
		r.setNext(next)
	}
}

func (r *replicator) resumeIndex(next uint64, failNext *atomic.Uint64) uint64 {
	if f := failNext.Load(); f > 0 {
		next = min(next, f)
	}
	// Probe from the last index known to match; the probe backs up further
	// if needed.
	r.n.mu.Lock()
	match := r.matchIndex
	r.n.mu.Unlock()
	return min(next, match+1)
}

// heartbeatLoop sends an empty AppendEntries every HeartbeatInterval at
// the follower's match index, keeping its election timer quiet and the
// leader's view of the quorum fresh, and one at once for each read round
// (heartbeatNow).
//
// Heartbeats travel on a pipeline of their own (hbStream), never behind
// entries: each costs one message on an open stream instead of a unary
// call, and a read round's heartbeat goes out at once even while earlier
// ones are unanswered. While no stream can be opened, heartbeats go as
// unary calls.
func (r *replicator) heartbeatLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.n.opts.HeartbeatInterval)
	defer t.Stop()
	var s *hbStream
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	for {
		s = r.heartbeat(s)
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		case <-r.hbNow:
		}
	}
}

// heartbeatNow asks for a heartbeat without waiting for the ticker.
func (r *replicator) heartbeatNow() {
	select {
	case r.hbNow <- struct{}{}:
	default:
	}
}

// maxHeartbeatsInFlight bounds the heartbeats sent on a stream and not yet
// answered. Beyond it the replicator sends none until answers come (or the
// stream is found silent and replaced).
const maxHeartbeatsInFlight = 32

// hbStream is a heartbeat pipeline to the follower. The heartbeat loop
// sends on it; recvHeartbeats receives. Responses come in request order,
// so each answers the oldest heartbeat in flight.
type hbStream struct {
	p      transport.Pipeline
	cancel context.CancelFunc // ends the stream's context
	ended  chan struct{}      // closed when recvHeartbeats returns

	mu struct {
		sync.Mutex
		inflight []hbSent // sent and unanswered, oldest first
	}
}

// hbSent is a heartbeat in flight: the read round it was sent in and when
// it was built (no later than it was sent).
type hbSent struct {
	seq    uint64
	sentAt time.Time
}

// stale reports whether s should be replaced at now: its receiver ended
// (the stream failed), or its oldest heartbeat has gone unanswered for
// longer than timeout (a silent peer, on whose blackholed connection Recv
// could block for ever).
func (s *hbStream) stale(now time.Time, timeout time.Duration) bool {
	select {
	case <-s.ended:
		return true
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.inflight) > 0 && now.Sub(s.mu.inflight[0].sentAt) > timeout
}

// full reports whether maxHeartbeatsInFlight heartbeats await answers.
func (s *hbStream) full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.inflight) >= maxHeartbeatsInFlight
}

// push records a heartbeat about to be sent. It must come before Send, so
// that the answer never arrives before its record.
func (s *hbStream) push(hb hbSent) {
	s.mu.Lock()
	s.mu.inflight = append(s.mu.inflight, hb)
	s.mu.Unlock()
}

// pop takes the oldest heartbeat in flight; ok is false if there is none.
func (s *hbStream) pop() (hb hbSent, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mu.inflight) == 0 {
		return hbSent{}, false
	}
	hb = s.mu.inflight[0]
	s.mu.inflight = s.mu.inflight[1:]
	return hb, true
}

// close ends the stream; a blocked Recv returns.
func (s *hbStream) close() {
	s.p.Close()
	s.cancel()
}

// heartbeat sends one heartbeat and returns the stream to use for the next
// one (nil: open a new one). It replaces s first if s is stale; if no
// stream can be opened it sends the heartbeat as a unary call instead. It
// sends nothing while s is full.
func (r *replicator) heartbeat(s *hbStream) *hbStream {
	if s != nil && s.stale(time.Now(), r.n.opts.ElectionTimeout) {
		r.n.log.Debug("heartbeat stream failed or silent: reopening", "follower", r.peer.ID)
		s.close()
		s = nil
	}
	if s == nil {
		if s = r.openHeartbeats(); s == nil {
			r.unaryHeartbeat()
			return nil
		}
	}
	if s.full() {
		return s
	}
	req, hb := r.heartbeatRequest()
	s.push(hb)
	if err := s.p.Send(req); err != nil {
		r.heartbeatFailed(err)
		s.close()
		return nil
	}
	return s
}

// openHeartbeats opens a heartbeat stream to the follower and starts its
// receiver, counted in r.wg. It returns nil if the stream cannot be opened
// within an election timeout (the connection to a silent peer may take
// that long to fail).
func (r *replicator) openHeartbeats() *hbStream {
	ctx, cancel := context.WithCancel(r.ctx)
	// If the timer fires after Pipeline returned, the stream just ends
	// and is replaced on the next heartbeat.
	timer := time.AfterFunc(r.n.opts.ElectionTimeout, cancel)
	p, err := r.n.trans.Pipeline(ctx, r.peer.Addr)
	timer.Stop()
	if err != nil {
		cancel()
		r.heartbeatFailed(err)
		return nil
	}
	s := &hbStream{p: p, cancel: cancel, ended: make(chan struct{})}
	r.wg.Add(1) // the heartbeat loop's own count keeps r.wg above zero
	go r.recvHeartbeats(s)
	return s
}

// recvHeartbeats hands each answer on s to the node, with the read round
// and send time of the heartbeat it answers, until the stream ends.
func (r *replicator) recvHeartbeats(s *hbStream) {
	defer r.wg.Done()
	defer close(s.ended)
	for {
		resp, err := s.p.Recv()
		if err != nil {
			r.heartbeatFailed(err)
			return
		}
		hb, ok := s.pop()
		if !ok {
			// More answers than requests: the stream cannot be trusted.
			r.n.log.Warn("heartbeat stream answered a request never sent", "follower", r.peer.ID)
			s.close()
			return
		}
		if r.n.onAppendResponse(r, resp) {
			r.n.onHeartbeatAck(r, hb.seq, hb.sentAt)
		}
	}
}

// unaryHeartbeat sends one heartbeat as a unary call and waits for its
// answer, for up to an election timeout.
func (r *replicator) unaryHeartbeat() {
	req, hb := r.heartbeatRequest()
	ctx, cancel := r.rpcContext()
	defer cancel()
	resp, err := r.n.trans.AppendEntries(ctx, r.peer.Addr, req)
	if err != nil {
		r.heartbeatFailed(err)
		return
	}
	if r.n.onAppendResponse(r, resp) {
		r.n.onHeartbeatAck(r, hb.seq, hb.sentAt)
	}
}

// heartbeatRequest builds a new heartbeat: an empty AppendEntries at the
// follower's match index, committing no further than it. hb is the read
// round the heartbeat belongs to and the time, before it is sent, that an
// answer will vouch for.
func (r *replicator) heartbeatRequest() (*raftpb.AppendEntriesRequest, hbSent) {
	r.n.mu.Lock()
	match := r.matchIndex
	commit := r.n.mu.commitIndex
	seq := r.n.mu.readSeq
	r.n.mu.Unlock()
	sentAt := time.Now()
	prevTerm, err := r.n.lm.Term(match)
	if err != nil {
		match, prevTerm = 0, 0
	}
	req := &raftpb.AppendEntriesRequest{
		GroupId: r.n.group, ServerId: r.n.id, PeerId: r.peer.ID, Term: r.term,
		PrevLogIndex: match, PrevLogTerm: prevTerm, CommittedIndex: min(commit, match),
	}
	return req, hbSent{seq: seq, sentAt: sentAt}
}

// heartbeatFailed logs a failed heartbeat call or stream, unless it failed
// because the replicator or the transport is closing.
func (r *replicator) heartbeatFailed(err error) {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, transport.ErrClosed) {
		r.n.log.Debug("heartbeat failed", "follower", r.peer.ID, "err", err)
	}
}

// onHeartbeatAck records that r's follower answered a heartbeat of read
// round seq sent at sentAt, in the leader's term.
func (n *Node) onHeartbeatAck(r *replicator, seq uint64, sentAt time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role != Leader || n.mu.term != r.term || r.stopped() {
		return
	}
	r.readAck = max(r.readAck, seq)
	if sentAt.After(r.ackSentAt) {
		r.ackSentAt = sentAt
	}
	n.confirmReadsLocked()
}

// onAppendResponse records a follower's answer for replicator r. It returns
// false if r should stop using the answer (stale replicator, or the leader
// stepped down).
func (n *Node) onAppendResponse(r *replicator, resp *raftpb.AppendEntriesResponse) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role != Leader || n.mu.term != r.term || r.stopped() {
		return false
	}
	now := time.Now()
	if resp.Term > maxTerm {
		return false // a malformed answer: never adopt its term
	}
	if resp.Term > n.mu.term {
		n.log.Info("stepping down: follower has a higher term", "follower", r.peer.ID, "term", resp.Term)
		n.stepDownLocked(resp.Term, now)
		return false
	}
	if resp.Term < n.mu.term {
		return false // answer to an older leader of ours; ignore
	}
	r.lastContact = now
	r.answered = true
	if resp.NeedSnapshot > 0 && r.needSnap == 0 {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	r.needSnap = resp.NeedSnapshot
	if resp.Success && resp.LastLogIndex > r.matchIndex {
		r.matchIndex = resp.LastLogIndex
		n.maybeCommitLocked()
	}
	return true
}
