package graft_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/rafttest"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
)

// countingTransport counts the unary AppendEntries calls and the pipelines
// a node opens.
type countingTransport struct {
	transport.Transport
	unaryAppends atomic.Int64
	pipelines    atomic.Int64
}

func (t *countingTransport) AppendEntries(ctx context.Context, addr string, req *raftpb.AppendEntriesRequest) (*raftpb.AppendEntriesResponse, error) {
	t.unaryAppends.Add(1)
	return t.Transport.AppendEntries(ctx, addr, req)
}

func (t *countingTransport) Pipeline(ctx context.Context, addr string) (transport.Pipeline, error) {
	t.pipelines.Add(1)
	return t.Transport.Pipeline(ctx, addr)
}

// noLeaks fails t if goroutines started during the test outlive it. Call it
// before rafttest.New, so that it runs after the cluster's Close.
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { leakcheck.VerifyNone(t, ignore) })
}

// silence blackholes the link from→to: every message on it is lost and the
// loss never surfaces (LossDelay of an hour), so a pipeline waiting for an
// answer on it blocks, as on a connection to a peer that went silent.
func silence(c *rafttest.Cluster, from, to string) {
	if err := c.Net.SetLinkFaults(c.Addr(from), c.Addr(to), memory.Faults{LossDelay: time.Hour}); err != nil {
		panic(err)
	}
	c.Net.Cut(c.Addr(from), c.Addr(to))
}

// unsilence undoes silence.
func unsilence(c *rafttest.Cluster, from, to string) {
	c.Net.Restore(c.Addr(from), c.Addr(to))
	c.Net.ClearLinkFaults(c.Addr(from), c.Addr(to))
}

// readWithin runs ReadIndex on n with a timeout.
func readWithin(n *graft.Node, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := n.ReadIndex(ctx)
	return err
}

// Many concurrent reads at a leader succeed and share heartbeat rounds:
// the leader sends far fewer heartbeats than it serves reads, on streams,
// not as unary calls.
func TestHeartbeatReadsShareRounds(t *testing.T) {
	noLeaks(t)
	var mu sync.Mutex
	trans := map[string]*countingTransport{}
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: func(id string, o *graft.Options) {
		ct := &countingTransport{Transport: o.Transport}
		o.Transport = ct
		mu.Lock()
		trans[id] = ct
		mu.Unlock()
	}})
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	n := c.Node(leader)
	if err := readWithin(n, 10*time.Second); err != nil {
		t.Fatalf("read at the leader: %v", err)
	}
	mu.Lock()
	lt := trans[leader]
	mu.Unlock()
	follower := without(c.IDs(), leader)[0]
	sentBefore := c.Net.LinkStats(c.Addr(leader), c.Addr(follower)).Sent
	unaryBefore := lt.unaryAppends.Load()

	const clients, each = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for range each {
				if err := readWithin(n, 10*time.Second); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent read: %v", err)
	}
	if n.Status().Role != graft.Leader {
		t.Fatalf("%s lost leadership during the reads", leader)
	}
	sent := c.Net.LinkStats(c.Addr(leader), c.Addr(follower)).Sent - sentBefore
	unary := lt.unaryAppends.Load() - unaryBefore
	t.Logf("%d reads, %d messages to %s, %d unary AppendEntries", clients*each, sent, follower, unary)
	if sent >= clients*each/2 {
		t.Errorf("%d messages to %s for %d concurrent reads: rounds are not shared", sent, follower, clients*each)
	}
	if unary > 0 {
		t.Errorf("%d unary AppendEntries during reads on a healthy network: heartbeats should use streams", unary)
	}
}

