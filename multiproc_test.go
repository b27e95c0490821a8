package graft_test

// Crash tests on real processes: three nodes run as children of the test
// binary (see package internal/testnode), each over gRPC with durable
// segment and metafile storage, and are killed with SIGKILL while clients
// write. No write the leader acknowledged may be lost or applied twice.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/internal/testnode"
)

// TestMain runs a node instead of the tests when the process is a child
// started by a testnode.Cluster.
func TestMain(m *testing.M) {
	if testnode.IsChild() {
		os.Exit(testnode.Main())
	}
	// Every node, replicator, transport and harness goroutine must be gone
	// once the tests are.
	leakcheck.VerifyTestMain(m)
}

const (
	kill9Wait    = 10 * time.Second // bound on each wait for the cluster
	kill9Clients = 4
)

func kill9Cluster(t *testing.T) *testnode.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts processes; skipped in -short mode")
	}
	// Registered before the cluster's cleanup, so it runs after the
	// children are dead.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { leakcheck.VerifyNone(t, ignore) })
	c := testnode.NewCluster(t, testnode.ClusterOptions{
		// 1 s, not testnode's 300 ms: with -race on a loaded 2-core
		// machine a follower can miss a 300 ms check-quorum window, and
		// the leader steps down mid-test.
		ElectionTimeout:   time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
	})
	c.StartAll()
	return c
}

// kill9WaitAcked waits until load has had n more writes acknowledged
// than it had when called.
func kill9WaitAcked(t *testing.T, c *testnode.Cluster, load *testnode.Load, n int, what string) {
	t.Helper()
	want := load.NumAcked() + n
	c.WaitFor(kill9Wait, fmt.Sprintf("%d acknowledged writes %s", want, what), func() bool { return load.NumAcked() >= want })
}

// TestKill9LeaderNoLostWrites kills the leader with SIGKILL while clients
// write to it, keeps writing through the new leader, restarts the killed
// node on its data directory, and does it all three times; then every node
// must hold every acknowledged write exactly once, in the same order.
func TestKill9LeaderNoLostWrites(t *testing.T) {
	c := kill9Cluster(t)
	c.WaitLeader(kill9Wait)

	load := c.StartLoad("w", kill9Clients)
	defer load.Stop()
	for cycle := range 3 {
		kill9WaitAcked(t, c, load, 40, "before the kill")
		leader, _, ok := c.Leader(context.Background())
		if !ok {
			t.Fatal("no leader")
		}
		c.Kill(leader) // clients are writing to it
		atKill := load.NumAcked()
		others := slices.DeleteFunc(c.IDs(), func(id string) bool { return id == leader })
		next := c.WaitLeader(kill9Wait, others...)
		t.Logf("cycle %d: killed leader %s with %d writes acknowledged; new leader %s", cycle, leader, atKill, next)
		kill9WaitAcked(t, c, load, 40, "after the kill")
		c.Start(leader)
		kill9WaitAcked(t, c, load, 20, "after the restart")
	}
	load.Stop()
	t.Logf("writes acknowledged: %d; answers by HTTP status: %v", load.NumAcked(), load.Codes())

	kill9CheckHistories(t, c, load.Acked())
}

// TestKill9AllNodes kills every node at once with SIGKILL while clients
// write, restarts them all, and checks that no acknowledged write was lost;
// twice, so the second crash hits a log recovered from the first.
func TestKill9AllNodes(t *testing.T) {
	c := kill9Cluster(t)
	c.WaitLeader(kill9Wait)

	acked := map[string]uint64{}
	for round := range 2 {
		load := c.StartLoad(fmt.Sprintf("r%d", round), kill9Clients)
		kill9WaitAcked(t, c, load, 50, "before the kill")
		c.KillAll() // writes are in flight
		load.Stop()
		for cmd, idx := range load.Acked() {
			acked[cmd] = idx
		}
		t.Logf("round %d: killed every node with %d writes acknowledged; answers by HTTP status: %v",
			round, load.NumAcked(), load.Codes())

		c.StartAll()
		t.Logf("round %d: leader after the restart: %s", round, c.WaitLeader(kill9Wait))
		// The new leader's first entry commits everything before it.
		kill9CheckHistories(t, c, acked)
	}
}

