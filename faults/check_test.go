//go:build linux

package faults

// The checks at the end of every run.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
)

// checkTimeout bounds the linearizability check of one history.
const checkTimeout = 3 * time.Minute

// check runs every end-of-run check. Safety failures are violations;
// the run fails on those and on anything else that goes wrong.
func (e *env) check() {
	e.t.Helper()
	e.mon.stop()
	e.checkLeaders()
	e.checkConverged()
	e.checkLostWrites()
	e.checkLinearizable()
	e.checkFiles()
	e.checkLogs()
	e.res.maxUnavail = e.unavailability()
	led, highest := e.mon.terms()
	e.t.Logf("faults: %s seed %d: %d operations (answers: %s); %d terms had a leader, highest term %d; longest time without a successful operation %v",
		e.sc.name, e.seed, e.w.countOps(), e.w.answers(), led, highest, e.res.maxUnavail.Round(time.Millisecond))
}

// checkLeaders: at most one leader per term, from the status samples.
func (e *env) checkLeaders() {
	for _, m := range e.mon.multipleLeaders() {
		e.violation("two-leaders", "two nodes reported being leader in the same %s", m)
	}
}

// checkConverged waits until every member has applied the leader's
// commit index, then reads every key from every member's local state: all
// must agree, and hold every acknowledged write of a key written once
// (the ledger writer's, the filler's).
func (e *env) checkConverged() {
	e.t.Helper()
	members := e.c.members()
	e.c.waitCaughtUp(30*time.Second, members...)
	keys := slices.Clone(e.w.keys)
	e.w.mu.Lock()
	ledger := maps.Clone(e.w.mu.ledger)
	e.w.mu.Unlock()
	keys = append(keys, slices.Sorted(maps.Keys(ledger))...)

	var states []map[string]State
	e.waitFor(30*time.Second, fmt.Sprintf("%v to agree on %d keys", ids(members), len(keys)), func() (bool, string) {
		states = make([]map[string]State, len(members))
		errs := make([]error, len(members))
		var wg sync.WaitGroup
		for i, n := range members {
			wg.Go(func() { states[i], errs[i] = e.readAll(n, keys) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return false, err.Error()
			}
		}
		for i := 1; i < len(members); i++ {
			for _, k := range keys {
				if states[i][k] != states[0][k] {
					return false, fmt.Sprintf("%s has %s=%v, %s has %v", members[0].id, k, states[0][k], members[i].id, states[i][k])
				}
			}
		}
		return true, ""
	})
	lost := 0
	for k, l := range ledger {
		got := states[0][k]
		switch {
		case got.Exists && got.Value != l.value:
			e.violation("invented-value", "ledger key %s holds %.20q..., which no client wrote", k, got.Value)
		case !got.Exists && l.acked:
			lost++
			if lost <= 5 {
				e.violation("lost-write", "the acknowledged write of ledger key %s is missing on every member", k)
			}
		}
	}
	e.res.lostWrites += lost
	if lost > 5 {
		e.violation("lost-write", "%d acknowledged ledger writes are missing in all", lost)
	}
	e.t.Logf("faults: %d members agree on %d keys (%d written once: ledger, filler)", len(members), len(keys), len(ledger))
}

// readAll reads keys from n's local state.
func (e *env) readAll(n *node, keys []string) (map[string]State, error) {
	out := make(map[string]State, len(keys))
	var mu sync.Mutex
	ch := make(chan string)
	var firstErr error
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for k := range ch {
				code, b, _, err := do(context.Background(), e.c.hc, "GET", n.url(kvPath(k), url.Values{"consistency": {"stale"}}), nil)
				if err == nil && code != 200 && code != 404 {
					err = fmt.Errorf("%s: stale GET %s: %d %s", n.id, k, code, trunc(b))
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				out[k] = State{Exists: code == 200, Value: string(b)}
				if code != 200 {
					out[k] = State{}
				}
				mu.Unlock()
			}
		})
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
	return out, firstErr
}

// checkLostWrites: every key's final value must be the effect of a write
// that no acknowledged write followed.
func (e *env) checkLostWrites() {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range e.w.history() {
		k := op.Input.(Input).Key
		byKey[k] = append(byKey[k], op)
	}
	e.w.mu.Lock()
	final := maps.Clone(e.w.mu.final)
	e.w.mu.Unlock()
	for _, k := range e.w.keys {
		got := final[k]
		ok := slices.Contains(FinalStates(byKey[k]), got)
		if !ok {
			e.res.lostWrites++
			e.violation("lost-write", "key %s ends as %v, which is not the effect of its last acknowledged write nor of any write that may follow it (candidates %v)",
				k, got, FinalStates(byKey[k]))
		}
	}
}