// A leader that no follower answers cannot confirm a read, whether the
// answers are blackholed (its heartbeat streams wait for ever) or it is
// partitioned (streams break). Once the network heals, reads succeed
// again.
func TestHeartbeatIsolatedLeaderCannotRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		// checkQuorum: with it off, a leader whose answers are
		// blackholed keeps leading, and only the heartbeat answers
		// stand between it and a read it must not serve.
		checkQuorum bool
		isolate     func(c *rafttest.Cluster, leader string)
	}{
		{"answers blackholed", false, func(c *rafttest.Cluster, leader string) {
			for _, f := range without(c.IDs(), leader) {
				silence(c, f, leader)
			}
		}},
		{"partitioned", true, func(c *rafttest.Cluster, leader string) {
			c.Net.Partition([]string{c.Addr(leader)}, addrs(c, without(c.IDs(), leader)...))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			// Without check-quorum the leader must keep its term
			// throughout: stableElectionTimeout (for both cases, so
			// that their timing stays alike).
			opts := stableOptions(3)
			opts.Configure = withOptions(func(o *graft.Options) { o.CheckQuorum = tc.checkQuorum })
			c := rafttest.New(t, opts)
			c.One(cmd("start"), 3, true)
			leader := c.CheckOneLeader()
			n := c.Node(leader)
			for range 20 { // the heartbeat streams are open and in use
				if err := readWithin(n, 10*time.Second); err != nil {
					t.Fatalf("read at the leader: %v", err)
				}
			}
			term := n.Status().Term

			tc.isolate(c, leader)
			// Long enough for heartbeat streams to be found silent,
			// replaced, and for the replacements to fail.
			if err := readWithin(n, 4*stableElectionTimeout); err == nil {
				t.Fatalf("isolated leader %s confirmed a read", leader)
			} else {
				t.Logf("read at the isolated leader: %v", err)
			}

			c.Net.HealAll()
			if !tc.checkQuorum {
				// Same leader, same term: its replicators had to replace
				// the streams stuck on lost answers.
				c.WaitFor(10*time.Second, "a read at the leader after the heal", func() bool {
					return readWithin(n, stableElectionTimeout) == nil
				})
				if st := n.Status(); st.Role != graft.Leader || st.Term != term {
					t.Fatalf("%s is %v in term %d, want leader in term %d", leader, st.Role, st.Term, term)
				}
				return
			}
			c.WaitFor(10*time.Second, "a read at a leader after the heal", func() bool {
				for _, id := range c.IDs() {
					if n := c.Node(id); n.Status().Role == graft.Leader && readWithin(n, stableElectionTimeout) == nil {
						return true
					}
				}
				return false
			})
		})
	}
}

// A heartbeat stream whose answers stop coming is replaced: when one
// follower goes silent, and the other comes back while its old stream still
// waits for an answer that will never arrive, reads resume only through a
// new stream to it.
func TestHeartbeatSilentStreamReplaced(t *testing.T) {
	noLeaks(t)
	// Without CheckQuorum the leader keeps leading however long its
	// followers are silent; followers keep hearing it, so nobody campaigns
	// (unless a scheduling delay outlasts an election timeout: the test
	// asserts the term is unchanged at the end, so stableElectionTimeout).
	opts := stableOptions(3)
	opts.Configure = withOptions(func(o *graft.Options) { o.CheckQuorum = false })
	c := rafttest.New(t, opts)
	c.One(cmd("start"), 3, true)
	leader := c.CheckOneLeader()
	n := c.Node(leader)
	fs := without(c.IDs(), leader)
	a, b := fs[0], fs[1]
	term := n.Status().Term

	dropped := c.Net.LinkStats(c.Addr(a), c.Addr(leader)).Dropped
	silence(c, a, leader)
	if err := readWithin(n, 10*time.Second); err != nil { // quorum with b
		t.Fatalf("read with %s silent: %v", a, err)
	}
	// Once an answer from a is lost, a's stream waits for it for good.
	c.WaitFor(10*time.Second, "an answer from "+a+" to be lost", func() bool {
		return c.Net.LinkStats(c.Addr(a), c.Addr(leader)).Dropped > dropped
	})
	unsilence(c, a, leader)
	silence(c, b, leader)
	start := time.Now()
	c.WaitFor(10*time.Second, "a read confirmed by "+a, func() bool {
		err := readWithin(n, stableElectionTimeout)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read: %v", err)
		}
		return err == nil
	})
	t.Logf("reads resumed after %v", time.Since(start))
	if st := n.Status(); st.Role != graft.Leader || st.Term != term {
		t.Fatalf("%s is %v in term %d, want leader in term %d", leader, st.Role, st.Term, term)
	}
}

func addrs(c *rafttest.Cluster, ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = c.Addr(id)
	}
	return out
}