// kill9CheckHistories waits until every node has applied the same
// commands, among them every acknowledged one, then checks that each
// acknowledged command appears exactly once, at the index its leader
// acknowledged, and that no command appears twice.
func kill9CheckHistories(t *testing.T, c *testnode.Cluster, acked map[string]uint64) {
	t.Helper()
	ids := c.IDs()
	hist := map[string][]testnode.Entry{}
	var why string
	converged := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, id := range ids {
			ents, err := c.Applied(ctx, id)
			if err != nil {
				why = err.Error()
				return false
			}
			hist[id] = ents
		}
		for _, id := range ids[1:] {
			if !slices.Equal(hist[id], hist[ids[0]]) {
				why = fmt.Sprintf("%s applied %d commands, %s %d, and they differ", ids[0], len(hist[ids[0]]), id, len(hist[id]))
				return false
			}
		}
		have := map[string]bool{}
		for _, e := range hist[ids[0]] {
			have[e.Cmd] = true
		}
		var missing []string
		for cmd := range acked {
			if !have[cmd] {
				missing = append(missing, cmd)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			why = fmt.Sprintf("%d acknowledged commands are missing, e.g. %v", len(missing), missing[:min(5, len(missing))])
			return false
		}
		return true
	}
	deadline := time.Now().Add(kill9Wait)
	for !converged() {
		if time.Now().After(deadline) {
			for _, id := range ids {
				st, err := c.Status(context.Background(), id)
				t.Logf("%s: %+v %v", id, st, err)
			}
			kill9ReportDiff(t, hist)
			t.Fatalf("nodes did not converge within %v: %s", kill9Wait, why)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}

	ents := hist[ids[0]]
	seen := map[string]uint64{}
	for _, e := range ents {
		if prev, ok := seen[e.Cmd]; ok {
			t.Errorf("command %q applied twice, at indexes %d and %d", e.Cmd, prev, e.Index)
		}
		seen[e.Cmd] = e.Index
	}
	for cmd, idx := range acked {
		if got := seen[cmd]; got != idx {
			t.Errorf("acknowledged command %q at index %d was applied at index %d", cmd, idx, got)
		}
	}
	for _, id := range ids {
		st, err := c.Status(context.Background(), id)
		if err != nil {
			t.Errorf("%s: status: %v", id, err)
			continue
		}
		if st.Violations != "" || st.Err != "" {
			t.Errorf("%s: state machine violation %q, node error %q", id, st.Violations, st.Err)
		}
	}
	t.Logf("every node applied the same %d commands, including all %d acknowledged", len(ents), len(acked))
}

// kill9ReportDiff logs the end of each node's history and where each
// pair of histories first differs.
func kill9ReportDiff(t *testing.T, hist map[string][]testnode.Entry) {
	t.Helper()
	ids := slices.Sorted(maps.Keys(hist))
	for _, id := range ids {
		ents := hist[id]
		var last []string
		for _, e := range ents[max(0, len(ents)-5):] {
			last = append(last, fmt.Sprintf("%d/%d:%s", e.Index, e.Term, e.Cmd))
		}
		t.Logf("%s applied %d commands, the last: %s", id, len(ents), strings.Join(last, " "))
	}
	for i, a := range ids {
		for _, b := range ids[i+1:] {
			ea, eb := hist[a], hist[b]
			for k := range min(len(ea), len(eb)) {
				if ea[k] != eb[k] {
					t.Logf("%s and %s first differ at position %d: %+v vs %+v", a, b, k, ea[k], eb[k])
					break
				}
			}
		}
	}
}
