package rafttest

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/raftpb"
)

// Applied is one entry as a state machine saw it.
type Applied struct {
	Index uint64
	Term  uint64
	Data  []byte
}

// Checker collects what every node applied and which node led which term,
// and reports the first violation of raft's safety properties:
//   - at most one leader per term;
//   - every node applies the same command at the same index;
//   - a node applies indexes in order, each exactly once (since its last
//     restart or snapshot load).
//
// It is safe for concurrent use.
type Checker struct {
	mu        sync.Mutex
	leaders   map[uint64]string // term -> leader id
	committed map[uint64][]byte // index -> command, as first applied anywhere
	maxIndex  uint64
	err       error
}

// NewChecker returns an empty Checker.
func NewChecker() *Checker {
	return &Checker{leaders: map[uint64]string{}, committed: map[uint64][]byte{}}
}

// Err returns the first violation seen, or nil.
func (c *Checker) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Checker) failf(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(format, args...)
	}
}

// NoteLeader records that id leads term.
func (c *Checker) NoteLeader(term uint64, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.leaders[term]; ok && prev != id {
		c.failf("two leaders in term %d: %s and %s", term, prev, id)
		return
	}
	c.leaders[term] = id
}

// Committed returns the command committed at index, if any node applied it.
func (c *Checker) Committed(index uint64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.committed[index]
	return d, ok
}

// MaxIndex returns the highest index any node applied.
func (c *Checker) MaxIndex() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxIndex
}

func (c *Checker) noteApplied(node string, a Applied) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.committed[a.Index]; ok {
		if !bytes.Equal(prev, a.Data) {
			c.failf("node %s applied %q at index %d, another node applied %q", node, a.Data, a.Index, prev)
		}
		return
	}
	c.committed[a.Index] = bytes.Clone(a.Data)
	c.maxIndex = max(c.maxIndex, a.Index)
}

// FSM is a test state machine: it records every entry it applies, checks
// order and agreement through a Checker, and reports leadership to it.
type FSM struct {
	id      string
	checker *Checker

	mu         sync.Mutex
	applied    []Applied
	last       uint64
	saves      int
	loads      int
	applies    int
	loadedMeta *raftpb.SnapshotMeta
}

// LoadedMeta returns the meta of the last snapshot loaded, if any.
func (f *FSM) LoadedMeta() *raftpb.SnapshotMeta {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadedMeta
}

// NewFSM returns a state machine for node id reporting to checker.
func NewFSM(id string, checker *Checker) *FSM {
	return &FSM{id: id, checker: checker}
}

// Apply implements graft.StateMachine.
func (f *FSM) Apply(it *graft.Iterator) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for it.Next() {
		a := Applied{Index: it.Index(), Term: it.Term(), Data: bytes.Clone(it.Data())}
		if a.Index <= f.last {
			f.checker.mu.Lock()
			f.checker.failf("node %s applied index %d after %d", f.id, a.Index, f.last)
			f.checker.mu.Unlock()
		}
		f.last = a.Index
		f.applies++
		f.applied = append(f.applied, a)
		f.checker.noteApplied(f.id, a)
		it.SetResult(a.Index)
	}
	return nil
}

// SaveSnapshot implements graft.StateMachine: it writes every entry
// applied so far to one file, on another goroutine, from a point-in-time
// copy.
func (f *FSM) SaveSnapshot(w graft.SnapshotWriter, done func(error)) {
	f.mu.Lock()
	view := slices.Clone(f.applied)
	f.saves++
	f.mu.Unlock()
	go func() {
		done(writeEntries(filepath.Join(w.Path(), snapshotFile), view, w))
	}()
}

const snapshotFile = "fsm/applied.dat"

func writeEntries(path string, entries []Applied, w graft.SnapshotWriter) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var buf []byte
	for _, a := range entries {
		buf = binary.AppendUvarint(buf, a.Index)
		buf = binary.AppendUvarint(buf, a.Term)
		buf = binary.AppendUvarint(buf, uint64(len(a.Data)))
		buf = append(buf, a.Data...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		return err
	}
	return w.AddFile(snapshotFile, []byte("rafttest"))
}

// LoadSnapshot implements graft.StateMachine: the state becomes the
// snapshot's entries, and the next entry applied must follow its index.
func (f *FSM) LoadSnapshot(r graft.SnapshotReader) error {
	var entries []Applied
	if slices.Contains(r.Files(), snapshotFile) {
		b, err := os.ReadFile(filepath.Join(r.Path(), snapshotFile))
		if err != nil {
			return err
		}
		for len(b) > 0 {
			var a Applied
			var n, l uint64
			var k int
			if a.Index, k = binary.Uvarint(b); k <= 0 {
				return fmt.Errorf("rafttest: bad snapshot file")
			}
			b = b[k:]
			if a.Term, k = binary.Uvarint(b); k <= 0 {
				return fmt.Errorf("rafttest: bad snapshot file")
			}
			b = b[k:]
			if l, k = binary.Uvarint(b); k <= 0 || uint64(len(b)-k) < l {
				return fmt.Errorf("rafttest: bad snapshot file")
			}
			n = uint64(k)
			a.Data = bytes.Clone(b[n : n+l])
			b = b[n+l:]
			entries = append(entries, a)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := r.Meta().LastIncludedIndex
	if len(entries) > 0 && entries[len(entries)-1].Index > idx {
		return fmt.Errorf("rafttest: snapshot %d holds entry %d", idx, entries[len(entries)-1].Index)
	}
	f.applied = entries
	f.last = idx
	f.loads++
	f.loadedMeta = r.Meta()
	return nil
}

// Saves and Loads count the snapshots this FSM saved and loaded.
func (f *FSM) Saves() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.saves
}

// Loads counts the snapshots this FSM loaded.
func (f *FSM) Loads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loads
}

// Applies counts the entries this FSM applied through Apply (not through
// snapshot loads).
func (f *FSM) Applies() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies
}

// OnLeaderStart implements graft.LeaderObserver.
func (f *FSM) OnLeaderStart(term uint64) { f.checker.NoteLeader(term, f.id) }

// OnLeaderStop implements graft.LeaderObserver.
func (f *FSM) OnLeaderStop(uint64) {}

// Applied returns a copy of what this FSM applied since it was created.
func (f *FSM) Applied() []Applied {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Applied(nil), f.applied...)
}

// Value reads the FSM as a key-value register: the value of the last
// applied command of the form "key=value", if any.
func (f *FSM) Value(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	prefix := key + "="
	for i := len(f.applied) - 1; i >= 0; i-- {
		if d := string(f.applied[i].Data); strings.HasPrefix(d, prefix) {
			return d[len(prefix):], true
		}
	}
	return "", false
}

// LastApplied returns the last index applied.
func (f *FSM) LastApplied() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Has reports whether the FSM applied data at index.
func (f *FSM) Has(index uint64) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := slices.BinarySearchFunc(f.applied, index, func(a Applied, idx uint64) int { return cmp.Compare(a.Index, idx) })
	if !ok {
		return nil, false
	}
	return f.applied[i].Data, true
}
