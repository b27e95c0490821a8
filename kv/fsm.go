package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/graft-raft/graft"
)

// Code is the outcome of an applied Command, returned as
// graft.ApplyResult.Result. Conditional commands that do not hold change
// nothing; they are outcomes, not errors.
type Code int

// Outcomes.
const (
	// CodeOK: the command took effect.
	CodeOK Code = iota
	// CodeNotFound: delete or put-if-prev of a missing key.
	CodeNotFound
	// CodeExists: create of a key that is present.
	CodeExists
	// CodeMismatch: put-if-prev whose Prev differs from the current value.
	CodeMismatch
)

// String names the outcome.
func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeNotFound:
		return "not found"
	case CodeExists:
		return "exists"
	case CodeMismatch:
		return "mismatch"
	}
	return fmt.Sprintf("code(%d)", int(c))
}

// Keys in pebble: user keys and graftkv's own records live in separate
// ranges, so a user may store any key.
const (
	userPrefix   = 'u'
	memberPrefix = "m/member/"
	appliedKey   = "m/applied"
)

func userKey(k []byte) []byte { return append([]byte{userPrefix}, k...) }

// Directory names under the FSM's directory and in a snapshot.
const (
	liveDir    = "db"         // the open pebble database
	loadingDir = "db.loading" // a snapshot being turned into the next liveDir
	// snapshotDir is the pebble checkpoint inside a snapshot; every
	// snapshot file name starts with snapshotDir + "/".
	snapshotDir = "db"
)

// FSMOptions configure an FSM. The zero value is valid.
type FSMOptions struct {
	// Logger receives snapshot events and pebble's messages. nil discards.
	Logger *slog.Logger
	// OnSave, if set, is called after each snapshot save the FSM started,
	// once graft has made it durable (or failed), on a goroutine of the
	// FSM's. It must not block for long.
	OnSave func(SaveInfo)
	// OnLoad, if set, is called after each snapshot load, on graft's apply
	// goroutine. It must not block and must not call into the Node.
	OnLoad func(LoadInfo)
	// OnError, if set, is called once graft has stopped the node after a
	// fatal error (a storage failure, a command that does not apply), on
	// graft's apply goroutine. It must not block.
	OnError func(error)
}

// SaveInfo describes one snapshot save.
type SaveInfo struct {
	// Files and Bytes count the checkpoint's files and their total size.
	Files int
	Bytes int64
	// Checkpoint is the time the apply loop was held (memtable flush and
	// checkpoint); Duration the whole save, including graft syncing and
	// checksumming the files.
	Checkpoint, Duration time.Duration
	// Err is the FSM's own failure, if any (graft logs its own).
	Err error
}

// LoadInfo describes one snapshot load.
type LoadInfo struct {
	// Index is the last log index the snapshot covers.
	Index uint64
	// Files and Bytes count the snapshot's files and total size; Linked
	// of those bytes were hard-linked rather than copied.
	Files         int
	Bytes, Linked int64
	Duration      time.Duration
}

// FSM is graftkv's state machine: a pebble database holding the keys, the
// members' HTTP addresses and the last applied index.
//
// The raft log is the durable source of truth and the database a cache
// rebuilt from it: OpenFSM starts from an empty database, graft then loads
// the newest snapshot (LoadSnapshot replaces the database with the
// snapshot's checkpoint) and replays the log after it. So pebble runs
// without a WAL of its own: an apply only fills the memtable, a crash
// loses nothing that the log does not restore, and a full disk cannot fail
// an apply (pebble panics on a failed WAL write); its flushes retry.
//
// A snapshot is a pebble checkpoint: the immutable SST files, hard-linked,
// plus a small MANIFEST and OPTIONS file. Unchanged SSTs have the same
// SHA-256 from one snapshot to the next, so an install sends a follower
// only the SSTs it does not have.
//
// graft calls Apply, SaveSnapshot and LoadSnapshot from its apply
// goroutine; Get, Member, Members, Scan and AppliedIndex are safe for
// concurrent use with them and with each other. Close after the node has
// shut down.
type FSM struct {
	dir  string
	log  *slog.Logger
	opts FSMOptions

	// mu guards the database handle: readers hold it shared, LoadSnapshot
	// and Close exclusively while they swap or close it. The apply
	// goroutine, the only one that swaps it, reads it without the lock.
	mu struct {
		sync.RWMutex
		db *pebble.DB // nil once closed
	}
	members atomic.Pointer[map[string]string] // immutable; replaced on change
	applied atomic.Uint64
	saves   sync.WaitGroup // saves finishing on their own goroutine
}

