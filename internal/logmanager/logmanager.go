// Package logmanager sits between a raft node and its LogStorage. It keeps
// the in-memory view of the log (entries not yet durable plus a cache of
// recent ones), hands every mutation to one disk goroutine that applies
// them in order and batches consecutive appends into one durable write
// (group commit), tracks configurations by index, and wakes replicators
// when new entries arrive.
//
// Mutations take effect in memory at once, so the node sees its log as it
// will be; each mutation's done callback runs once it and everything queued
// before it is durable.
package logmanager

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
)

// Errors returned by the Manager.
var (
	// ErrCompacted reports an index that a snapshot covers and the log no
	// longer holds.
	ErrCompacted = errors.New("logmanager: index compacted")
	// ErrUnavailable reports an index beyond the last entry.
	ErrUnavailable = errors.New("logmanager: index beyond last entry")
	// ErrClosed reports use after Close.
	ErrClosed = errors.New("logmanager: closed")
)

// Options configure a Manager.
type Options struct {
	// Storage is the durable log. The Manager owns it from New on and
	// closes it in Close.
	Storage storage.LogStorage
	// CacheEntries is how many durable entries stay cached in memory for
	// replication. Older ones are read from Storage. Default 4096.
	CacheEntries int
	Logger       *slog.Logger
}

type opKind uint8

const (
	opAppend opKind = iota
	opBarrier
	opTruncateSuffix
	opTruncatePrefix
	opReset
)

type op struct {
	kind    opKind
	entries []*raftpb.Entry
	index   uint64 // lastKept / firstKept / nextIndex
	done    func(error)
}

// Manager is the node's log. It is safe for concurrent use.
type Manager struct {
	storage storage.LogStorage
	cacheN  int
	log     *slog.Logger

	mu         sync.Mutex
	firstIndex uint64
	lastIndex  uint64
	snapIndex  uint64
	snapTerm   uint64
	memStart   uint64          // index of mem[0]
	mem        []*raftpb.Entry // entries [memStart, lastIndex]
	durable    uint64          // entries <= durable are in storage and current
	confs      conf.Manager
	queue      []op
	pendingCut bool // queue holds a truncation or reset
	newEntries chan struct{}
	err        error // sticky storage error
	closed     bool

	wake     chan struct{}
	diskDone chan struct{}
}

// New returns a Manager over opts.Storage, reading the configuration
// entries the log holds, and starts its disk goroutine.
func New(opts Options) (*Manager, error) {
	if opts.Storage == nil {
		return nil, errors.New("logmanager: no storage")
	}
	if opts.CacheEntries <= 0 {
		opts.CacheEntries = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		storage:    opts.Storage,
		cacheN:     opts.CacheEntries,
		log:        opts.Logger,
		newEntries: make(chan struct{}),
		wake:       make(chan struct{}, 1),
		diskDone:   make(chan struct{}),
	}
	m.firstIndex = opts.Storage.FirstIndex()
	m.lastIndex = opts.Storage.LastIndex()
	m.memStart = m.lastIndex + 1
	m.durable = m.lastIndex
	if err := m.loadConfigurations(); err != nil {
		return nil, err
	}
	go m.diskLoop()
	return m, nil
}

func (m *Manager) loadConfigurations() error {
	for lo := m.firstIndex; lo <= m.lastIndex; {
		ents, err := m.storage.Entries(lo, m.lastIndex+1, 4<<20)
		if err != nil {
			return fmt.Errorf("logmanager: scanning configurations: %w", err)
		}
		for _, e := range ents {
			if e.Type == raftpb.EntryType_ENTRY_TYPE_CONFIGURATION {
				c, err := conf.Decode(e.Data)
				if err != nil {
					return fmt.Errorf("logmanager: configuration entry %d: %w", e.Index, err)
				}
				m.confs.Add(conf.Entry{Index: e.Index, Term: e.Term, Conf: c})
			}
		}
		lo += uint64(len(ents))
	}
	return nil
}

// FirstIndex returns the first index the log holds.
func (m *Manager) FirstIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.firstIndex
}

// LastIndex returns the last index of the log (or of the snapshot, when the
// log is empty).
func (m *Manager) LastIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastIndex
}

// LastLogID returns the index and term of the last entry.
func (m *Manager) LastLogID() (index, term uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, _ := m.termLocked(m.lastIndex)
	return m.lastIndex, t
}

