package graft_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/rafttest"
)

// writers runs closed-loop clients that propose on whichever node leads
// and records every acknowledged write, until stop is called; check then
// asserts that each acknowledged write is committed at its index.
type writers struct {
	c    *rafttest.Cluster
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	acks map[uint64]string
}

func startWriters(c *rafttest.Cluster, n int) *writers {
	w := &writers{c: c, stop: make(chan struct{}), acks: map[uint64]string{}}
	for i := 0; i < n; i++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for j := 0; ; j++ {
				select {
				case <-w.stop:
					return
				default:
				}
				data := fmt.Sprintf("w%d-%d", i, j)
				ok := false
				for _, id := range c.IDs() {
					if n := c.Node(id); n != nil && n.IsLeader() {
						if res, err := c.Propose(id, []byte(data)); err == nil {
							w.mu.Lock()
							w.acks[res.Index] = data
							w.mu.Unlock()
							ok = true
						}
						break
					}
				}
				if !ok {
					time.Sleep(5 * time.Millisecond) // no leader right now: back off
				}
			}
		}()
	}
	return w
}

// count returns how many writes were acknowledged so far.
func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// finish stops the writers and checks every acknowledged write.
func (w *writers) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	w.c.One(cmd("final"), 1, true)
	for idx, data := range w.acks {
		got, ok := w.c.Checker.Committed(idx)
		if !ok {
			w.c.WaitFor(5*time.Second, fmt.Sprintf("index %d to be applied somewhere", idx), func() bool {
				got, ok = w.c.Checker.Committed(idx)
				return ok
			})
		}
		if string(got) != data {
			t.Fatalf("acknowledged %q at index %d, but %q is committed there", data, idx, got)
		}
	}
	if len(w.acks) == 0 {
		t.Fatal("no write was acknowledged")
	}
}

func peersOf(c *rafttest.Cluster, ids ...string) []graft.Peer {
	var out []graft.Peer
	for _, id := range ids {
		out = append(out, graft.Peer{ID: id, Addr: c.Addr(id)})
	}
	return out
}