var (
	_ graft.StateMachine  = (*FSM)(nil)
	_ graft.ErrorObserver = (*FSM)(nil)
)

// OpenFSM creates the state machine in dir, which it owns: whatever dir
// holds is removed, and the FSM starts empty, at index 0.
func OpenFSM(dir string, opts FSMOptions) (*FSM, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f := &FSM{dir: dir, log: opts.Logger, opts: opts}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("kv: clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kv: create %s: %w", dir, err)
	}
	db, err := f.open()
	if err != nil {
		return nil, err
	}
	f.mu.db = db
	f.members.Store(&map[string]string{})
	return f, nil
}

func (f *FSM) open() (*pebble.DB, error) {
	p := filepath.Join(f.dir, liveDir)
	// No WAL: the raft log is this database's write-ahead log (see FSM).
	db, err := pebble.Open(p, &pebble.Options{Logger: pebbleLogger{f.log}, DisableWAL: true})
	if err != nil {
		return nil, fmt.Errorf("kv: open pebble in %s: %w", p, err)
	}
	return db, nil
}

// Close closes the database. Reads fail with ErrClosed afterwards. Call
// it after the node has shut down; it waits for saves still finishing.
func (f *FSM) Close() error {
	f.saves.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.db == nil {
		return nil
	}
	err := f.mu.db.Close()
	f.mu.db = nil
	if err != nil {
		return fmt.Errorf("kv: close pebble: %w", err)
	}
	return nil
}

// Apply applies a batch of commands in one pebble batch, committed to the
// memtable only (the raft log is durable; see FSM). Each entry's result is
// a Code. A command that does not decode is fatal for the node: skipping
// it would make this replica differ from the others.
func (f *FSM) Apply(it *graft.Iterator) error {
	db := f.mu.db
	if db == nil {
		return ErrClosed
	}
	b := db.NewIndexedBatch() // reads see the batch's own earlier writes
	defer b.Close()
	var last uint64
	var members map[string]string
	for it.Next() {
		c, err := DecodeCommand(it.Data())
		if err != nil {
			return fmt.Errorf("kv: entry %d: %w", it.Index(), err)
		}
		code, err := apply(b, c)
		if err != nil {
			return fmt.Errorf("kv: entry %d (%s): %w", it.Index(), c.Op, err)
		}
		if c.Op == OpSetMember {
			if members == nil {
				members = maps.Clone(*f.members.Load())
			}
			members[string(c.Key)] = string(c.Value)
		}
		it.SetResult(code)
		last = it.Index()
	}
	if last == 0 {
		return nil
	}
	if err := b.Set([]byte(appliedKey), binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("kv: commit entries through %d: %w", last, err)
	}
	f.applied.Store(last)
	if members != nil {
		f.members.Store(&members)
	}
	return nil
}

// apply applies one command to b.
func apply(b *pebble.Batch, c Command) (Code, error) {
	if c.Op == OpSetMember {
		return CodeOK, b.Set(append([]byte(memberPrefix), c.Key...), c.Value, nil)
	}
	k := userKey(c.Key)
	cur, found, err := batchGet(b, k)
	if err != nil {
		return 0, err
	}
	switch c.Op {
	case OpPutIfPrev:
		if !found {
			return CodeNotFound, nil
		}
		if !bytes.Equal(cur, c.Prev) {
			return CodeMismatch, nil
		}
	case OpCreate:
		if found {
			return CodeExists, nil
		}
	case OpDelete:
		if !found {
			return CodeNotFound, nil
		}
		return CodeOK, b.Delete(k, nil)
	}
	return CodeOK, b.Set(k, c.Value, nil)
}

