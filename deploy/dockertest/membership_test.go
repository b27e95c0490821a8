package dockertest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// maxUnavailable bounds the longest time without an acknowledged write
// during a rolling restart or upgrade. Graceful stops hand leadership
// over, so the expected gap is about a second; the bound leaves room for a
// loaded CI machine and catches a peer that stays unreachable after it
// came back (as gRPC's cached DNS answers would make it, for 30 s).
const maxUnavailable = 10 * time.Second

// TestRollingRestart restarts every node in turn (docker stop: SIGTERM, a
// graceful exit; docker start on the same container and volume) while
// clients write, and reports the longest time without an acknowledged
// write. Every acknowledged write survives and the replicas converge.
func TestRollingRestart(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	c.startAll()
	c.waitLeader()
	ld := c.startLoad("restart", 4, 20)
	ld.waitAcked(t, 50, "before the restarts")

	from := time.Now()
	for _, n := range c.nodes {
		l := c.waitLeader()
		start := time.Now()
		n.stop()
		ld.waitAcked(t, 20, fmt.Sprintf("with %s stopped", n.id))
		n.restart()
		c.waitCaughtUp()
		ld.waitAcked(t, 20, fmt.Sprintf("after %s's restart", n.id))
		t.Logf("restarted %s (leader: %v) in %v", n.id, n == l, time.Since(start).Round(time.Millisecond))
	}
	to := time.Now()
	ld.stop()
	gap, at := ld.longestGap(from, to)
	t.Logf("rolling restart of %d nodes: %v, %d writes acknowledged in all, answers %v; longest time without an acknowledged write: %v (from +%v)",
		len(c.nodes), to.Sub(from).Round(time.Millisecond), ld.acked(), ld.answers(), gap.Round(time.Millisecond), at.Sub(from).Round(time.Millisecond))
	if gap > maxUnavailable {
		t.Errorf("no write was acknowledged for %v during the rolling restart, want at most %v", gap.Round(time.Millisecond), maxUnavailable)
	}
	c.waitCaughtUp()
	c.checkConverged(ld.history())
}

// TestReplaceMember replaces the leader's host with a new one on a wiped
// volume while clients write, as an operator would, with graftctl run
// inside the containers: remove-peer, docker rm and a new empty volume, a
// new container started without --peers, add-peer. The log has been
// compacted by then, so the newcomer catches up by installing a snapshot
// over the raft network. No acknowledged write is lost and all three
// replicas converge.
func TestReplaceMember(t *testing.T) {
	c := newCluster(t, clusterOptions{flags: []string{"--snapshot-log-entries", "500"}})
	c.startAll()
	old := c.waitLeader()
	ld := c.startLoad("replace", 4, 50)
	// More than the 1024 entries a snapshot leaves in the log, so that
	// the newcomer cannot catch up from the log alone.
	ld.waitAcked(t, 1500, "before the replacement")

	other := c.followers(old)[0]
	out, err := other.graftctl("remove-peer", old.id)
	t.Logf("graftctl remove-peer %s (via %s): %s %v", old.id, other.id, out, err)
	rest := c.followers(old)
	waitFor(t, leaderTimeout, fmt.Sprintf("the configuration without %s", old.id), func() (bool, string) {
		for _, n := range rest {
			s, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			if slices.Contains(s.peerIDs(), old.id) {
				return false, fmt.Sprintf("%s has peers %v", n.id, s.peerIDs())
			}
		}
		return true, ""
	})
	old.remove()
	old.wipe()
	l := c.waitLeader(rest...)
	t.Logf("%s removed and its volume wiped; %s leads the two others", old.id, l.id)
	ld.waitAcked(t, 50, "with two members")
	for _, n := range rest { // a snapshot now on each, so the log is compacted
		// An automatic snapshot (--snapshot-log-entries) may be under
		// way; the node then answers 409 busy, and we ask again.
		waitFor(t, leaderTimeout, "graftctl snapshot on "+n.id, func() (bool, string) {
			out, err := n.graftctl("snapshot")
			if err == nil {
				return true, ""
			}
			if !strings.Contains(err.Error()+out, "busy") {
				t.Fatalf("graftctl snapshot on %s: %v %s", n.id, err, out)
			}
			return false, fmt.Sprintf("%v %s", err, out)
		})
	}
	if s := l.mustStatus(); s.FirstLog <= 1 {
		t.Fatalf("the leader's log still starts at %d after a snapshot; the test needs it compacted", s.FirstLog)
	}

	start := time.Now()
	old.start("", "") // no --peers: an empty node that waits to be added
	if out, err := other.graftctl("add-peer", old.id, old.raftAddr()); err != nil {
		t.Fatalf("graftctl add-peer %s %s: %v %s", old.id, old.raftAddr(), err, out)
	}
	c.waitCaughtUp()
	s := old.mustStatus()
	t.Logf("the new %s caught up in %v; its snapshot: index %d; peers %v", old.id, time.Since(start).Round(time.Millisecond),
		s.Snapshot.LastIncludedIndex, s.peerIDs())
	if s.Snapshot.LastIncludedIndex == 0 {
		t.Errorf("the new %s caught up without installing a snapshot (log from %d)", old.id, s.FirstLog)
	}
	if got := strings.Join(s.peerIDs(), ","); got != "n1,n2,n3" {
		t.Errorf("the new %s has peers %s, want n1,n2,n3", old.id, got)
	}
	ld.waitAcked(t, 50, "after the replacement")
	ld.stop()
	t.Logf("writes acknowledged: %d; answers %v", ld.acked(), ld.answers())
	c.waitCaughtUp()
	c.checkConverged(ld.history())
}

