package graft

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/snapshot"
)

// SnapshotState is what a node's snapshot executor is doing. Saving,
// downloading and loading exclude each other.
type SnapshotState int

// Snapshot executor states.
const (
	SnapshotIdle SnapshotState = iota
	SnapshotSaving
	SnapshotDownloading
	SnapshotLoading
)

// String names the state as the status page shows it.
func (s SnapshotState) String() string {
	switch s {
	case SnapshotSaving:
		return "SAVING"
	case SnapshotDownloading:
		return "DOWNLOADING"
	case SnapshotLoading:
		return "LOADING"
	}
	return "IDLE"
}

// SnapshotStatus is the snapshot part of Status.
type SnapshotStatus struct {
	State     SnapshotState
	LastIndex uint64
	LastTerm  uint64
	// Progress of the install under way (or the last one), if any.
	Progress snapshot.ProgressInfo
	// AwaitingIndex is nonzero while the node waits for the leader to send
	// a snapshot at or after this index, because its own newest snapshot
	// was found damaged at startup and discarded. Until then it applies
	// nothing and does not campaign.
	AwaitingIndex uint64
}

// Snapshot errors.
var (
	// ErrNoSnapshots reports a node configured without a snapshot store.
	ErrNoSnapshots = errors.New("graft: snapshots are not configured")
	// ErrInstallInterrupted reports an install superseded by a newer
	// request for the same snapshot, or interrupted by a term change or
	// shutdown.
	ErrInstallInterrupted = errors.New("graft: snapshot install interrupted")
	// ErrStaleInstall reports an install request older than the one in
	// progress.
	ErrStaleInstall = errors.New("graft: a newer snapshot is being installed")
)

// snapState is the snapshot executor's state, guarded by Node.mu.
type snapState struct {
	state     SnapshotState
	lastIndex uint64
	lastTerm  uint64
	dl        *download
	progress  *snapshot.Progress
	nextAuto  time.Time // next interval-triggered save
	// restore, when nonzero, is the index of a local snapshot found damaged
	// at startup and discarded: the node keeps its log and votes with it,
	// but applies nothing and never campaigns until the leader has sent it
	// a snapshot at or after restore.
	restore uint64
}

// download is an install in progress on a follower.
type download struct {
	meta    *raftpb.SnapshotMeta
	uri     string
	ctx     context.Context
	cancel  context.CancelFunc
	restart bool // a newer request for the same snapshot took over: copy again from its uri
	waiters []chan error
}

func (d *download) finish(err error) {
	for _, w := range d.waiters {
		w <- err
	}
	d.waiters = nil
}

// interruptLocked cancels a download (never a load) after a term change or
// on shutdown; the waiting RPCs answer "interrupted".
func (n *Node) interruptDownloadLocked() {
	s := &n.mu.snap
	if s.dl != nil && s.state == SnapshotDownloading {
		s.dl.restart = false
		s.dl.cancel()
	}
}

// loadSnapshotAtStartup loads the newest local snapshot into the state
// machine before anything is applied.
func (n *Node) loadSnapshotAtStartup() error {
	if n.opts.Snapshots == nil {
		return nil
	}
	r, err := n.opts.Snapshots.Open()
	if err != nil {
		return fmt.Errorf("graft: opening the newest snapshot: %w", err)
	}
	if r == nil {
		return nil
	}
	defer r.Close()
	meta := r.Meta()
	c, err := conf.FromSnapshotMeta(meta)
	if err != nil {
		return fmt.Errorf("graft: snapshot %d: %w", meta.LastIncludedIndex, err)
	}
	// Never hand the state machine a snapshot whose files changed on disk
	// since they were written or verified after download.
	if err := r.Verify(); err != nil {
		if !errors.Is(err, snapshot.ErrCorrupt) {
			return fmt.Errorf("graft: verifying the newest local snapshot: %w", err)
		}
		return n.awaitRestore(meta, c, err)
	}
	if err := n.opts.StateMachine.LoadSnapshot(r); err != nil {
		return fmt.Errorf("%w: loading snapshot %d: %v", ErrStateMachine, meta.LastIncludedIndex, err)
	}
	idx, term := meta.LastIncludedIndex, meta.LastIncludedTerm
	n.lm.SetSnapshot(idx, term, c, n.keepFrom(idx))
	n.applier.lastApplied.Store(idx)
	n.mu.Lock()
	n.mu.snap.lastIndex, n.mu.snap.lastTerm = idx, term
	n.mu.commitIndex = idx
	n.mu.Unlock()
	n.log.Info("loaded snapshot", "index", idx, "term", term)
	return nil
}