// DurableIndex returns the index through which the log is durable.
func (m *Manager) DurableIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.durable
}

// Snapshot returns the index and term of the last snapshot recorded with
// SetSnapshot.
func (m *Manager) Snapshot() (index, term uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapIndex, m.snapTerm
}

// Configuration returns the configuration in force: the latest one in the
// log, or the snapshot's.
func (m *Manager) Configuration() conf.Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.confs.Last()
}

// ConfigurationAt returns the configuration in force at index.
func (m *Manager) ConfigurationAt(index uint64) conf.Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.confs.At(index)
}

// Term returns the term of the entry at index. Index 0 has term 0; the
// last snapshot's index has the snapshot's term.
func (m *Manager) Term(index uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.termLocked(index)
}

func (m *Manager) termLocked(index uint64) (uint64, error) {
	switch {
	case index == 0:
		return 0, nil
	case index == m.snapIndex:
		return m.snapTerm, nil
	case index < m.firstIndex:
		return 0, fmt.Errorf("%w: %d < first %d", ErrCompacted, index, m.firstIndex)
	case index > m.lastIndex:
		return 0, fmt.Errorf("%w: %d > last %d", ErrUnavailable, index, m.lastIndex)
	case index >= m.memStart:
		return m.mem[index-m.memStart].Term, nil
	}
	t, err := m.storage.Term(index)
	if err != nil {
		return 0, fmt.Errorf("logmanager: term of %d: %w", index, err)
	}
	return t, nil
}

// Entries returns entries [lo, hi), at least one if lo < hi, stopping with
// the entry whose data takes the total past maxBytes (0: no limit). The
// entries must not be modified.
func (m *Manager) Entries(lo, hi uint64, maxBytes uint64) ([]*raftpb.Entry, error) {
	m.mu.Lock()
	if lo < m.firstIndex {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %d < first %d", ErrCompacted, lo, m.firstIndex)
	}
	if hi > m.lastIndex+1 || lo > hi {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: [%d, %d) beyond last %d", ErrUnavailable, lo, hi, m.lastIndex)
	}
	var out []*raftpb.Entry
	var size uint64
	if lo < m.memStart {
		// The older part is in storage, which is current below memStart.
		end := min(hi, m.memStart)
		m.mu.Unlock()
		ents, err := m.storage.Entries(lo, end, maxBytes)
		if err != nil {
			return nil, fmt.Errorf("logmanager: reading [%d, %d): %w", lo, end, err)
		}
		if uint64(len(ents)) < end-lo || end == hi {
			return ents, nil
		}
		out = ents
		for _, e := range ents {
			size += uint64(len(e.Data))
		}
		if maxBytes > 0 && size > maxBytes {
			return out, nil
		}
		m.mu.Lock()
		lo = end
		if lo < m.memStart || hi > m.lastIndex+1 {
			// The log changed under us; return what we have.
			m.mu.Unlock()
			return out, nil
		}
	}
	for i := lo; i < hi; i++ {
		e := m.mem[i-m.memStart]
		out = append(out, e)
		size += uint64(len(e.Data))
		if maxBytes > 0 && size > maxBytes {
			break
		}
	}
	m.mu.Unlock()
	return out, nil
}