func voterIDs(conf graft.Configuration) []string {
	var ids []string
	for _, p := range conf.Peers {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids
}

// onLeader runs f on the current leader, retrying when leadership moves.
func onLeader(t *testing.T, c *rafttest.Cluster, f func(n *graft.Node) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		id := c.CheckOneLeader()
		err := f(c.Node(id))
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !(errors.Is(err, graft.ErrNotLeader) || errors.Is(err, graft.ErrBusy) || errors.Is(err, graft.ErrLeadershipLost)) {
			t.Fatalf("on leader %s: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond) // leadership is moving: try again
	}
}

// addOnLeader adds id as a voter through the current leader, and
// removeOnLeader removes it. An attempt cut short by a leadership change
// (ErrLeadershipLost, a timeout) may still commit, so an attempt that
// finds the change already in the leader's configuration is done.
func addOnLeader(t *testing.T, c *rafttest.Cluster, id string) {
	t.Helper()
	onLeader(t, c, func(n *graft.Node) error {
		if n.Status().Configuration.IsVoter(id) {
			return nil
		}
		return n.AddPeer(ctxT(t), peersOf(c, id)[0])
	})
}

func removeOnLeader(t *testing.T, c *rafttest.Cluster, id string) {
	t.Helper()
	onLeader(t, c, func(n *graft.Node) error {
		if !n.Status().Configuration.Contains(id) {
			return nil
		}
		return n.RemovePeer(ctxT(t), id)
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitVoters(t *testing.T, c *rafttest.Cluster, ids []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	c.WaitFor(10*time.Second, fmt.Sprintf("voters %v on %v", want, ids), func() bool {
		for _, id := range ids {
			n := c.Node(id)
			if n == nil {
				continue
			}
			st := n.Status()
			if st.Configuration.IsJoint() || !slices.Equal(voterIDs(st.Configuration), want) {
				return false
			}
		}
		return true
	})
}

func TestJointChange3To5And5To3(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 5, Voters: 3})
	c.One(cmd("start"), 3, true)
	w := startWriters(c, 3)
	onLeader(t, c, func(n *graft.Node) error {
		return n.ChangePeers(ctxT(t), peersOf(c, "n1", "n2", "n3", "n4", "n5"))
	})
	waitVoters(t, c, c.IDs(), "n1", "n2", "n3", "n4", "n5")
	c.One(cmd("five"), 5, true)
	onLeader(t, c, func(n *graft.Node) error {
		return n.ChangePeers(ctxT(t), peersOf(c, "n1", "n4", "n5"))
	})
	waitVoters(t, c, []string{"n1", "n4", "n5"}, "n1", "n4", "n5")
	w.finish(t)
	// The removed nodes no longer count: the group commits without them.
	c.Disconnect("n2")
	c.Disconnect("n3")
	c.One(cmd("without-n2-n3"), 3, true)
}

func TestReplaceEveryMember(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 6, Voters: 3})
	c.One(cmd("start"), 3, true)
	w := startWriters(c, 2)
	for i := 1; i <= 3; i++ {
		add, remove := fmt.Sprintf("n%d", i+3), fmt.Sprintf("n%d", i)
		addOnLeader(t, c, add)
		removeOnLeader(t, c, remove)
	}
	waitVoters(t, c, []string{"n4", "n5", "n6"}, "n4", "n5", "n6")
	w.finish(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		c.Stop(id)
	}
	c.One(cmd("new-members-only"), 3, true)
}

func TestRemoveLeader(t *testing.T) {
	c := rafttest.New(t, stableOptions(3)) // the new leader must keep its term through the hold
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	if err := c.Node(leader).RemovePeer(ctxT(t), leader); err != nil {
		t.Fatalf("removing the leader: %v", err)
	}
	rest := without(c.IDs(), leader)
	next := c.CheckOneLeader(rest...)
	if next == leader {
		t.Fatal("the removed leader leads again")
	}
	c.One(cmd("after"), 2, true)
	if st := c.Node(leader).Status(); st.Role == graft.Leader || st.Configuration.IsVoter(leader) {
		t.Fatalf("removed leader: role %v, configuration %v", st.Role, st.Configuration)
	}
	// The removed node cannot disrupt the group: its elections go nowhere.
	term := c.Node(next).Status().Term
	hold(t, 4*stableElectionTimeout, "a stable term", func() bool {
		n := c.Node(next)
		return n.IsLeader() && n.Status().Term == term
	})
}

func TestRemovePartitionedNode(t *testing.T) {
	c := rafttest.New(t, stableOptions(3)) // the leader must keep its term through the hold
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	gone := without(c.IDs(), leader)[0]
	c.Disconnect(gone)
	removeOnLeader(t, c, gone)
	rest := without(c.IDs(), gone)
	waitVoters(t, c, rest, rest...)
	c.One(cmd("after"), 2, true)
	// It comes back: the others ignore its stale elections.
	c.Reconnect(gone)
	leader = c.CheckOneLeader(rest...)
	term := c.Node(leader).Status().Term
	hold(t, 4*stableElectionTimeout, "the leader keeps its term", func() bool {
		n := c.Node(leader)
		return n.IsLeader() && n.Status().Term == term
	})
}

func TestChangeWhileMinorityPartitioned(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 4, Voters: 3})
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	cut := without(c.IDs()[:3], leader)[0]
	c.Disconnect(cut)
	w := startWriters(c, 2)
	addOnLeader(t, c, "n4")
	waitVoters(t, c, without(c.IDs(), cut), "n1", "n2", "n3", "n4")
	w.finish(t)
	c.Reconnect(cut)
	c.One(cmd("all-four"), 4, true)
}

func TestNewPeerCatchesUpBySnapshot(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 4, Voters: 3, Configure: withOptions(func(o *graft.Options) {
		o.SnapshotTrailingEntries = 2
	})})
	for i := 0; i < 30; i++ {
		c.One(cmd("pre-%d", i), 3, true)
	}
	leader := c.CheckOneLeader()
	snapshotNow(t, c.Node(leader))
	addOnLeader(t, c, "n4")
	c.One(cmd("with-n4"), 4, true)
	if c.FSM("n4").Loads() != 1 {
		t.Fatalf("n4 loaded %d snapshots, want 1", c.FSM("n4").Loads())
	}
	c.CheckConverged(10 * time.Second)
}

