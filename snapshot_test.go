package graft_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/rafttest"
	"github.com/graft-raft/graft/storage"
)

func withOptions(f func(o *graft.Options)) func(string, *graft.Options) {
	return func(_ string, o *graft.Options) { f(o) }
}

func snapshotNow(t *testing.T, n *graft.Node) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, err := n.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot on %s: %v", n.ID(), err)
	}
	return idx
}

func TestSnapshotSaveCompactsLog(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotTrailingEntries = 5
	})})
	for i := 0; i < 30; i++ {
		c.One(cmd("s-%d", i), 3, true)
	}
	leader := c.CheckOneLeader()
	n := c.Node(leader)
	idx := snapshotNow(t, n)
	st := n.Status()
	if st.Snapshot.LastIndex != idx || st.Snapshot.State != graft.SnapshotIdle {
		t.Fatalf("snapshot status %+v, want last index %d and IDLE", st.Snapshot, idx)
	}
	if want := idx + 1 - 5; st.FirstIndex != want {
		t.Fatalf("first log index %d after snapshot at %d, want %d (5 trailing entries)", st.FirstIndex, idx, want)
	}
	// Nothing new applied: a second snapshot is a no-op at the same index.
	if again := snapshotNow(t, n); again != idx {
		t.Fatalf("second snapshot at %d, want %d", again, idx)
	}
	// A restarted node loads its snapshot first and replays only what
	// follows it.
	c.Restart(leader)
	c.One(cmd("after-restart"), 3, true)
	f := c.FSM(leader)
	if f.Loads() != 1 {
		t.Fatalf("restarted node loaded %d snapshots, want 1", f.Loads())
	}
	for i := uint64(2); i <= idx; i++ {
		if _, ok := f.Has(i); !ok && i > 1 {
			if d, committed := c.Checker.Committed(i); committed {
				t.Fatalf("restarted node lost entry %d (%q) covered by its snapshot", i, d)
			}
		}
	}
	if got, max := f.Applies(), int(c.Checker.MaxIndex()-idx); got > max {
		t.Fatalf("restarted node applied %d entries, at most %d follow its snapshot", got, max)
	}
}

func TestSnapshotAutoByLogEntries(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotLogEntries = 20
		o.SnapshotTrailingEntries = 2
	})})
	for i := 0; i < 50; i++ {
		c.One(cmd("a-%d", i), 3, true)
	}
	c.WaitFor(5*time.Second, "every node to snapshot by log size", func() bool {
		for _, id := range c.IDs() {
			st := c.Node(id).Status()
			if st.Snapshot.LastIndex < 20 || st.FirstIndex < 10 {
				return false
			}
		}
		return true
	})
}

func TestSnapshotAutoByInterval(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotInterval = 300 * time.Millisecond
	})})
	c.One(cmd("first"), 3, true)
	c.WaitFor(5*time.Second, "every node to snapshot by interval", func() bool {
		for _, id := range c.IDs() {
			if c.Node(id).Status().Snapshot.LastIndex == 0 {
				return false
			}
		}
		return true
	})
}

// A follower that missed entries the leader compacted catches up by
// installing the leader's snapshot, and never replays covered entries.
func TestInstallSnapshotCatchUp(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotTrailingEntries = 3
	})})
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	f := without(c.IDs(), leader)[0]
	c.Disconnect(f)
	for i := 0; i < 40; i++ {
		c.One(cmd("lag-%d", i), 2, true)
	}
	idx := snapshotNow(t, c.Node(leader))
	if first := c.Node(leader).Status().FirstIndex; first <= c.Node(f).Status().LastIndex+1 {
		t.Fatalf("leader's log starts at %d: the follower (last %d) could still catch up from it", first, c.Node(f).Status().LastIndex)
	}
	appliesBefore := c.FSM(f).Applies()
	c.Reconnect(f)
	c.One(cmd("after"), 3, true)
	c.CheckConverged(10 * time.Second)
	fsm := c.FSM(f)
	if fsm.Loads() != 1 {
		t.Fatalf("follower loaded %d snapshots, want 1", fsm.Loads())
	}
	st := c.Node(f).Status()
	if st.Snapshot.LastIndex != idx {
		t.Fatalf("follower's snapshot at %d, want %d", st.Snapshot.LastIndex, idx)
	}
	// Applied after the install: only entries beyond the snapshot.
	if extra := fsm.Applies() - appliesBefore; extra > int(c.Checker.MaxIndex()-idx) {
		t.Fatalf("follower applied %d entries after the install; only %d follow the snapshot", extra, c.Checker.MaxIndex()-idx)
	}
	for i := uint64(2); i <= c.Checker.MaxIndex(); i++ {
		want, ok := c.Checker.Committed(i)
		if !ok {
			continue
		}
		if got, ok := fsm.Has(i); !ok || string(got) != string(want) {
			t.Fatalf("follower's state at %d is %q, want %q", i, got, want)
		}
	}
}

// A follower that missed logs compacted by two successive snapshots
// catches up from the newest.
func TestCatchUpAcrossTwoSnapshots(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotTrailingEntries = 1
	})})
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	f := without(c.IDs(), leader)[0]
	c.Disconnect(f)
	for i := 0; i < 20; i++ {
		c.One(cmd("x-%d", i), 2, true)
	}
	snapshotNow(t, c.Node(leader))
	for i := 0; i < 20; i++ {
		c.One(cmd("y-%d", i), 2, true)
	}
	second := snapshotNow(t, c.Node(leader))
	c.Reconnect(f)
	c.One(cmd("end"), 3, true)
	c.CheckConverged(10 * time.Second)
	if got := c.Node(f).Status().Snapshot.LastIndex; got < second {
		t.Fatalf("follower's snapshot at %d, want >= %d", got, second)
	}
}