// awaitRestore handles a newest local snapshot whose files fail their
// checksums. Its meta table is intact (Storage.Open checked it), so the
// node still knows the index and term the snapshot covers and the
// configuration there: its log and its votes stay exactly what they were,
// which keeps every entry it acknowledged counted. Only the state machine
// lacks its base. The node discards the damaged snapshot, applies nothing
// and never campaigns, and asks each leader through its AppendEntries
// answers for a snapshot covering at least that index; the install ends
// the wait. A node that is its configuration's only voter has nobody to
// ask and refuses to start.
func (n *Node) awaitRestore(meta *raftpb.SnapshotMeta, c conf.Configuration, cause error) error {
	idx, term := meta.LastIncludedIndex, meta.LastIncludedTerm
	n.lm.SetSnapshot(idx, term, c, n.keepFrom(idx))
	if vs := n.lm.Configuration().Conf.Voters(); len(vs) == 1 && vs[0].ID == n.id {
		return fmt.Errorf("graft: the newest local snapshot is damaged and this node is the group's only voter, so no peer can send it again: %w", cause)
	}
	if err := n.opts.Snapshots.Discard(idx); err != nil {
		return fmt.Errorf("graft: discarding a damaged snapshot: %w (damage: %v)", err, cause)
	}
	n.mu.Lock()
	n.mu.snap.restore = idx
	n.mu.Unlock()
	n.log.Error("the newest local snapshot is damaged: discarded it; applying nothing until the leader sends a snapshot",
		"index", idx, "term", term, "err", cause)
	return nil
}

// keepFrom is the first log index to keep after a local snapshot at idx.
func (n *Node) keepFrom(idx uint64) uint64 {
	if t := n.opts.SnapshotTrailingEntries; idx+1 > t {
		return idx + 1 - t
	}
	return 1
}

// Snapshot saves a snapshot of the state machine now, and returns the
// index it covers. It fails with ErrBusy while another save or an install
// runs, and returns the last snapshot's index if nothing was applied since.
func (n *Node) Snapshot(ctx context.Context) (uint64, error) {
	type result struct {
		idx uint64
		err error
	}
	resc := make(chan result, 1)
	idx, err := n.startSave(func(idx uint64, err error) { resc <- result{idx, err} })
	if err != nil || idx == 0 {
		return n.lastSnapshotIndex(), err
	}
	// idx is what was applied when the save was asked for; the save
	// itself captures what is applied when it starts, possibly more.
	select {
	case r := <-resc:
		if r.err != nil {
			return idx, r.err
		}
		return r.idx, nil
	case <-ctx.Done():
		return idx, ctx.Err()
	case <-n.stop:
		return idx, ErrShutdown
	}
}

func (n *Node) lastSnapshotIndex() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.snap.lastIndex
}