// checkLinearizable checks the history with porcupine, writing the
// visualisation if it fails.
func (e *env) checkLinearizable() {
	h := e.w.history()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(Model, h, checkTimeout)
	e.t.Logf("faults: linearizability of %d operations: %s (%v)", len(h), res, time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
		if !*flagKeep {
			return
		}
	case porcupine.Unknown:
		e.t.Errorf("faults: the linearizability check timed out after %v (seed %d)", checkTimeout, e.seed)
	case porcupine.Illegal:
		e.violation("not-linearizable", "the history of %d operations is not linearizable", len(h))
	}
	var ann []porcupine.Annotation
	for _, ev := range e.events() {
		ann = append(ann, porcupine.Annotation{Tag: "faults", Start: int64(ev.at), Description: ev.what, BackgroundColor: "#fde2e2"})
	}
	info.AddAnnotations(ann)
	var b bytes.Buffer
	if err := porcupine.Visualize(Model, info, &b); err != nil {
		e.t.Logf("faults: visualisation: %v", err)
		return
	}
	e.w.html = b.Bytes()
}

// checkFiles: no leftovers of saves, downloads or loads in any member's
// data dir, and every snapshot whole: its meta decodes, and it holds
// exactly the files its meta lists, each of the listed size and SHA-256.
func (e *env) checkFiles() {
	for _, n := range e.c.members() {
		for _, p := range n.checkDataDir() {
			e.violation("leftover-or-damaged-file", "%s: %s", n.id, p)
		}
	}
}

func (n *node) checkDataDir() []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	snap := filepath.Join(n.dir, "snap")
	entries, err := os.ReadDir(snap)
	if err != nil {
		bad("%v", err)
	}
	for _, de := range entries {
		name := de.Name()
		if !de.IsDir() || !strings.HasPrefix(name, "snapshot_") || len(name) != len("snapshot_")+20 {
			bad("snap/%s is left over", name)
			continue
		}
		for _, p := range checkSnapshot(filepath.Join(snap, name)) {
			bad("snap/%s: %s", name, p)
		}
	}
	for _, dir := range []string{"raft", filepath.Join("raft", "log"), "kv"} {
		entries, _ := os.ReadDir(filepath.Join(n.dir, dir))
		for _, de := range entries {
			if name := de.Name(); strings.HasSuffix(name, ".tmp") || name == "db.loading" {
				bad("%s/%s is left over", dir, name)
			}
		}
	}
	return problems
}

// checkSnapshot checks one snapshot directory against its meta file.
func checkSnapshot(dir string) []string {
	var problems []string
	b, err := os.ReadFile(filepath.Join(dir, "__raft_snapshot_meta"))
	if err != nil {
		return []string{err.Error()}
	}
	if len(b) < 8 || int(binary.LittleEndian.Uint32(b)) != len(b)-8 ||
		crc32.Checksum(b[8:], crc32.MakeTable(crc32.Castagnoli)) != binary.LittleEndian.Uint32(b[4:]) {
		return []string{"the meta file fails its frame or checksum"}
	}
	var t raftpb.SnapshotMetaTable
	if err := proto.Unmarshal(b[8:], &t); err != nil {
		return []string{fmt.Sprintf("the meta file does not decode: %v", err)}
	}
	listed := map[string]bool{"__raft_snapshot_meta": true}
	for _, f := range t.GetFiles() {
		listed[f.GetName()] = true
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.GetName())))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("file %s: %v", f.GetName(), err))
		case int64(len(data)) != f.GetSize():
			problems = append(problems, fmt.Sprintf("file %s is %d bytes, its meta says %d", f.GetName(), len(data), f.GetSize()))
		default:
			if sum := sha256.Sum256(data); !bytes.Equal(sum[:], f.GetSha256()) {
				problems = append(problems, fmt.Sprintf("file %s fails its SHA-256", f.GetName()))
			}
		}
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if !listed[filepath.ToSlash(rel)] {
			problems = append(problems, fmt.Sprintf("file %s is not in the meta (a partial or leftover file)", rel))
		}
		return nil
	})
	return problems
}

// checkLogs fails the run on a panic, a fatal error or a data race in any
// node's output.
func (e *env) checkLogs() {
	for _, n := range e.c.nodes {
		logs := n.logs()
		for _, bad := range []string{"WARNING: DATA RACE", "\npanic: ", "\nfatal error: "} {
			i := strings.Index(logs, bad)
			switch {
			case i < 0:
			case e.expectExits && (strings.Contains(logs[:i], "no space left on device") ||
				strings.Contains(logs[i:min(len(logs), i+8<<10)], "pebble/v2.(*DB).rotateWAL")):
				// A full disk may stop a node; how it stops is noted,
				// what it loses is what the other checks look at. pebble
				// (graftkv's state) panics when it cannot close a full WAL
				// (db.go: "stumbling on doesn't seem worthwhile"), and
				// that panic's message does not print the error.
				e.t.Logf("faults: note: %s crashed after running out of space: %s", n.id, firstLine(logs[i+1:]))
			default:
				e.violation("crash", "%s's log reports %q:\n%s", n.id, strings.TrimSpace(bad), logs[i:min(len(logs), i+4<<10)])
			}
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// unavailability is the longest time while the clients ran without an
// operation completing with a definite answer.
func (e *env) unavailability() time.Duration {
	var ends []int64
	for _, op := range e.w.history() {
		if op.Return != Infinity {
			ends = append(ends, op.Return)
		}
	}
	if len(ends) == 0 {
		return 0
	}
	slices.Sort(ends)
	var longest int64
	for i := 1; i < len(ends); i++ {
		longest = max(longest, ends[i]-ends[i-1])
	}
	return time.Duration(longest)
}