// Every node snapshots, then all crash together: they come back from
// their snapshots plus log tails with nothing lost.
func TestLeaderRestartFromSnapshot(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotLogEntries = 10
		o.SnapshotTrailingEntries = 2
	})})
	for i := 0; i < 35; i++ {
		c.One(cmd("r-%d", i), 3, true)
	}
	c.WaitFor(5*time.Second, "every node to snapshot", func() bool {
		for _, id := range c.IDs() {
			if c.Node(id).Status().Snapshot.LastIndex == 0 {
				return false
			}
		}
		return true
	})
	leader := c.CheckOneLeader()
	c.Restart(leader)
	for _, id := range c.IDs() {
		c.Crash(id)
	}
	for _, id := range c.IDs() {
		if err := c.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	c.One(cmd("after"), 3, true)
	c.CheckConverged(10 * time.Second)
	for _, id := range c.IDs() {
		if c.FSM(id).Loads() != 1 {
			t.Fatalf("%s loaded %d snapshots at restart, want 1", id, c.FSM(id).Loads())
		}
	}
}

// A follower that caught up by installing a snapshot can take over as
// leader: its log starts after the snapshot, and the group goes on.
func TestTransferToSnapshotRecoveredPeer(t *testing.T) {
	// The transfer must complete within one election timeout.
	opts := stableOptions(3)
	opts.Configure = withOptions(func(o *graft.Options) { o.SnapshotTrailingEntries = 2 })
	c := rafttest.New(t, opts)
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	f := without(c.IDs(), leader)[0]
	c.Disconnect(f)
	for i := 0; i < 30; i++ {
		c.One(cmd("t-%d", i), 2, true)
	}
	snapshotNow(t, c.Node(leader))
	c.Reconnect(f)
	c.One(cmd("caught-up"), 3, true)
	if c.FSM(f).Loads() != 1 {
		t.Fatalf("%s loaded %d snapshots, want 1", f, c.FSM(f).Loads())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Node(leader).TransferLeadership(ctx, f); err != nil {
		t.Fatalf("transfer to the snapshot-recovered %s: %v", f, err)
	}
	c.WaitFor(5*time.Second, f+" to lead", func() bool { return c.Node(f).IsLeader() })
	c.One(cmd("under-new-leader"), 3, true)
	c.CheckConverged(10 * time.Second)
}

// damageSnapshot flips one byte in a file of id's snapshot at idx,
// keeping its size, so that only the checksum can tell.
func damageSnapshot(t *testing.T, c *rafttest.Cluster, id string, idx uint64) string {
	t.Helper()
	dir := filepath.Join(c.SnapshotDir(id), fmt.Sprintf("snapshot_%020d", idx))
	matches, err := filepath.Glob(filepath.Join(dir, "fsm", "*"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("snapshot files of %s: %v %v", id, matches, err)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(matches[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A follower whose newest snapshot was damaged on disk never loads it: it
// starts, discards it, keeps its log, and gets a snapshot from the leader,
// which saves a fresh one because its own (none here) is older than what
// the follower needs.
func TestDamagedSnapshotIsFetchedAgain(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotTrailingEntries = 2
	})})
	for i := 0; i < 20; i++ {
		c.One(cmd("c-%d", i), 3, true)
	}
	leader := c.CheckOneLeader()
	f := without(c.IDs(), leader)[0]
	idx := snapshotNow(t, c.Node(f))
	if c.Node(leader).Status().Snapshot.LastIndex != 0 {
		t.Fatal("the leader has a snapshot; this test needs it to have none")
	}
	c.Stop(f)
	damaged := damageSnapshot(t, c, f, idx)
	for i := 0; i < 5; i++ {
		c.One(cmd("while-down-%d", i), 2, true)
	}
	if err := c.Start(f); err != nil {
		t.Fatalf("start with a damaged snapshot: %v", err)
	}
	if _, err := os.Stat(damaged); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the damaged snapshot is still on disk: %v", err)
	}
	c.WaitFor(10*time.Second, f+" to install a snapshot from the leader", func() bool {
		st := c.Node(f).Status().Snapshot
		return st.AwaitingIndex == 0 && st.LastIndex >= idx
	})
	if got := c.Node(leader).Status().Snapshot.LastIndex; got < idx {
		t.Fatalf("leader snapshot at %d, want a fresh one at or after %d", got, idx)
	}
	c.One(cmd("after"), 3, true)
	c.CheckConverged(10 * time.Second)
	if c.FSM(f).Loads() != 1 {
		t.Fatalf("%s loaded %d snapshots, want exactly the leader's one", f, c.FSM(f).Loads())
	}
}

// A node that is its group's only voter has nobody to fetch a damaged
// snapshot from: it refuses to start with a clear error rather than load
// it.
func TestDamagedSnapshotOnlyVoterIsAnError(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 1})
	for i := 0; i < 5; i++ {
		c.One(cmd("c-%d", i), 1, true)
	}
	id := c.IDs()[0]
	idx := snapshotNow(t, c.Node(id))
	c.Stop(id)
	dir := damageSnapshot(t, c, id, idx)
	err := c.Start(id)
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("start with a damaged snapshot: %v, want an error wrapping ErrCorrupt", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the damaged snapshot of the only voter was removed: %v", err)
	}
	t.Logf("as expected: %v", err)
}
