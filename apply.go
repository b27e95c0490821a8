package graft

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/snapshot"
)

// future is a proposal waiting to be applied.
type future struct {
	entry       *raftpb.Entry // until the proposal loop appends it
	index, term uint64
	done        chan struct{}
	res         ApplyResult
	err         error
}

// complete fails a future that never reached the applier.
func (f *future) complete(err error) {
	f.err = err
	close(f.done)
}

func newFuture(index, term uint64) *future {
	return &future{index: index, term: term, done: make(chan struct{})}
}

type taskKind int

const (
	taskCommit taskKind = iota
	taskLeaderStart
	taskLeaderStop
	taskStartFollowing
	taskStopFollowing
	taskError
	taskSave // save a snapshot of the state as of the last applied entry
	taskLoad // load an installed snapshot
)

type task struct {
	kind   taskKind
	index  uint64
	term   uint64
	peer   Peer
	err    error
	reader *snapshot.Reader              // taskLoad
	save   func(error)                   // taskLoad: completion
	saved  func(index uint64, err error) // taskSave: completion, with the index saved
}

// applier is the node's apply loop (braft's FSMCaller): one goroutine that
// hands committed entries to the state machine in order and in batches,
// completes the proposals waiting on them, and delivers the node's events
// to the state machine in the order they happened.
type applier struct {
	n  *Node
	sm StateMachine

	mu struct {
		sync.Mutex
		tasks   []task
		pending map[uint64]*future
		closed  bool
	}
	wake        chan struct{}
	lastApplied atomic.Uint64
	progress    struct {
		sync.Mutex
		ch chan struct{} // closed and replaced when lastApplied moves
	}
	stopped bool // owned by the apply goroutine: set after a fatal error
}

func newApplier(n *Node) *applier {
	a := &applier{n: n, sm: n.opts.StateMachine, wake: make(chan struct{}, 1)}
	a.progress.ch = make(chan struct{})
	a.mu.pending = make(map[uint64]*future)
	return a
}

func (a *applier) applied() uint64 { return a.lastApplied.Load() }

// setApplied records progress and wakes waitApplied callers.
func (a *applier) setApplied(idx uint64) {
	a.lastApplied.Store(idx)
	a.progress.Lock()
	close(a.progress.ch)
	a.progress.ch = make(chan struct{})
	a.progress.Unlock()
}

// waitApplied waits until entries through idx are applied.
func (a *applier) waitApplied(ctx context.Context, idx uint64) error {
	for {
		a.progress.Lock()
		ch := a.progress.ch
		a.progress.Unlock()
		if a.lastApplied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-a.n.stop:
			return ErrShutdown
		}
	}
}

// registerAll records a batch of proposals appended from index first on,
// to complete when their entries are applied. Futures of the batch without
// an index (rejected) are skipped.
func (a *applier) registerAll(fs []*future, first uint64) {
	a.mu.Lock()
	for _, f := range fs {
		if f.index >= first {
			a.mu.pending[f.index] = f
		}
	}
	a.mu.Unlock()
}

// failAll completes every pending proposal with err.
func (a *applier) failAll(err error) {
	a.mu.Lock()
	for idx, f := range a.mu.pending {
		f.err = err
		close(f.done)
		delete(a.mu.pending, idx)
	}
	a.mu.Unlock()
}

// commit asks the loop to apply through index.
func (a *applier) commit(index uint64) {
	a.mu.Lock()
	if n := len(a.mu.tasks); n > 0 && a.mu.tasks[n-1].kind == taskCommit {
		a.mu.tasks[n-1].index = max(a.mu.tasks[n-1].index, index)
	} else {
		a.mu.tasks = append(a.mu.tasks, task{kind: taskCommit, index: index})
	}
	a.mu.Unlock()
	a.signal()
}

// event queues a notification for the state machine, after every commit
// queued before it.
func (a *applier) event(t task) {
	a.mu.Lock()
	a.mu.tasks = append(a.mu.tasks, t)
	a.mu.Unlock()
	a.signal()
}

func (a *applier) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// close makes the loop finish the queued tasks and exit.
func (a *applier) close() {
	a.mu.Lock()
	a.mu.closed = true
	a.mu.Unlock()
	a.signal()
}