// startSave begins a save unless one cannot run now. It returns 0 when
// there is nothing new to save.
func (n *Node) startSave(done func(index uint64, err error)) (uint64, error) {
	if n.opts.Snapshots == nil {
		return 0, ErrNoSnapshots
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role == Shutdown {
		return 0, ErrShutdown
	}
	s := &n.mu.snap
	if s.state != SnapshotIdle {
		return 0, fmt.Errorf("%w: snapshot %s", ErrBusy, s.state)
	}
	applied := n.applier.applied()
	if applied <= s.lastIndex {
		return 0, nil
	}
	s.state = SnapshotSaving
	n.applier.event(task{kind: taskSave, saved: done})
	return applied, nil
}

// save runs on the apply goroutine: it hands the state machine a writer
// for the state as of the last applied entry. The save counts in the
// node's wait group until the state machine calls back, so that Shutdown
// returns only once nothing writes into the snapshot directory any more.
func (a *applier) save(done func(index uint64, err error)) {
	n := a.n
	idx := a.lastApplied.Load()
	n.wg.Add(1) // the apply loop's own count is held: Shutdown cannot be past Wait
	finish := func(err error) {
		defer n.wg.Done()
		n.saveDone(idx, err)
		done(idx, err)
	}
	term, err := n.lm.Term(idx)
	if err != nil {
		finish(fmt.Errorf("graft: term of snapshot index %d: %w", idx, err))
		return
	}
	c := n.lm.ConfigurationAt(idx).Conf
	w, err := n.opts.Snapshots.Create()
	if err != nil {
		finish(err)
		return
	}
	w.SetMeta(&raftpb.SnapshotMeta{
		LastIncludedIndex: idx, LastIncludedTerm: term,
		Peers: conf.Strings(c.Peers), OldPeers: conf.Strings(c.OldPeers), Learners: conf.Strings(c.Learners),
	})
	n.log.Info("saving snapshot", "index", idx, "term", term)
	var called atomic.Bool
	a.sm.SaveSnapshot(w, func(err error) {
		if called.Swap(true) {
			n.log.Error("state machine called SaveSnapshot's done more than once; ignored", "index", idx)
			return
		}
		if err != nil {
			w.Abort()
			finish(fmt.Errorf("%w: saving snapshot %d: %v", ErrStateMachine, idx, err))
			return
		}
		if err := w.Close(); err != nil {
			finish(fmt.Errorf("graft: closing snapshot %d: %w", idx, err))
			return
		}
		n.lm.SetSnapshot(idx, term, c, n.keepFrom(idx))
		finish(nil)
	})
}

// saveDone records the end of a save.
func (n *Node) saveDone(idx uint64, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := &n.mu.snap
	s.state = SnapshotIdle
	if err != nil {
		n.log.Error("snapshot save failed; the log is kept", "index", idx, "err", err)
		return
	}
	if idx > s.lastIndex {
		s.lastIndex = idx
		s.lastTerm, _ = n.lm.Term(idx)
	}
	n.log.Info("snapshot saved", "index", idx, "first_log_index", n.lm.FirstIndex())
}

// maybeAutoSnapshotLocked starts an automatic save when the interval
// passed or enough entries were applied since the last snapshot.
func (n *Node) maybeAutoSnapshotLocked(now time.Time) {
	if n.opts.Snapshots == nil || n.mu.snap.state != SnapshotIdle {
		return
	}
	s := &n.mu.snap
	applied := n.applier.applied()
	if applied <= s.lastIndex {
		return
	}
	byInterval := n.opts.SnapshotInterval > 0 && !s.nextAuto.IsZero() && now.After(s.nextAuto)
	byEntries := n.opts.SnapshotLogEntries > 0 && applied-s.lastIndex >= n.opts.SnapshotLogEntries
	if !byInterval && !byEntries {
		return
	}
	if n.opts.SnapshotInterval > 0 {
		s.nextAuto = now.Add(n.opts.SnapshotInterval)
	}
	s.state = SnapshotSaving
	n.applier.event(task{kind: taskSave, saved: func(uint64, error) {}})
}

// HandleInstallSnapshot installs a snapshot sent by the leader: it
// downloads the snapshot's files from the leader's FileService, loads it
// into the state machine and drops the log entries it covers. It answers
// once the snapshot is loaded, or fails. It implements transport.Handler.
func (n *Node) HandleInstallSnapshot(ctx context.Context, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error) {
	waiter, resp, err := n.registerInstall(req)
	if waiter == nil {
		return resp, err
	}
	select {
	case err := <-waiter:
		if err != nil {
			return nil, err
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		return &raftpb.InstallSnapshotResponse{Term: n.mu.term, Success: true}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// registerInstall applies the install registration rules. It returns a
// channel to wait on when the request joined or started a download;
// otherwise the answer.
func (n *Node) registerInstall(req *raftpb.InstallSnapshotRequest) (chan error, *raftpb.InstallSnapshotResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.role == Shutdown {
		return nil, nil, ErrShutdown
	}
	if n.opts.Snapshots == nil {
		return nil, nil, ErrNoSnapshots
	}
	if !validTerm(req.Term) || req.ServerId == "" || req.ServerId == n.id {
		return nil, nil, fmt.Errorf("graft: malformed InstallSnapshot: term %d from %q", req.Term, req.ServerId)
	}
	meta := req.GetMeta()
	if meta == nil || meta.LastIncludedIndex == 0 || meta.LastIncludedTerm == 0 || meta.LastIncludedTerm > req.Term {
		return nil, nil, fmt.Errorf("graft: malformed InstallSnapshot: bad meta %v", meta)
	}
	addr, _, err := snapshot.ParseURI(req.Uri)
	if err != nil {
		return nil, nil, fmt.Errorf("graft: malformed InstallSnapshot: %w", err)
	}
	// Download only from the leader itself, when we know its address.
	if p, ok := n.lm.Configuration().Conf.Lookup(req.ServerId); ok && p.Addr != addr {
		return nil, nil, fmt.Errorf("graft: malformed InstallSnapshot: uri %q does not point at leader %s (%s)", req.Uri, p.ID, p.Addr)
	}
	if _, err := conf.FromSnapshotMeta(meta); err != nil {
		return nil, nil, fmt.Errorf("graft: malformed InstallSnapshot: %w", err)
	}
	if req.Term < n.mu.term {
		return nil, &raftpb.InstallSnapshotResponse{Term: n.mu.term}, nil
	}
	now := time.Now()
	if req.Term > n.mu.term || n.mu.role != Follower {
		n.stepDownLocked(req.Term, now)
		if n.mu.role == Shutdown {
			return nil, nil, n.mu.fatal
		}
	}
	n.noteLeaderLocked(req.ServerId, now)
	s := &n.mu.snap
	idx := meta.LastIncludedIndex
	if s.restore > 0 && idx < s.restore {
		return nil, nil, fmt.Errorf("%w: this node needs a snapshot at index %d or later to replace its damaged one, not %d", ErrStaleInstall, s.restore, idx)
	}
	if idx <= s.lastIndex {
		return nil, &raftpb.InstallSnapshotResponse{Term: n.mu.term, Success: true}, nil
	}
	w := make(chan error, 1)
	switch s.state {
	case SnapshotSaving:
		return nil, nil, fmt.Errorf("%w: saving a snapshot", ErrBusy)
	case SnapshotIdle:
		ctx, cancel := context.WithCancel(context.Background())
		s.dl = &download{meta: meta, uri: req.Uri, ctx: ctx, cancel: cancel, waiters: []chan error{w}}
		s.state = SnapshotDownloading
		s.progress = &snapshot.Progress{}
		n.log.Info("installing snapshot", "index", idx, "term", meta.LastIncludedTerm, "uri", req.Uri)
		n.wg.Add(1)
		go n.runDownload(s.dl, s.progress)
		return w, nil, nil
	}
	cur := s.dl.meta.LastIncludedIndex
	switch {
	case idx == cur:
		// The new request takes over; the old one ends interrupted. The
		// copy restarts from the new uri, resuming the files it has.
		s.dl.finish(ErrInstallInterrupted)
		s.dl.waiters = []chan error{w}
		if s.state == SnapshotDownloading && req.Uri != s.dl.uri {
			s.dl.uri = req.Uri
			s.dl.restart = true
			s.dl.cancel()
		} else if s.state == SnapshotDownloading && s.dl.ctx.Err() != nil {
			s.dl.restart = true // interrupted by the term change just now
		}
		return w, nil, nil
	case idx < cur:
		return nil, nil, ErrStaleInstall
	default:
		if s.state == SnapshotLoading {
			return nil, nil, fmt.Errorf("%w: loading snapshot %d", ErrBusy, cur)
		}
		s.dl.restart = false
		s.dl.cancel()
		return nil, nil, fmt.Errorf("%w: cancelling the install of snapshot %d for a newer one", ErrBusy, cur)
	}
}

// runDownload copies the snapshot, then has the apply loop load it.
func (n *Node) runDownload(dl *download, progress *snapshot.Progress) {
	defer n.wg.Done()
	if !n.opts.Throttle.StartInstall() {
		n.endInstall(dl, fmt.Errorf("%w: too many snapshot installs in this process", ErrBusy))
		return
	}
	defer n.opts.Throttle.FinishInstall()
	copyOpts := n.opts.Copy
	copyOpts.Transport = n.trans
	copyOpts.Throttle = n.opts.Throttle
	copyOpts.Progress = progress
	copyOpts.Logger = n.log
	for {
		n.mu.Lock()
		uri, ctx := dl.uri, dl.ctx
		n.mu.Unlock()
		r, err := snapshot.Copy(ctx, n.opts.Snapshots, uri, dl.meta, copyOpts)
		n.mu.Lock()
		if err != nil && dl.restart && n.mu.role != Shutdown {
			dl.restart = false
			dl.ctx, dl.cancel = context.WithCancel(context.Background())
			n.mu.Unlock()
			continue
		}
		if err != nil {
			n.mu.Unlock()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: %v", ErrInstallInterrupted, err)
			}
			n.log.Warn("snapshot download failed", "index", dl.meta.LastIncludedIndex, "err", err)
			n.endInstall(dl, err)
			return
		}
		n.mu.snap.state = SnapshotLoading
		n.mu.Unlock()
		errc := make(chan error, 1)
		n.applier.event(task{kind: taskLoad, reader: r, save: func(err error) { errc <- err }})
		select {
		case err = <-errc:
		case <-n.stop:
			err = ErrShutdown // the apply loop may be gone: do not wait for it
		}
		r.Close()
		n.endInstall(dl, err)
		return
	}
}

// endInstall records the end of an install and answers its waiters.
func (n *Node) endInstall(dl *download, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := &n.mu.snap
	if err == nil {
		idx := dl.meta.LastIncludedIndex
		s.lastIndex, s.lastTerm = idx, dl.meta.LastIncludedTerm
		if s.restore > 0 {
			n.log.Info("replaced the damaged snapshot", "damaged", s.restore, "installed", idx)
			s.restore = 0
		}
		n.setCommitLocked(idx)
		n.log.Info("snapshot installed", "index", idx, "term", s.lastTerm)
	}
	dl.cancel()
	s.state = SnapshotIdle
	s.dl = nil
	dl.finish(err)
}

// load runs on the apply goroutine: the state machine replaces its state
// with the snapshot, applied jumps to the snapshot's index (covered
// entries are never replayed), and the log drops what the snapshot makes
// redundant and adopts its configuration.
func (a *applier) load(r *snapshot.Reader, done func(error)) {
	meta := r.Meta()
	idx := meta.LastIncludedIndex
	if idx <= a.lastApplied.Load() {
		done(nil) // already applied that far: nothing to load
		return
	}
	c, err := conf.FromSnapshotMeta(meta)
	if err == nil {
		err = a.sm.LoadSnapshot(r)
	}
	if err != nil {
		err = fmt.Errorf("%w: loading snapshot %d: %v", ErrStateMachine, idx, err)
		a.fatal(err)
		done(err)
		return
	}
	prev, _ := a.n.lm.Snapshot()
	a.n.lm.SetSnapshot(idx, meta.LastIncludedTerm, c, prev+1)
	a.setApplied(idx)
	done(nil)
}

// snapshotStatusLocked returns the executor's status.
func (n *Node) snapshotStatusLocked() SnapshotStatus {
	s := n.mu.snap
	st := SnapshotStatus{State: s.state, LastIndex: s.lastIndex, LastTerm: s.lastTerm, AwaitingIndex: s.restore}
	if s.progress != nil {
		st.Progress = s.progress.Snapshot()
	}
	return st
}
