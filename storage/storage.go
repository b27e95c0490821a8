// Package storage defines the small interfaces through which a graft node
// keeps its durable state: the log (LogStorage) and the current term and
// vote (MetaStorage). Implementations live in sub-packages: segment (files
// on disk), metafile (an atomically replaced file) and memory (for tests).
//
// A node calls these from a small, fixed set of goroutines and never calls
// one implementation concurrently with a mutating call, except where a
// method says otherwise.
package storage

import (
	"errors"

	"github.com/graft-raft/graft/raftpb"
)

// Errors returned by storage implementations. Test with errors.Is.
var (
	// ErrCorrupt reports data on disk that fails its checksum or cannot be
	// decoded anywhere but in a torn tail. The wrapping error names the file
	// and offset.
	ErrCorrupt = errors.New("storage: corrupt data")
	// ErrOutOfRange reports an index outside [FirstIndex, LastIndex].
	ErrOutOfRange = errors.New("storage: index out of range")
	// ErrClosed reports use after Close.
	ErrClosed = errors.New("storage: closed")
)

// LogStorage is a durable, append-only sequence of log entries with
// contiguous indexes, which may be cut at either end.
//
// The log holds the entries [FirstIndex, LastIndex]; it is empty when
// FirstIndex == LastIndex+1. A fresh log has FirstIndex 1 and LastIndex 0.
//
// Append, TruncatePrefix, TruncateSuffix, Reset and Close are called from
// one goroutine at a time. FirstIndex, LastIndex, Term and Entries may be
// called concurrently with each other and with the mutating methods.
type LogStorage interface {
	// FirstIndex returns the index of the first entry in the log, or
	// LastIndex()+1 if the log is empty.
	FirstIndex() uint64
	// LastIndex returns the index of the last entry, or FirstIndex()-1 if
	// the log is empty.
	LastIndex() uint64
	// Term returns the term of the entry at index, or ErrOutOfRange if the
	// log does not hold it.
	Term(index uint64) (uint64, error)
	// Entries returns the entries [lo, hi). It returns at least one entry
	// if lo < hi, and stops early with the entry whose len(Data) takes the
	// total past maxBytes (0 means no limit). An index outside the log is
	// ErrOutOfRange. The caller must not modify the returned entries.
	Entries(lo, hi uint64, maxBytes uint64) ([]*raftpb.Entry, error)
	// Append appends entries, whose indexes must continue LastIndex (or
	// start the log, if empty), and returns once they are durable (one
	// fsync for the whole batch). The log keeps no reference to the slice
	// after it returns; the entries themselves must not be modified.
	Append(entries []*raftpb.Entry) error
	// TruncateSuffix removes every entry after lastKept, durably.
	TruncateSuffix(lastKept uint64) error
	// TruncatePrefix removes every entry before firstKept. It need not be
	// durable at once: after a crash, some of those entries may reappear.
	// If firstKept > LastIndex()+1 the log becomes empty and its next
	// append starts at firstKept.
	TruncatePrefix(firstKept uint64) error
	// Reset removes every entry, durably; the next append starts at
	// nextIndex.
	Reset(nextIndex uint64) error
	// Close releases the log's resources.
	Close() error
}

// MetaStorage durably keeps a node's current term and the peer it voted for
// in that term. Calls come from one goroutine at a time.
type MetaStorage interface {
	// Load returns the saved state, or zero values if nothing was saved.
	Load() (term uint64, votedFor string, err error)
	// Save replaces the saved state and returns once it is durable.
	Save(term uint64, votedFor string) error
	// Close releases the storage's resources.
	Close() error
}

// SnapshotWriter is how a state machine writes a snapshot: files go into
// the directory Path, and each is registered with AddFile so that it is
// synced, checksummed and shipped to followers. Files not added are not
// part of the snapshot.
type SnapshotWriter interface {
	// Path returns the directory to write files into.
	Path() string
	// AddFile registers a file written under Path. name is relative and
	// clean (no "..", not absolute); meta is optional user data stored in
	// the snapshot's meta table next to the file.
	AddFile(name string, meta []byte) error
}

// SnapshotReader is how a state machine reads a snapshot it loads.
type SnapshotReader interface {
	// Path returns the snapshot's directory.
	Path() string
	// Meta returns what the snapshot covers.
	Meta() *raftpb.SnapshotMeta
	// Files lists the snapshot's files, relative to Path, sorted.
	Files() []string
	// FileMeta returns the user data stored with a file by AddFile.
	FileMeta(name string) ([]byte, bool)
}