func (a *applier) run() {
	defer a.n.wg.Done()
	for {
		a.mu.Lock()
		tasks := a.mu.tasks
		a.mu.tasks = nil
		closed := a.mu.closed
		a.mu.Unlock()
		for _, t := range tasks {
			a.do(t)
		}
		if closed && len(tasks) == 0 {
			return
		}
		if len(tasks) == 0 {
			<-a.wake
		}
	}
}

func (a *applier) do(t task) {
	if t.kind == taskError {
		a.stopped = true
		if o, ok := a.sm.(ErrorObserver); ok {
			o.OnError(t.err)
		}
		return
	}
	if a.stopped {
		if t.save != nil {
			t.save(ErrShutdown)
		}
		if t.saved != nil {
			t.saved(0, ErrShutdown)
		}
		return
	}
	switch t.kind {
	case taskSave:
		a.save(t.saved)
	case taskLoad:
		a.load(t.reader, t.save)
	case taskCommit:
		a.applyThrough(t.index)
	case taskLeaderStart:
		if o, ok := a.sm.(LeaderObserver); ok {
			o.OnLeaderStart(t.term)
		}
	case taskLeaderStop:
		if o, ok := a.sm.(LeaderObserver); ok {
			o.OnLeaderStop(t.term)
		}
	case taskStartFollowing:
		if o, ok := a.sm.(FollowerObserver); ok {
			o.OnStartFollowing(t.peer, t.term)
		}
	case taskStopFollowing:
		if o, ok := a.sm.(FollowerObserver); ok {
			o.OnStopFollowing(t.peer, t.term)
		}
	}
}

// applyThrough applies every committed entry up to index, in batches.
func (a *applier) applyThrough(index uint64) {
	batch := uint64(a.n.opts.MaxApplyBatch)
	var results []any
	for applied := a.lastApplied.Load(); applied < index && !a.stopped; applied = a.lastApplied.Load() {
		ents, err := a.n.lm.Entries(applied+1, min(index, applied+batch)+1, uint64(a.n.opts.MaxApplyBytes))
		if err != nil {
			a.fatal(fmt.Errorf("graft: reading committed entries from %d: %w", applied+1, err))
			return
		}
		// Hand runs of normal entries to the state machine; configuration
		// and no-op entries are the node's, handled between runs.
		for len(ents) > 0 && !a.stopped {
			n := 0
			for n < len(ents) && ents[n].Type == raftpb.EntryType_ENTRY_TYPE_NORMAL {
				n++
			}
			if n > 0 {
				if cap(results) < n {
					results = make([]any, n)
				}
				results = results[:n]
				if err := a.sm.Apply(newIterator(ents[:n], results)); err != nil {
					a.fatal(fmt.Errorf("%w: applying entries %d-%d: %v", ErrStateMachine, ents[0].Index, ents[n-1].Index, err))
					return
				}
				a.complete(ents[:n], results)
				clear(results)
				ents = ents[n:]
				continue
			}
			e := ents[0]
			if e.Type == raftpb.EntryType_ENTRY_TYPE_CONFIGURATION {
				if o, ok := a.sm.(ConfigurationObserver); ok {
					if c, err := conf.Decode(e.Data); err == nil {
						o.OnConfigurationCommitted(c, e.Index)
					}
				}
			}
			a.complete(ents[:1], nil)
			ents = ents[1:]
		}
	}
}

// complete records entries as applied and completes their proposals.
func (a *applier) complete(ents []*raftpb.Entry, results []any) {
	last := ents[len(ents)-1].Index
	a.setApplied(last)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.mu.pending) == 0 {
		return
	}
	for i, e := range ents {
		f, ok := a.mu.pending[e.Index]
		if !ok {
			continue
		}
		delete(a.mu.pending, e.Index)
		if f.term != e.Term {
			f.err = ErrLeadershipLost // our entry was overwritten by another leader's
		} else {
			f.res = ApplyResult{Index: e.Index, Term: e.Term}
			if results != nil {
				f.res.Result = results[i]
			}
		}
		close(f.done)
	}
}

// fatal stops applying; the node fails with err, which queues the
// ErrorObserver call. fail takes the node lock, which may be held by a
// caller waiting on the applier, so it runs on its own goroutine.
func (a *applier) fatal(err error) {
	a.stopped = true
	a.n.wg.Add(1) // the apply loop's own count is still held
	go func() {
		defer a.n.wg.Done()
		a.n.fail(err)
	}()
}