func TestLearnerNeverVotesAndIsPromoted(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 4, Voters: 3})
	c.One(cmd("start"), 3, true)
	onLeader(t, c, func(n *graft.Node) error { return n.AddLearner(ctxT(t), peersOf(c, "n4")[0]) })
	idx := c.One(cmd("learner-sees-this"), 4, true)
	if st := c.Node("n4").Status(); st.Configuration.IsVoter("n4") || !st.Configuration.Contains("n4") {
		t.Fatalf("learner's configuration %v", st.Configuration)
	}
	// A learner does not count toward a quorum: with two voters cut off
	// nothing commits, though the learner has the entries.
	leader := c.CheckOneLeader()
	voters := without(c.IDs()[:3], leader)
	for _, v := range voters {
		c.Disconnect(v)
	}
	res, err := proposeAsync(c, leader, cmd("needs-a-voter"))
	if err != nil {
		t.Fatal(err)
	}
	hold(t, 2*electionTimeout, "no commit with the learner as only follower", func() bool {
		n, _ := c.NCommitted(res)
		return n == 0
	})
	for _, v := range voters {
		c.Reconnect(v)
	}
	// Cut off from everyone, the learner never campaigns.
	c.Disconnect("n4")
	term := c.Node("n4").Status().Term
	hold(t, 4*electionTimeout, "the learner stays a follower in its term", func() bool {
		st := c.Node("n4").Status()
		return st.Role == graft.Follower && st.Term == term
	})
	c.Reconnect("n4")
	addOnLeader(t, c, "n4")
	waitVoters(t, c, c.IDs(), "n1", "n2", "n3", "n4")
	c.One(cmd("promoted"), 4, true)
	if d, ok := c.FSM("n4").Has(idx); !ok || string(d) != "learner-sees-this" {
		t.Fatalf("the learner did not apply index %d", idx)
	}
}

func TestResetPeersOnLoneSurvivor(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3})
	c.One(cmd("before"), 3, true)
	leader := c.CheckOneLeader()
	survivor := without(c.IDs(), leader)[0]
	for _, id := range without(c.IDs(), survivor) {
		c.Crash(id)
	}
	n := c.Node(survivor)
	c.WaitFor(5*time.Second, "the survivor to notice it has no leader", func() bool { return !n.IsLeader() })
	if err := n.ResetPeers(peersOf(c, survivor)); err != nil {
		t.Fatalf("reset peers: %v", err)
	}
	c.WaitFor(5*time.Second, "the survivor to lead alone", n.IsLeader)
	if _, err := c.Propose(survivor, cmd("after-reset")); err != nil {
		t.Fatalf("write after reset: %v", err)
	}
}

func TestLeaderTransferUnderLoad(t *testing.T) {
	// A 1 s election timeout (rafttest's default is 250 ms): a transfer
	// fails when the target has not won within an election timeout, and
	// the new leader steps down when it has not heard from a quorum for
	// one, so on a 2-core machine running every package's tests with
	// -race, 250 ms of scheduling delay failed this test about one run in
	// five. A transfer itself takes a round trip, not a timeout, so the
	// test is no slower; the bound on unavailability scales with it.
	const timeout = time.Second
	c := rafttest.New(t, rafttest.Options{N: 3, ElectionTimeout: timeout, HeartbeatInterval: timeout / 10})
	c.One(cmd("start"), 3, true)
	w := startWriters(c, 3)
	var worst time.Duration
	for i := 0; i < 20; i++ {
		leader := c.CheckOneLeader()
		target := without(c.IDs(), leader)[i%2]
		start := time.Now()
		if err := c.Node(leader).TransferLeadership(ctxT(t), target); err != nil {
			t.Fatalf("transfer %d from %s to %s: %v", i, leader, target, err)
		}
		c.WaitFor(5*time.Second, "the target to lead", func() bool { return c.Node(target).IsLeader() })
		before := w.count()
		c.WaitFor(5*time.Second, "a write on the new leader", func() bool { return w.count() > before })
		worst = max(worst, time.Since(start))
	}
	t.Logf("worst unavailability over 20 transfers: %v", worst)
	if worst > 2*timeout {
		t.Fatalf("a transfer left the group without a leader for %v (bound %v)", worst, 2*timeout)
	}
	w.finish(t)
}

