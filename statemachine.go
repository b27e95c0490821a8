package graft

import (
	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
)

// Peer is one member of a group: a stable id and its raft address.
type Peer = conf.Peer

// Configuration is a group's membership; joint while OldPeers is not empty.
type Configuration = conf.Configuration

// SnapshotWriter is where a state machine writes a snapshot's files.
type SnapshotWriter = storage.SnapshotWriter

// SnapshotReader is what a state machine loads a snapshot from.
type SnapshotReader = storage.SnapshotReader

// SnapshotMeta describes what a snapshot covers.
type SnapshotMeta = raftpb.SnapshotMeta

// StateMachine is the user's replicated state. The node calls every method
// from one goroutine (its apply loop), in log order, never concurrently.
//
// The optional interfaces LeaderObserver, FollowerObserver,
// ConfigurationObserver and ErrorObserver receive further events; a state
// machine implements those it cares about.
type StateMachine interface {
	// Apply applies a batch of committed entries, in order, through it.
	// For each entry the state machine may set a result with
	// it.SetResult; the Apply call that proposed the entry on this node
	// returns it. Entries are never applied twice, and entries that a
	// loaded snapshot covers are never applied. A non-nil error is fatal:
	// the node stops applying, steps down and reports ErrStateMachine.
	Apply(it *Iterator) error

	// SaveSnapshot starts saving the state as of the last applied entry
	// into w. It must capture a point-in-time view before it returns; it
	// may then write the files on another goroutine while applies go on,
	// and must call done exactly once, with nil when every file is written
	// and added. Node.Shutdown waits for done.
	SaveSnapshot(w SnapshotWriter, done func(error))

	// LoadSnapshot replaces the whole state with the snapshot in r. It is
	// called at startup for the newest local snapshot and when a follower
	// installs one from its leader.
	LoadSnapshot(r SnapshotReader) error
}

// LeaderObserver is implemented by state machines that want to know when
// this node starts or stops leading.
type LeaderObserver interface {
	// OnLeaderStart runs once every entry of earlier terms is applied and
	// this node leads in term.
	OnLeaderStart(term uint64)
	// OnLeaderStop runs when this node stops leading.
	OnLeaderStop(term uint64)
}

// FollowerObserver is implemented by state machines that want to know
// which leader this node follows.
type FollowerObserver interface {
	// OnStartFollowing runs when this node learns of leader in term.
	OnStartFollowing(leader Peer, term uint64)
	// OnStopFollowing runs when this node stops following leader.
	OnStopFollowing(leader Peer, term uint64)
}

// ConfigurationObserver is implemented by state machines that track
// membership.
type ConfigurationObserver interface {
	// OnConfigurationCommitted runs when a configuration entry at index is
	// applied.
	OnConfigurationCommitted(c Configuration, index uint64)
}

// ErrorObserver is implemented by state machines that want to hear of a
// fatal error that stopped the node (storage failure, failed apply).
type ErrorObserver interface {
	OnError(err error)
}

// Iterator walks a batch of committed entries during StateMachine.Apply.
// It is valid only during that call. Configuration and no-op entries are
// handled by the node and not shown.
type Iterator struct {
	entries []*raftpb.Entry
	results []any
	pos     int
}

func newIterator(entries []*raftpb.Entry, results []any) *Iterator {
	return &Iterator{entries: entries, results: results, pos: -1}
}

// Next advances to the next entry and reports whether there is one.
func (it *Iterator) Next() bool {
	for it.pos+1 < len(it.entries) {
		it.pos++
		if it.entries[it.pos].Type == raftpb.EntryType_ENTRY_TYPE_NORMAL {
			return true
		}
	}
	it.pos = len(it.entries)
	return false
}

// Index returns the current entry's log index.
func (it *Iterator) Index() uint64 { return it.entries[it.pos].Index }

// Term returns the current entry's term.
func (it *Iterator) Term() uint64 { return it.entries[it.pos].Term }

// Data returns the current entry's command. The state machine must not
// modify or keep it past Apply.
func (it *Iterator) Data() []byte { return it.entries[it.pos].Data }

// SetResult sets the value that the proposer's Apply call returns for the
// current entry.
func (it *Iterator) SetResult(v any) { it.results[it.pos] = v }
