package kv

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/transport"
)

func TestApplyOutcomes(t *testing.T) {
	c := newCluster(t, 1, 0, nil)
	k := []byte("k")
	for _, step := range []struct {
		cmd  Command
		want Code
	}{
		{Command{Op: OpDelete, Key: k}, CodeNotFound},
		{Command{Op: OpPutIfPrev, Key: k, Prev: []byte("a"), Value: []byte("b")}, CodeNotFound},
		{Command{Op: OpCreate, Key: k, Value: []byte("a")}, CodeOK},
		{Command{Op: OpCreate, Key: k, Value: []byte("z")}, CodeExists},
		{Command{Op: OpPutIfPrev, Key: k, Prev: []byte("x"), Value: []byte("b")}, CodeMismatch},
		{Command{Op: OpPutIfPrev, Key: k, Prev: []byte("a"), Value: []byte("b")}, CodeOK},
		{Command{Op: OpPut, Key: k, Value: []byte("c")}, CodeOK},
		{Command{Op: OpPutIfPrev, Key: k, Prev: []byte("c"), Value: []byte{}}, CodeOK},
		{Command{Op: OpPutIfPrev, Key: k, Prev: []byte{}, Value: []byte("d")}, CodeOK},
		{Command{Op: OpDelete, Key: k}, CodeOK},
		{Command{Op: OpDelete, Key: k}, CodeNotFound},
		{Command{Op: OpPut, Key: []byte("other"), Value: []byte("v")}, CodeOK},
	} {
		idx, got := c.apply(step.cmd)
		if got != step.want {
			t.Fatalf("%s %q prev=%q value=%q at %d: %v, want %v", step.cmd.Op, step.cmd.Key, step.cmd.Prev, step.cmd.Value, idx, got, step.want)
		}
	}
	want := map[string]string{"other": "v"}
	if got := c.contents(0); !maps.Equal(got, want) {
		t.Fatalf("contents %v, want %v", got, want)
	}
	if v, ok, err := c.nodes[0].srv.FSM().Get([]byte("other")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get(other) = %q, %v, %v", v, ok, err)
	}
}

// TestConcurrentCreatesOneWins proposes many creates of one key at once;
// they land in few Apply batches, where each must see the ones before it.
func TestConcurrentCreatesOneWins(t *testing.T) {
	c := newCluster(t, 1, 0, nil)
	node := c.nodes[0].srv.Node()
	const n = 50
	codes := make([]Code, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := node.Apply(ctx, Command{Op: OpCreate, Key: []byte("lock"), Value: fmt.Appendf(nil, "%d", i)}.Encode(nil))
			if err != nil {
				t.Error(err)
				return
			}
			codes[i] = res.Result.(Code)
		})
	}
	wg.Wait()
	won := 0
	for _, code := range codes {
		switch code {
		case CodeOK:
			won++
		case CodeExists:
		default:
			t.Fatalf("unexpected outcome %v", code)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates succeeded, want exactly 1", won)
	}
}