// TestRollingUpgrade replaces each of five nodes in turn with a container
// of a newly built image (same code, another build) on the same volume,
// while clients write: docker stop (graceful), docker rm, docker create
// and start with the new image. It reports the longest time without an
// acknowledged write; no acknowledged write is lost and the replicas
// converge.
func TestRollingUpgrade(t *testing.T) {
	c := newCluster(t, clusterOptions{nodes: 5})
	c.startAll()
	c.waitLeader()

	image2 := runID + "-graftkv:2"
	if err := buildImage(image2, "2"); err != nil {
		t.Fatal(err)
	}
	id1, id2 := c.mustDocker("image", "inspect", "--format", "{{.Id}}", image), c.mustDocker("image", "inspect", "--format", "{{.Id}}", image2)
	if id1 == id2 {
		t.Fatalf("the second build is the same image %s", id1)
	}

	ld := c.startLoad("upgrade", 6, 20)
	ld.waitAcked(t, 50, "before the upgrade")
	from := time.Now()
	for _, n := range c.nodes {
		l := c.waitLeader()
		start := time.Now()
		n.stop()
		n.remove()
		n.start(image2, c.peersFlag()) // the same command; --peers is ignored on a data dir with state
		c.waitCaughtUp()
		ld.waitAcked(t, 20, fmt.Sprintf("after %s's upgrade", n.id))
		t.Logf("upgraded %s (leader: %v) in %v", n.id, n == l, time.Since(start).Round(time.Millisecond))
	}
	to := time.Now()
	ld.stop()
	gap, at := ld.longestGap(from, to)
	t.Logf("rolling upgrade of %d nodes: %v, %d writes acknowledged in all, answers %v; longest time without an acknowledged write: %v (from +%v)",
		len(c.nodes), to.Sub(from).Round(time.Millisecond), ld.acked(), ld.answers(), gap.Round(time.Millisecond), at.Sub(from).Round(time.Millisecond))
	if gap > maxUnavailable {
		t.Errorf("no write was acknowledged for %v during the rolling upgrade, want at most %v", gap.Round(time.Millisecond), maxUnavailable)
	}
	for _, n := range c.nodes {
		if got := n.imageID(); got != id2 {
			t.Errorf("%s runs image %s after the upgrade, want %s", n.id, got, id2)
		}
	}
	c.waitCaughtUp()
	c.checkConverged(ld.history())
}