func TestTransferToLaggingTarget(t *testing.T) {
	// The target must catch up and win within one election timeout.
	c := rafttest.New(t, stableOptions(3))
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	target := without(c.IDs(), leader)[0]
	c.Disconnect(target)
	for i := 0; i < 50; i++ {
		c.One(cmd("lag-%d", i), 2, true)
	}
	c.Reconnect(target)
	if err := c.Node(leader).TransferLeadership(ctxT(t), target); err != nil {
		t.Fatalf("transfer to a lagging target: %v", err)
	}
	c.WaitFor(5*time.Second, "the lagging target to lead", func() bool { return c.Node(target).IsLeader() })
	c.One(cmd("after"), 3, true)
}

func TestTransferToUnreachableTargetFails(t *testing.T) {
	// The leader must keep its lead through the failed transfer, and
	// commit the proposal after it within c.Propose's two election
	// timeouts.
	c := rafttest.New(t, stableOptions(3))
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	target := without(c.IDs(), leader)[0]
	c.Disconnect(target)
	err := c.Node(leader).TransferLeadership(ctxT(t), target)
	if !errors.Is(err, graft.ErrTransferFailed) {
		t.Fatalf("transfer to an unreachable target: %v, want ErrTransferFailed", err)
	}
	// The leader resumes and takes proposals again.
	if _, err := c.Propose(leader, cmd("resumed")); err != nil {
		t.Fatalf("proposal after a failed transfer: %v", err)
	}
}

func TestLeaseReadsDisabledByDefault(t *testing.T) {
	if graft.DefaultOptions().LeaseReads {
		t.Fatal("lease reads are on by default")
	}
	c := rafttest.New(t, rafttest.Options{N: 3})
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	if _, err := c.Node(leader).ReadIndex(ctxT(t)); err != nil {
		t.Fatalf("read index on a healthy leader: %v", err)
	}
	// Cut off, the leader cannot confirm a read with a heartbeat round.
	for _, id := range without(c.IDs(), leader) {
		c.Disconnect(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), electionTimeout/2)
	defer cancel()
	if idx, err := c.Node(leader).ReadIndex(ctx); err == nil {
		t.Fatalf("an isolated leader served a read at %d", idx)
	}
}

func TestLeaseReadsServeWithinLease(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: withOptions(func(o *graft.Options) { o.LeaseReads = true })})
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	c.WaitFor(5*time.Second, "a lease read", func() bool {
		_, err := c.Node(leader).ReadIndex(ctxT(t))
		return err == nil
	})
}

// A second membership change, or a transfer, while a change is in
// progress gets ErrBusy; the change that times out in its catch-up stage
// leaves the configuration as it was.
func TestSecondChangeIsBusy(t *testing.T) {
	// The leader must keep its lead until the first change times out.
	opts := stableOptions(5)
	opts.Voters = 3
	c := rafttest.New(t, opts)
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	// n5 is cut off, so the first change stays in its catch-up stage.
	c.Disconnect("n5")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- c.Node(leader).AddPeer(ctx, peersOf(c, "n5")[0]) }()
	c.WaitFor(2*time.Second, "change in progress", func() bool { return c.Node(leader).Status().ChangingPeers })
	err := c.Node(leader).AddPeer(context.Background(), peersOf(c, "n4")[0])
	if !errors.Is(err, graft.ErrBusy) {
		t.Fatalf("second change: %v, want ErrBusy", err)
	}
	t.Logf("second change: %v", err)
	err = c.Node(leader).TransferLeadership(context.Background(), "")
	if !errors.Is(err, graft.ErrBusy) {
		t.Fatalf("transfer during change: %v, want ErrBusy", err)
	}
	t.Logf("transfer during change: %v", err)
	if err := <-first; !errors.Is(err, graft.ErrCatchUpTimeout) {
		t.Fatalf("first change: %v, want ErrCatchUpTimeout", err)
	}
	// The unfinished change left the configuration untouched.
	if st := c.Node(leader).Status(); st.Configuration.Contains("n5") || st.ChangingPeers {
		t.Fatalf("after a timed-out change: %v, changing %v", st.Configuration, st.ChangingPeers)
	}
}