// fill writes n keys through the leader and deletes every tenth, and
// returns what the store should hold.
func fill(c *cluster, prefix string, n int, want map[string]string) {
	for i := range n {
		k := fmt.Sprintf("%s-%04d", prefix, i)
		v := fmt.Sprintf("value %d of %s", i, prefix)
		c.apply(Command{Op: OpPut, Key: []byte(k), Value: []byte(v)})
		want[k] = v
		if i%10 == 9 {
			c.apply(Command{Op: OpDelete, Key: []byte(k)})
			delete(want, k)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	c := newCluster(t, 1, 0, nil)
	want := map[string]string{}
	fill(c, "a", 300, want)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, err := c.nodes[0].srv.Node().Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	members := c.nodes[0].srv.FSM().Members()
	if got := c.contents(0); !maps.Equal(got, want) {
		t.Fatalf("before the snapshot: %d keys, want %d", len(got), len(want))
	}
	c.stop(0)

	store, err := snapshot.Open(filepath.Join(c.dir, "n1", "snap"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r, err := store.Open()
	if err != nil || r == nil {
		t.Fatalf("opening the snapshot: %v, %v", r, err)
	}
	defer r.Close()
	if r.Index() != idx {
		t.Fatalf("newest snapshot is %d, want %d", r.Index(), idx)
	}
	for _, name := range r.Files() {
		if filepath.Dir(name) != snapshotDir {
			t.Errorf("snapshot file %q outside %s/", name, snapshotDir)
		}
	}

	f, err := OpenFSM(t.TempDir(), FSMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var loaded LoadInfo
	f.opts.OnLoad = func(info LoadInfo) { loaded = info }
	if err := f.LoadSnapshot(r); err != nil {
		t.Fatal(err)
	}
	if got := fsmContents(t, f); !maps.Equal(got, want) {
		t.Fatalf("loaded %d keys, want %d", len(got), len(want))
	}
	if got := f.Members(); !maps.Equal(got, members) {
		t.Fatalf("loaded members %v, want %v", got, members)
	}
	if a := f.AppliedIndex(); a == 0 || a > idx {
		t.Fatalf("loaded applied index %d, want in (0, %d]", a, idx)
	}
	if loaded.Index != idx || loaded.Files != len(r.Files()) || loaded.Linked == 0 {
		t.Fatalf("load info %+v: want index %d, %d files, SSTs linked", loaded, idx, len(r.Files()))
	}
}

// TestRestartRebuildsState restarts a node whose state is a snapshot plus
// log entries after it: pebble is rebuilt from both.
func TestRestartRebuildsState(t *testing.T) {
	c := newCluster(t, 1, 0, nil)
	want := map[string]string{}
	fill(c, "before", 100, want)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[0].srv.Node().Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	fill(c, "after", 50, want)
	c.apply(Command{Op: OpDelete, Key: []byte("before-0000")})
	delete(want, "before-0000")
	applied := c.nodes[0].srv.Status().AppliedIndex
	c.stop(0)
	c.start(0)
	c.waitReady()
	c.waitFor("the log to replay", func() bool { return c.nodes[0].srv.Status().AppliedIndex >= applied })
	if got := c.contents(0); !maps.Equal(got, want) {
		t.Fatalf("after restart: %d keys, want %d", len(got), len(want))
	}
	// Writes go on where they left off.
	if _, code := c.apply(Command{Op: OpCreate, Key: []byte("after-0000"), Value: []byte("x")}); code != CodeExists {
		t.Fatalf("create of a key written before the restart: %v", code)
	}
}

// TestInstallSnapshotCatchUp has a follower fall behind the leader's
// compacted log, so that it installs a snapshot; a second install reuses
// the SST files the first brought.
func TestInstallSnapshotCatchUp(t *testing.T) {
	c := newCluster(t, 3, 0, func(cfg *Config) { cfg.SnapshotTrailingEntries = 5 })
	want := map[string]string{}
	fill(c, "warmup", 10, want)
	f := c.follower()
	c.stop(f)

	snap := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		idx, err := c.nodes[c.leader()].srv.Node().Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	catchUp := func(idx uint64) {
		c.start(f)
		c.waitFor("the follower to catch up", func() bool {
			l := c.nodes[c.leader()].srv.Status()
			s := c.nodes[f].srv.Status()
			return s.Snapshot.LastIncludedIndex >= idx && s.AppliedIndex >= l.AppliedIndex
		})
		if got, lwant := c.contents(f), c.contents(c.leader()); !maps.Equal(got, lwant) || !maps.Equal(got, want) {
			t.Fatalf("follower has %d keys, leader %d, want %d", len(got), len(lwant), len(want))
		}
	}

	fill(c, "first", 200, want)
	idx := snap()
	fill(c, "tail", 20, want)
	catchUp(idx)
	p1 := c.nodes[f].srv.Status().Snapshot.Progress
	if p1.FilesTotal == 0 || p1.FilesDone != p1.FilesTotal || p1.BytesDone != p1.BytesTotal {
		t.Fatalf("first install progress %+v, want complete", p1)
	}

	c.stop(f)
	fill(c, "second", 100, want)
	idx = snap()
	catchUp(idx)
	p2 := c.nodes[f].srv.Node().Status().Snapshot.Progress
	if p2.BytesReused == 0 || p2.BytesFetched > p2.BytesTotal-p2.BytesReused {
		t.Fatalf("second install %+v: want the first snapshot's SSTs reused, not fetched", p2)
	}
	t.Logf("second install: %d of %d bytes reused, %d fetched", p2.BytesReused, p2.BytesTotal, p2.BytesFetched)
}

func TestDataDirLocked(t *testing.T) {
	c := newCluster(t, 1, 0, nil)
	cfg := c.config(0)
	cfg.Transport, cfg.Router = c.nodes[0].trans, transport.NewRouter()
	if _, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("a second server on the same data dir: %v", err)
	}
	if got := c.contents(0); got == nil {
		t.Fatal("the first server's database was disturbed")
	}
	if _, code := c.apply(Command{Op: OpPut, Key: []byte("k"), Value: []byte("v")}); code != CodeOK {
		t.Fatalf("the first server no longer applies: %v", code)
	}
}