// Wait returns a channel that is closed once the log's last index exceeds
// after (or the manager closes).
func (m *Manager) Wait(after uint64) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastIndex > after || m.closed {
		return closedChan
	}
	return m.newEntries
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Append appends entries that continue the log (the leader's path). done
// runs once they are durable, or with the storage error.
func (m *Manager) Append(entries []*raftpb.Entry, done func(error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usableLocked(); err != nil {
		return err
	}
	if len(entries) == 0 {
		m.enqueueLocked(op{kind: opBarrier, done: done})
		return nil
	}
	if entries[0].Index != m.lastIndex+1 {
		return fmt.Errorf("logmanager: append at %d, want %d", entries[0].Index, m.lastIndex+1)
	}
	m.appendLocked(entries, done)
	return nil
}

// AppendFollower merges entries received from a leader into the log: those
// already present with the same term are skipped, the first conflicting
// one truncates the log from there, the rest are appended. Entries below
// the first index (covered by the snapshot) are skipped. done runs once the
// whole log through the last of entries is durable. committed guards
// safety: a conflict at or below it is a broken invariant and is returned
// as an error without changing the log.
func (m *Manager) AppendFollower(entries []*raftpb.Entry, committed uint64, done func(error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usableLocked(); err != nil {
		return err
	}
	i := 0
	for ; i < len(entries); i++ {
		e := entries[i]
		if e.Index > m.lastIndex {
			break
		}
		if e.Index < m.firstIndex || e.Index <= m.snapIndex {
			continue
		}
		t, err := m.termLocked(e.Index)
		if err != nil {
			return err
		}
		if t != e.Term {
			if e.Index <= committed {
				return fmt.Errorf("logmanager: entry %d term %d conflicts with committed entry of term %d", e.Index, e.Term, t)
			}
			m.truncateSuffixLocked(e.Index-1, nil)
			break
		}
	}
	rest := entries[i:]
	if len(rest) > 0 && rest[0].Index != m.lastIndex+1 {
		return fmt.Errorf("logmanager: entries start at %d, leaving a gap after %d", rest[0].Index, m.lastIndex)
	}
	if len(rest) == 0 {
		m.enqueueLocked(op{kind: opBarrier, done: done})
		return nil
	}
	m.appendLocked(rest, done)
	return nil
}

func (m *Manager) usableLocked() error {
	if m.closed {
		return ErrClosed
	}
	return m.err
}

func (m *Manager) appendLocked(entries []*raftpb.Entry, done func(error)) {
	if m.memStart > m.lastIndex {
		m.memStart = m.lastIndex + 1
	}
	m.mem = append(m.mem, entries...)
	m.lastIndex = entries[len(entries)-1].Index
	for _, e := range entries {
		if e.Type == raftpb.EntryType_ENTRY_TYPE_CONFIGURATION {
			c, err := conf.Decode(e.Data)
			if err != nil {
				m.log.Error("undecodable configuration entry", "index", e.Index, "err", err)
				continue
			}
			m.confs.Add(conf.Entry{Index: e.Index, Term: e.Term, Conf: c})
		}
	}
	m.enqueueLocked(op{kind: opAppend, entries: entries, done: done})
	close(m.newEntries)
	m.newEntries = make(chan struct{})
}

func (m *Manager) truncateSuffixLocked(lastKept uint64, done func(error)) {
	if lastKept >= m.lastIndex {
		m.enqueueLocked(op{kind: opBarrier, done: done})
		return
	}
	if lastKept+1 <= m.memStart {
		m.mem = m.mem[:0]
		m.memStart = lastKept + 1
	} else {
		clear(m.mem[lastKept+1-m.memStart:])
		m.mem = m.mem[:lastKept+1-m.memStart]
	}
	m.lastIndex = lastKept
	m.durable = min(m.durable, lastKept)
	m.confs.TruncateSuffix(lastKept)
	m.pendingCut = true
	m.enqueueLocked(op{kind: opTruncateSuffix, index: lastKept, done: done})
}

// TruncatePrefix drops entries before firstKept (after a snapshot). It
// never drops entries beyond the last one.
func (m *Manager) TruncatePrefix(firstKept uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || firstKept <= m.firstIndex {
		return
	}
	firstKept = min(firstKept, m.lastIndex+1)
	m.firstIndex = firstKept
	if firstKept > m.memStart {
		n := min(firstKept-m.memStart, uint64(len(m.mem)))
		clear(m.mem[:n])
		m.mem = m.mem[n:]
		m.memStart += n
	}
	m.confs.TruncatePrefix(firstKept)
	m.enqueueLocked(op{kind: opTruncatePrefix, index: firstKept})
}

// SetSnapshot records that a snapshot covers the log through index (of
// term) with configuration c, and drops what it makes redundant:
//   - if the log holds the entry at index with the same term, the log is
//     kept from keepFrom on (entries before it are dropped);
//   - otherwise (term differs, or index lies beyond the log) the whole log
//     is discarded and restarts at index+1.
func (m *Manager) SetSnapshot(index, term uint64, c conf.Configuration, keepFrom uint64) {
	m.mu.Lock()
	if m.closed || index <= m.snapIndex {
		m.mu.Unlock()
		return
	}
	local, err := m.termLocked(index)
	m.snapIndex, m.snapTerm = index, term
	m.confs.SetSnapshot(conf.Entry{Index: index, Term: term, Conf: c})
	if err == nil && local == term {
		m.mu.Unlock()
		m.TruncatePrefix(min(keepFrom, index+1))
		return
	}
	// Discard everything; the log restarts after the snapshot.
	m.firstIndex = index + 1
	m.lastIndex = index
	clear(m.mem)
	m.mem = m.mem[:0]
	m.memStart = index + 1
	m.durable = index
	m.pendingCut = true
	m.enqueueLocked(op{kind: opReset, index: index + 1})
	close(m.newEntries)
	m.newEntries = make(chan struct{})
	m.mu.Unlock()
}

func (m *Manager) enqueueLocked(o op) {
	m.queue = append(m.queue, o)
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Close flushes queued mutations, stops the disk goroutine and closes the
// storage. Callers must not append concurrently with Close.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.diskDone
		return nil
	}
	m.closed = true
	close(m.newEntries)
	m.newEntries = closedChan
	select {
	case m.wake <- struct{}{}:
	default:
	}
	m.mu.Unlock()
	<-m.diskDone
	return m.storage.Close()
}

func (m *Manager) diskLoop() {
	defer close(m.diskDone)
	var batch []*raftpb.Entry
	var dones []func(error)
	for {
		m.mu.Lock()
		for len(m.queue) == 0 && !m.closed {
			m.mu.Unlock()
			<-m.wake
			m.mu.Lock()
		}
		ops := m.queue
		m.queue = nil
		m.pendingCut = false
		closed := m.closed
		lastAfter := m.lastIndex
		stickyErr := m.err
		m.mu.Unlock()

		if len(ops) == 0 && closed {
			return
		}
		err := stickyErr
		flush := func() {
			if len(batch) > 0 && err == nil {
				if e := m.storage.Append(batch); e != nil {
					err = fmt.Errorf("logmanager: append: %w", e)
				}
			}
			clear(batch)
			batch = batch[:0]
		}
		for _, o := range ops {
			if o.done != nil {
				dones = append(dones, o.done)
			}
			if o.kind == opAppend {
				batch = append(batch, o.entries...)
				continue
			}
			flush()
			if err != nil {
				continue
			}
			switch o.kind {
			case opTruncateSuffix:
				if e := m.storage.TruncateSuffix(o.index); e != nil {
					err = fmt.Errorf("logmanager: truncate suffix %d: %w", o.index, e)
				}
			case opTruncatePrefix:
				if e := m.storage.TruncatePrefix(o.index); e != nil {
					err = fmt.Errorf("logmanager: truncate prefix %d: %w", o.index, e)
				}
			case opReset:
				if e := m.storage.Reset(o.index); e != nil {
					err = fmt.Errorf("logmanager: reset to %d: %w", o.index, e)
				}
			}
		}
		flush()

		m.mu.Lock()
		if err != nil {
			if m.err == nil {
				m.log.Error("log storage failed; the log is read-only from now on", "err", err)
			}
			m.err = err
		} else {
			// Entries through lastAfter are durable, unless a truncation
			// queued since then removed some of them.
			d := lastAfter
			if m.pendingCut {
				d = min(d, m.durableFloorLocked())
			}
			m.durable = max(m.durable, min(d, m.lastIndex))
			m.trimCacheLocked()
		}
		m.mu.Unlock()
		for i, d := range dones {
			d(err)
			dones[i] = nil
		}
		dones = dones[:0]
	}
}

// durableFloorLocked returns the lowest index kept by a truncation still in
// the queue.
func (m *Manager) durableFloorLocked() uint64 {
	floor := m.lastIndex
	for _, o := range m.queue {
		switch o.kind {
		case opTruncateSuffix:
			floor = min(floor, o.index)
		case opReset:
			floor = min(floor, o.index-1)
		}
	}
	return floor
}

// trimCacheLocked drops durable entries from memory beyond the cache size.
func (m *Manager) trimCacheLocked() {
	if len(m.mem) <= m.cacheN {
		return
	}
	n := uint64(len(m.mem) - m.cacheN)
	if m.durable < m.memStart {
		return
	}
	n = min(n, m.durable-m.memStart+1)
	clear(m.mem[:n])
	m.mem = m.mem[n:]
	m.memStart += n
}

// SetInitialConfiguration sets the configuration of a brand-new group,
// whose log and snapshot are empty.
func (m *Manager) SetInitialConfiguration(c conf.Configuration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.confs.SetSnapshot(conf.Entry{Conf: c})
}