// Changes that cannot be made fail with ErrInvalidChange and change
// nothing.
func TestInvalidChanges(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3})
	c.One(cmd("start"), 3, true)
	leader := c.Node(c.CheckOneLeader())
	before := leader.Status().Configuration
	for what, err := range map[string]error{
		"adding a voter again":       leader.AddPeer(ctxT(t), peersOf(c, c.IDs()[0])[0]),
		"removing a non-member":      leader.RemovePeer(ctxT(t), "nosuch"),
		"adding a member as learner": leader.AddLearner(ctxT(t), peersOf(c, c.IDs()[1])[0]),
		"changing to no voters":      leader.ChangePeers(ctxT(t), nil),
	} {
		if !errors.Is(err, graft.ErrInvalidChange) {
			t.Errorf("%s: %v, want ErrInvalidChange", what, err)
		}
	}
	if after := leader.Status().Configuration; after.String() != before.String() {
		t.Errorf("configuration %v after invalid changes, was %v", after, before)
	}
}

// A leader that has begun a leadership transfer serves no lease reads for
// the rest of its term: the target campaigns at once, without waiting for
// the lease to run out, and may win even after the transfer was given up.
func TestNoLeaseReadsAfterTransferBegins(t *testing.T) {
	// A 1 s election timeout, so that the leader keeps its lead through
	// the failed transfer even on a loaded machine.
	const timeout = time.Second
	c := rafttest.New(t, rafttest.Options{N: 3, ElectionTimeout: timeout, HeartbeatInterval: timeout / 10,
		Configure: withOptions(func(o *graft.Options) { o.LeaseReads = true })})
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	others := without(c.IDs(), leader)
	c.WaitFor(5*time.Second, "a lease read", func() bool {
		_, err := c.Node(leader).ReadIndex(ctxT(t))
		return err == nil
	})
	// A transfer to an unreachable target fails; the leader keeps leading,
	// and its heartbeats to the other follower keep its lease fresh.
	c.Disconnect(others[0])
	if err := c.Node(leader).TransferLeadership(ctxT(t), others[0]); !errors.Is(err, graft.ErrTransferFailed) {
		t.Fatalf("transfer to an unreachable target: %v, want ErrTransferFailed", err)
	}
	if !c.Node(leader).IsLeader() {
		t.Fatalf("%s lost its lead after the failed transfer: the rest of the test needs a leader with a lease", leader)
	}
	// Cut off now, the leader would still hold a lease; it must not use it.
	c.Disconnect(leader)
	ctx, cancel := context.WithTimeout(context.Background(), timeout/4)
	defer cancel()
	if idx, err := c.Node(leader).ReadIndex(ctx); err == nil {
		t.Fatalf("a leader that began a transfer served a lease read at %d while cut off", idx)
	}
}

// The joint configuration travels in a snapshot's meta: a node that
// installs a snapshot taken while the group was joint adopts the joint
// configuration's peers and old peers.
func TestSnapshotCarriesJointConfiguration(t *testing.T) {
	fx := newInstallFixture(t, false)
	req := fx.jointSnapshotAt(20,
		[]string{"f=" + followerAddr, "l=" + leaderAddr, "y=y:7000"},
		[]string{"f=" + followerAddr, "l=" + leaderAddr, "x=x:7000"})
	fx.open(fx.gated.gate)
	fx.open(fx.fsm.loadGate)
	mustSucceed(t, wait(t, fx.install(req)))
	st := fx.node.Status()
	if !st.Configuration.IsJoint() || !st.Configuration.IsVoter("x") || !st.Configuration.IsVoter("y") {
		t.Fatalf("configuration after installing a joint snapshot: %v", st.Configuration)
	}
	if m := fx.fsm.LoadedMeta(); len(m.GetOldPeers()) != 3 || len(m.GetPeers()) != 3 {
		t.Fatalf("loaded meta %v", m)
	}
}