// batchGet reads key through an indexed batch; the value is a copy.
func batchGet(b *pebble.Batch, key []byte) ([]byte, bool, error) {
	v, closer, err := b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

// OnError implements graft.ErrorObserver: the node stopped after err.
func (f *FSM) OnError(err error) {
	f.log.Error("the node stopped after a fatal error", "err", err)
	if f.opts.OnError != nil {
		f.opts.OnError(err)
	}
}

// Get returns key's value, and whether it is present. It reads the state
// as applied so far on this node: after Node.ReadIndex for a linearizable
// read, directly for a stale one.
func (f *FSM) Get(key []byte) ([]byte, bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mu.db == nil {
		return nil, false, ErrClosed
	}
	v, closer, err := f.mu.db.Get(userKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("kv: get: %w", err)
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

// Scan calls fn for every key and value in key order until fn returns
// false. The slices are valid only during the call.
func (f *FSM) Scan(fn func(key, value []byte) bool) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mu.db == nil {
		return ErrClosed
	}
	iter, err := f.mu.db.NewIter(&pebble.IterOptions{LowerBound: []byte{userPrefix}, UpperBound: []byte{userPrefix + 1}})
	if err != nil {
		return err
	}
	for ok := iter.First(); ok; ok = iter.Next() {
		v, err := iter.ValueAndErr()
		if err != nil {
			iter.Close()
			return err
		}
		if !fn(iter.Key()[1:], v) {
			break
		}
	}
	return iter.Close()
}

// Member returns the HTTP address recorded for peer id.
func (f *FSM) Member(id string) (string, bool) {
	a, ok := (*f.members.Load())[id]
	return a, ok
}

// Members returns a copy of every recorded peer id → HTTP address.
func (f *FSM) Members() map[string]string { return maps.Clone(*f.members.Load()) }

// AppliedIndex returns the index of the last command applied (0 if none
// since the snapshot loaded). graft's Status().AppliedIndex also counts
// the entries it handles itself, so it may be larger.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// SaveSnapshot flushes the memtable and checkpoints pebble into
// w.Path()/db — a point-in-time view, since nothing is applied meanwhile;
// only SSTs, the MANIFEST and OPTIONS —
// then registers the files and lets graft sync and checksum them on
// another goroutine while applies go on.
func (f *FSM) SaveSnapshot(w graft.SnapshotWriter, done func(error)) {
	start := time.Now()
	files, size, err := f.checkpoint(w)
	info := SaveInfo{Files: len(files), Bytes: size, Checkpoint: time.Since(start)}
	if err != nil {
		info.Err = err
		f.saved(info, start)
		done(err)
		return
	}
	f.saves.Add(1)
	go func() {
		defer f.saves.Done()
		done(nil) // graft syncs and checksums the files, then commits the snapshot
		f.saved(info, start)
	}()
}

func (f *FSM) saved(info SaveInfo, start time.Time) {
	info.Duration = time.Since(start)
	if info.Err != nil {
		f.log.Error("snapshot checkpoint failed", "err", info.Err)
	} else {
		f.log.Info("snapshot checkpoint written", "files", info.Files, "bytes", info.Bytes,
			"checkpoint", info.Checkpoint.Round(time.Microsecond), "total", info.Duration.Round(time.Microsecond))
	}
	if f.opts.OnSave != nil {
		f.opts.OnSave(info)
	}
}

// checkpoint writes the checkpoint into w and adds its files.
func (f *FSM) checkpoint(w graft.SnapshotWriter) (names []string, size int64, err error) {
	db := f.mu.db
	if db == nil {
		return nil, 0, ErrClosed
	}
	// Flushing first puts every applied key into SSTs, which the next
	// snapshot shares. Flush returns once every memtable up to the current
	// one is flushed, and nothing is written meanwhile (this runs on the
	// apply goroutine), so the SSTs hold every applied key. The WAL files
	// the checkpoint copies (pebble creates one at open even with the WAL
	// off) hold nothing live, so they are dropped: pebble opens a
	// directory without WALs as empty of unflushed writes.
	if err := db.Flush(); err != nil {
		return nil, 0, fmt.Errorf("kv: flush memtable: %w", err)
	}
	dst := filepath.Join(w.Path(), snapshotDir)
	if err := db.Checkpoint(dst); err != nil {
		return nil, 0, fmt.Errorf("kv: checkpoint into %s: %w", dst, err)
	}
	all, err := os.ReadDir(dst)
	if err != nil {
		return nil, 0, fmt.Errorf("kv: list checkpoint: %w", err)
	}
	var ents []os.DirEntry
	for _, e := range all {
		if strings.HasSuffix(e.Name(), ".log") {
			if err := os.Remove(filepath.Join(dst, e.Name())); err != nil {
				return nil, 0, fmt.Errorf("kv: drop WAL from checkpoint: %w", err)
			}
			continue
		}
		ents = append(ents, e)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return nil, 0, fmt.Errorf("kv: checkpoint holds %s, not a regular file", e.Name())
		}
		fi, err := e.Info()
		if err != nil {
			return nil, 0, err
		}
		name := snapshotDir + "/" + e.Name()
		if err := w.AddFile(name, nil); err != nil {
			return nil, 0, err
		}
		names = append(names, name)
		size += fi.Size()
	}
	return names, size, nil
}

// LoadSnapshot replaces the database with the snapshot's checkpoint: SST
// files are hard-linked (they are immutable, for pebble and for graft's
// snapshot store alike), the rest copied, since pebble may rewrite them. Readers wait only while the directories swap.
func (f *FSM) LoadSnapshot(r graft.SnapshotReader) error {
	start := time.Now()
	meta := r.Meta()
	info := LoadInfo{Index: meta.GetLastIncludedIndex()}
	tmp := filepath.Join(f.dir, loadingDir)
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("kv: clear %s: %w", tmp, err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("kv: create %s: %w", tmp, err)
	}
	for _, name := range r.Files() {
		base, ok := strings.CutPrefix(name, snapshotDir+"/")
		if !ok || base == "" || strings.Contains(base, "/") {
			return fmt.Errorf("%w: unexpected file %q", ErrBadSnapshot, name)
		}
		src := filepath.Join(r.Path(), filepath.FromSlash(name))
		n, linked, err := linkOrCopy(src, filepath.Join(tmp, base), immutable(base))
		if err != nil {
			return fmt.Errorf("kv: load snapshot %d: %w", info.Index, err)
		}
		info.Files++
		info.Bytes += n
		if linked {
			info.Linked += n
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.db == nil {
		return ErrClosed
	}
	err := f.mu.db.Close()
	f.mu.db = nil
	if err != nil {
		return fmt.Errorf("kv: close pebble: %w", err)
	}
	live := filepath.Join(f.dir, liveDir)
	if err := os.RemoveAll(live); err != nil {
		return fmt.Errorf("kv: remove %s: %w", live, err)
	}
	if err := os.Rename(tmp, live); err != nil {
		return fmt.Errorf("kv: rename %s to %s: %w", tmp, live, err)
	}
	db, err := f.open()
	if err != nil {
		return err
	}
	applied, members, err := readMeta(db)
	if err != nil {
		db.Close()
		return err
	}
	if applied > info.Index {
		db.Close()
		return fmt.Errorf("%w: its data has entry %d applied, beyond its index %d", ErrBadSnapshot, applied, info.Index)
	}
	f.mu.db = db
	f.applied.Store(applied)
	f.members.Store(&members)
	info.Duration = time.Since(start)
	f.log.Info("snapshot loaded", "index", info.Index, "files", info.Files, "bytes", info.Bytes,
		"linked_bytes", info.Linked, "took", info.Duration.Round(time.Microsecond))
	if f.opts.OnLoad != nil {
		f.opts.OnLoad(info)
	}
	return nil
}

// readMeta reads the applied index and members from db.
func readMeta(db *pebble.DB) (uint64, map[string]string, error) {
	var applied uint64
	v, closer, err := db.Get([]byte(appliedKey))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, nil, fmt.Errorf("kv: read applied index: %w", err)
	default:
		if len(v) != 8 {
			closer.Close()
			return 0, nil, fmt.Errorf("%w: applied index is %d bytes", ErrBadSnapshot, len(v))
		}
		applied = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	members := map[string]string{}
	lo := []byte(memberPrefix)
	hi := append([]byte(memberPrefix[:len(memberPrefix)-1]), memberPrefix[len(memberPrefix)-1]+1)
	iter, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, nil, err
	}
	for ok := iter.First(); ok; ok = iter.Next() {
		v, err := iter.ValueAndErr()
		if err != nil {
			iter.Close()
			return 0, nil, err
		}
		members[string(iter.Key()[len(lo):])] = string(v)
	}
	return applied, members, iter.Close()
}

// immutable reports whether pebble never modifies the file once written.
func immutable(name string) bool {
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")
}

// linkOrCopy makes dst a hard link to src if link is set and the
// filesystem allows it, else a copy. It returns the file's size.
func linkOrCopy(src, dst string, link bool) (int64, bool, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return 0, false, err
	}
	if link && os.Link(src, dst) == nil {
		return fi.Size(), true, nil
	}
	in, err := os.Open(src)
	if err != nil {
		return 0, false, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, false, err
	}
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, false, err
}

// pebbleLogger sends pebble's messages to slog: informational ones at
// debug level.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf reports what pebble considers a broken invariant (corruption);
// like pebble's default logger, it does not return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic(msg)
}
