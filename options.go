package graft

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
)

// Options configure a Node. Start from DefaultOptions and set the
// identity, storage, transport and state machine; NewNode copies the
// struct and never modifies the caller's.
type Options struct {
	// GroupID names the raft group; many groups may share a process.
	GroupID string
	// ID is this node's peer id within the group.
	ID string
	// InitialPeers is the configuration a brand-new group starts with
	// (including this node). It is used only while the log and snapshot
	// are empty; a node added to an existing group leaves it empty and
	// waits to be contacted by the leader.
	InitialPeers []Peer

	// ElectionTimeout is the base election timeout: a follower that hears
	// nothing from a leader for a random duration in [ElectionTimeout,
	// 2*ElectionTimeout) starts a (pre-)election. Longer tolerates slower
	// networks and disks; shorter fails over faster. Default 1s.
	ElectionTimeout time.Duration
	// HeartbeatInterval is how often the leader sends heartbeats to each
	// follower. Must be well below ElectionTimeout. Default
	// ElectionTimeout/10.
	HeartbeatInterval time.Duration
	// PreVote makes a node check that it could win before it disrupts the
	// group with a new term. Default true.
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a
	// quorum within an election timeout. Default true.
	CheckQuorum bool

	// CatchUpMargin is how close (in entries) a new member's log must be
	// to the leader's before a membership change makes it a member.
	// Default 100.
	CatchUpMargin uint64
	// LeaseReads lets the leader serve ReadIndex without a heartbeat
	// round while its lease holds: an election timeout, less 10%, after
	// the heartbeats a quorum last answered were sent. This assumes the
	// clocks of the peers run at rates within 10% of each other (bounded
	// drift); if they may not, leave it off. A leader that has begun a
	// leadership transfer confirms every read with a heartbeat round for
	// the rest of its term, since the target campaigns without waiting
	// for the lease to run out. Default false.
	LeaseReads bool

	// MaxInflightAppends bounds the AppendEntries requests in flight to one
	// follower (pipelining depth). Default 32.
	MaxInflightAppends int
	// MaxAppendEntries bounds the entries in one AppendEntries request.
	// Default 1024.
	MaxAppendEntries int
	// MaxAppendBytes bounds the entry data in one AppendEntries request, in
	// bytes. Default 1 MiB.
	MaxAppendBytes int
	// MaxApplyBatch bounds the entries handed to StateMachine.Apply in one
	// call. Default 512.
	MaxApplyBatch int
	// MaxApplyBytes bounds the entry data handed to StateMachine.Apply in
	// one call (at least one entry is always handed over), so that memory
	// stays bounded while large entries are replayed. Default 16 MiB.
	MaxApplyBytes int
	// MaxEntrySize bounds one proposal's data, in bytes. Default 8 MiB.
	MaxEntrySize int
	// LogCacheEntries is how many recent durable entries stay in memory
	// for replication. Default 4096.
	LogCacheEntries int

	// Snapshots is the group's local snapshot store. Nil disables
	// snapshots: the log is never compacted and InstallSnapshot requests
	// are refused. The node closes it on Shutdown.
	Snapshots *snapshot.Storage
	// FileService serves this process's snapshots to followers that
	// install them; shared by every group of the process and registered
	// with the Router's SetFileHandler. Needed for a leader to send
	// snapshots.
	FileService *snapshot.FileService
	// Throttle bounds snapshot bytes per second and concurrent installs,
	// shared by every group of the process. Nil: unlimited.
	Throttle *throttle.Throttle
	// SnapshotInterval takes a snapshot this often if entries were applied
	// since the last one; the first one fires at a random point within the
	// first interval so that many groups do not snapshot together. 0: off.
	SnapshotInterval time.Duration
	// SnapshotLogEntries takes a snapshot once this many entries were
	// applied since the last one. 0: off.
	SnapshotLogEntries uint64
	// SnapshotTrailingEntries is how many entries before a new snapshot's
	// index stay in the log, so that slightly lagging followers catch up
	// from the log rather than by installing a snapshot. Default 1024.
	SnapshotTrailingEntries uint64
	// InstallTimeout bounds one InstallSnapshot exchange (download and
	// load) as seen by the leader. Default 1h.
	InstallTimeout time.Duration
	// Copy tunes snapshot downloads: chunk size, parallel files, chunk
	// timeout, retries. Zero fields take the snapshot package defaults.
	Copy snapshot.CopyOptions

	// LogStorage holds the log durably (storage/segment) or in memory for
	// tests (storage/memory). The node owns it and closes it on Shutdown.
	LogStorage storage.LogStorage
	// MetaStorage holds the current term and vote. The node closes it on
	// Shutdown.
	MetaStorage storage.MetaStorage
	// Transport sends RPCs to peers. Shared by groups; not closed by the
	// node.
	Transport transport.Transport
	// Router, if set, is where the node registers itself to receive RPCs
	// for (GroupID, ID); it unregisters on Shutdown.
	Router *transport.Router
	// StateMachine is the user's state.
	StateMachine StateMachine

	// Logger receives the node's logs, with group and peer fields added.
	// Default: discard.
	Logger *slog.Logger
}

