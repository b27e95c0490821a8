package graft_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft/rafttest"
)

// An Apply returns only once a quorum has the entry on disk. With every
// node's log syncs stalled, no Apply may succeed; after every node crashes
// (losing what was not synced) and the group restarts, every Apply that
// did succeed must still be there. A build that answers before fsync fails
// both checks.
func TestNoAckBeforeFsync(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3})
	c.One(cmd("before"), 3, true)
	leader := c.CheckOneLeader()
	var releases []func()
	for _, id := range c.IDs() {
		releases = append(releases, c.HoldLogSyncs(id))
	}
	defer func() {
		for _, r := range releases {
			r()
		}
	}()

	// Apply is given a bounded wait: with syncs stalled, the right answer
	// is that it does not return in time.
	const n = 20
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			v := string(cmd("stalled-%d", i))
			if _, err := c.Node(leader).Apply(ctx, []byte(v)); err == nil {
				mu.Lock()
				acked = append(acked, v)
				mu.Unlock()
			} else if !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("apply %s: %v", v, err)
			}
		}()
	}
	wg.Wait()
	if len(acked) > 0 {
		t.Errorf("%d applies succeeded while no node could fsync its log: %v", len(acked), acked)
	}

	for _, id := range c.IDs() {
		c.Crash(id) // unsynced writes are lost
	}
	for _, id := range c.IDs() {
		if err := c.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	c.One(cmd("after"), 3, true)
	leader = c.CheckOneLeader()
	have := map[string]bool{}
	for _, a := range c.FSM(leader).Applied() {
		have[string(a.Data)] = true
	}
	for _, v := range acked {
		if !have[v] {
			t.Errorf("acknowledged %q is gone after every node crashed", v)
		}
	}
}
