package memory

import (
	"fmt"
	"slices"
	"sync"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
)

// Log is an in-memory storage.LogStorage. All methods are safe for
// concurrent use. It keeps the appended *raftpb.Entry pointers, which the
// caller must not modify afterwards, and Entries returns those same
// pointers.
type Log struct {
	mu struct {
		sync.RWMutex
		first  uint64
		ents   []*raftpb.Entry // ents[i] has index first+i
		closed bool
	}
}

var _ storage.LogStorage = (*Log)(nil)

// NewLog returns an empty log: FirstIndex 1, LastIndex 0.
func NewLog() *Log {
	l := &Log{}
	l.mu.first = 1
	return l
}

func (l *Log) last() uint64 { return l.mu.first + uint64(len(l.mu.ents)) - 1 }

// FirstIndex implements storage.LogStorage.
func (l *Log) FirstIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.first
}

// LastIndex implements storage.LogStorage.
func (l *Log) LastIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last()
}

func (l *Log) outOfRange(what string, i uint64) error {
	return fmt.Errorf("memory: %s %d outside [%d, %d]: %w", what, i, l.mu.first, l.last(), storage.ErrOutOfRange)
}

// Term implements storage.LogStorage.
func (l *Log) Term(index uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.mu.closed {
		return 0, storage.ErrClosed
	}
	if index < l.mu.first || index > l.last() {
		return 0, l.outOfRange("term of index", index)
	}
	return l.mu.ents[index-l.mu.first].Term, nil
}

// Entries implements storage.LogStorage. The data limit counts
// len(Data) and includes the entry that crosses maxBytes.
func (l *Log) Entries(lo, hi, maxBytes uint64) ([]*raftpb.Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.mu.closed {
		return nil, storage.ErrClosed
	}
	switch {
	case lo > hi:
		return nil, fmt.Errorf("memory: entries [%d, %d): lo > hi: %w", lo, hi, storage.ErrOutOfRange)
	case lo < l.mu.first:
		return nil, l.outOfRange("entries from", lo)
	case hi > l.last()+1:
		return nil, l.outOfRange("entries to", hi-1)
	case lo == hi:
		return nil, nil
	}
	src := l.mu.ents[lo-l.mu.first : hi-l.mu.first]
	n := len(src)
	if maxBytes > 0 {
		var size uint64
		for i, e := range src {
			size += uint64(len(e.Data))
			if size > maxBytes {
				n = i + 1
				break
			}
		}
	}
	return slices.Clone(src[:n]), nil
}

// Append implements storage.LogStorage. An entry whose index does not
// continue the log is an error wrapping storage.ErrOutOfRange.
func (l *Log) Append(entries []*raftpb.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return storage.ErrClosed
	}
	next := l.last() + 1
	if next+uint64(len(entries)) < next {
		return fmt.Errorf("memory: append: %d entries after index %d overflow: %w", len(entries), next-1, storage.ErrOutOfRange)
	}
	for i, e := range entries {
		if e == nil {
			return fmt.Errorf("memory: append: entry %d is nil", i)
		}
		if e.Index != next+uint64(i) {
			return fmt.Errorf("memory: append: entry %d has index %d, want %d: %w", i, e.Index, next+uint64(i), storage.ErrOutOfRange)
		}
	}
	l.mu.ents = append(l.mu.ents, entries...)
	return nil
}

// TruncateSuffix implements storage.LogStorage. lastKept below
// FirstIndex()-1 empties the log, whose next append then starts at
// FirstIndex().
func (l *Log) TruncateSuffix(lastKept uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return storage.ErrClosed
	}
	k := max(lastKept, l.mu.first-1)
	if k < l.last() {
		n := k + 1 - l.mu.first
		clear(l.mu.ents[n:]) // drop references for the garbage collector
		l.mu.ents = l.mu.ents[:n]
	}
	return nil
}

// TruncatePrefix implements storage.LogStorage.
func (l *Log) TruncatePrefix(firstKept uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return storage.ErrClosed
	}
	switch {
	case firstKept <= l.mu.first:
	case firstKept > l.last():
		l.mu.ents = nil
		l.mu.first = firstKept
	default:
		// Copy, so the dropped prefix can be collected.
		l.mu.ents = slices.Clone(l.mu.ents[firstKept-l.mu.first:])
		l.mu.first = firstKept
	}
	return nil
}

// Reset implements storage.LogStorage. nextIndex must be at least 1.
func (l *Log) Reset(nextIndex uint64) error {
	if nextIndex == 0 {
		return fmt.Errorf("memory: reset to index 0: %w", storage.ErrOutOfRange)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return storage.ErrClosed
	}
	l.mu.ents = nil
	l.mu.first = nextIndex
	return nil
}

// Close implements storage.LogStorage. Later calls, other than
// FirstIndex, LastIndex and Close, return storage.ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.closed = true
	return nil
}