// DefaultOptions returns Options with every tunable at its default.
func DefaultOptions() Options {
	return Options{
		ElectionTimeout:    time.Second,
		HeartbeatInterval:  100 * time.Millisecond,
		PreVote:            true,
		CheckQuorum:        true,
		MaxInflightAppends: 32,
		MaxAppendEntries:   1024,
		MaxAppendBytes:     1 << 20,
		MaxApplyBatch:      512,
		MaxApplyBytes:      16 << 20,
		MaxEntrySize:       8 << 20,
		LogCacheEntries:    4096,
		CatchUpMargin:      100,

		SnapshotTrailingEntries: 1024,
		InstallTimeout:          time.Hour,
	}
}

// Validate checks o and returns an error wrapping ErrInvalidOptions that
// names the first bad field and value.
func (o *Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	switch {
	case o.GroupID == "":
		return bad("GroupID is empty")
	case o.ID == "":
		return bad("ID is empty")
	case o.ElectionTimeout <= 0:
		return bad("ElectionTimeout %v must be positive", o.ElectionTimeout)
	case o.HeartbeatInterval <= 0 || o.HeartbeatInterval >= o.ElectionTimeout:
		return bad("HeartbeatInterval %v must be positive and below ElectionTimeout %v", o.HeartbeatInterval, o.ElectionTimeout)
	case o.MaxInflightAppends < 1:
		return bad("MaxInflightAppends %d must be at least 1", o.MaxInflightAppends)
	case o.MaxAppendEntries < 1:
		return bad("MaxAppendEntries %d must be at least 1", o.MaxAppendEntries)
	case o.MaxAppendBytes < 1:
		return bad("MaxAppendBytes %d must be at least 1", o.MaxAppendBytes)
	case o.MaxApplyBatch < 1:
		return bad("MaxApplyBatch %d must be at least 1", o.MaxApplyBatch)
	case o.MaxApplyBytes < 1:
		return bad("MaxApplyBytes %d must be at least 1", o.MaxApplyBytes)
	case o.MaxEntrySize < 1:
		return bad("MaxEntrySize %d must be at least 1", o.MaxEntrySize)
	case o.LogCacheEntries < 0:
		return bad("LogCacheEntries %d must not be negative", o.LogCacheEntries)
	case o.InstallTimeout <= 0:
		return bad("InstallTimeout %v must be positive", o.InstallTimeout)
	case o.SnapshotInterval < 0:
		return bad("SnapshotInterval %v must not be negative", o.SnapshotInterval)
	case o.LogStorage == nil:
		return bad("LogStorage is nil")
	case o.MetaStorage == nil:
		return bad("MetaStorage is nil")
	case o.Transport == nil:
		return bad("Transport is nil")
	case o.StateMachine == nil:
		return bad("StateMachine is nil")
	}
	if len(o.InitialPeers) > 0 {
		c := Configuration{Peers: o.InitialPeers}
		if err := c.Validate(); err != nil {
			return bad("InitialPeers: %v", err)
		}
	}
	return nil
}
