//go:build unix

package e2e

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestKill9Leader kills the leader with SIGKILL while clients write, keeps
// writing through the new leader, restarts the killed node on its data,
// and then every node must hold every acknowledged write.
func TestKill9Leader(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	c.start()
	old := c.waitLeader()

	ld := c.startLoad("kill9", 4, 25)
	ld.waitAcked(t, 60, "before the kill")
	old.kill()
	atKill := ld.acked()
	next := c.waitLeader(c.followers(old)...)
	if next == old {
		t.Fatalf("the killed node %s is still the leader", old.id)
	}
	t.Logf("killed leader %s with %d writes acknowledged; new leader %s", old.id, atKill, next.id)
	ld.waitAcked(t, 60, "after the kill")
	old.start()
	ld.waitAcked(t, 40, "after the restart")
	ld.stop()
	t.Logf("writes acknowledged: %d; answers: %v", ld.acked(), ld.answers())
	c.checkConverged(t, ld.history())
}

// TestRestartAll stops every node gracefully and restarts them: the data
// persists. Then it kills every node with SIGKILL while clients write, and
// restarts them with a --peers that names only the node itself, which the
// spec says is ignored once the data directory holds state: the cluster
// is the same three nodes and no acknowledged write is lost.
func TestRestartAll(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	c.start()
	l := c.waitLeader()

	want := map[string][]byte{}
	for i := range 100 {
		want[fmt.Sprintf("persist-%03d", i)] = fmt.Appendf(nil, "value-%d", i)
	}
	c.putMany(l, want, 8)
	for i := range 10 {
		k := fmt.Sprintf("persist-%03d", i*10)
		l.reqFollow("DELETE", kvPath(k), nil, nil).want(t, "delete "+k, 200)
		delete(want, k)
	}
	c.stopAll(true)

	c.start()
	l = c.waitLeader()
	check := func(n *node) {
		t.Helper()
		for i := range 100 {
			k := fmt.Sprintf("persist-%03d", i)
			v, ok, err := c.staleGet(n, k)
			if err != nil {
				t.Fatal(err)
			}
			if w, in := want[k]; ok != in || v != string(w) {
				t.Errorf("%s after a restart of all nodes: %s = %q (exists %v), want %q (exists %v)", n.id, k, v, ok, w, in)
			}
		}
	}
	// Linearizable reads through the new leader see everything...
	for k, v := range want {
		if got := l.req("GET", kvPath(k), nil, nil).want(t, "get "+k, 200).body; string(got) != string(v) {
			t.Fatalf("after a restart of all nodes %s = %q, want %q", k, got, v)
		}
	}
	// ...and so does every node's local state once it has applied the log.
	c.waitApplied(l.mustStatus().CommitIndex)
	for _, n := range c.nodes {
		check(n)
	}

	// Round two: kill -9 everything under load.
	ld := c.startLoad("all", 4, 25)
	ld.waitAcked(t, 80, "before killing every node")
	c.stopAll(false)
	ld.stop()
	t.Logf("killed every node with %d writes acknowledged; answers %v", ld.acked(), ld.answers())
	for _, n := range c.nodes {
		n.launch(n.id+"="+n.raftAddr, nil)
	}
	for _, n := range c.nodes {
		n.waitServing()
	}
	l = c.waitLeader()
	for _, n := range c.nodes {
		s := n.mustStatus()
		if len(s.Peers) != 3 {
			t.Errorf("%s restarted on its data with --peers %s=%s has peers %v; the flag must be ignored when the data dir holds state", n.id, n.id, n.raftAddr, s.Peers)
		}
	}
	c.waitApplied(l.mustStatus().CommitIndex)
	c.checkConverged(t, ld.history())
	for _, n := range c.nodes {
		check(n)
	}
}

// TestSoak runs writers for -e2e.soak while nodes are killed with SIGKILL
// (the leader, a follower, or all of them) and restarted, then checks that
// no acknowledged write was lost. Skipped unless -e2e.soak is set.
func TestSoak(t *testing.T) {
	if *flagSoak <= 0 {
		t.Skip("a long run: enable with -e2e.soak=DURATION")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	c := newCluster(t, clusterOptions{flags: []string{"--snapshot-log-entries", "500"}})
	c.start()
	c.waitLeader()
	ld := c.startLoad("soak", 8, 50)
	end := time.Now().Add(*flagSoak)
	for cycle := 0; time.Now().Before(end); cycle++ {
		ld.waitAcked(t, 50, fmt.Sprintf("in cycle %d", cycle))
		l := c.waitLeader()
		switch k := rng.IntN(10); {
		case k < 5:
			t.Logf("cycle %d: kill -9 the leader %s", cycle, l.id)
			l.kill()
			c.waitLeader(c.followers(l)...)
			ld.waitAcked(t, 20, "with a node down")
			l.start()
		case k < 8:
			f := c.followers(l)[rng.IntN(2)]
			t.Logf("cycle %d: kill -9 follower %s", cycle, f.id)
			f.kill()
			ld.waitAcked(t, 20, "with a node down")
			f.start()
		default:
			t.Logf("cycle %d: kill -9 every node", cycle)
			c.stopAll(false)
			c.start()
		}
	}
	ld.stop()
	t.Logf("writes acknowledged: %d; answers %v", ld.acked(), ld.answers())
	l := c.waitLeader()
	c.waitApplied(l.mustStatus().CommitIndex)
	c.checkConverged(t, ld.history())
	if !slices.ContainsFunc(c.nodes, func(n *node) bool { return n.running() }) {
		t.Fatal("no node runs at the end")
	}
}
