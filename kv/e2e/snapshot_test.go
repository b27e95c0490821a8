//go:build unix

package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSnapshotCatchUp stops a follower, writes until the leader's log is
// compacted past it (explicit POST /v1/admin/snapshot), restarts it, and
// checks that it catches up by installing a snapshot (watched with
// graftctl watch), that its status shows the install, and that all nodes
// then hold identical key sets and values.
func TestSnapshotCatchUp(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	random := func(n int) []byte {
		b := make([]byte, (n+7)/8*8)
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
		}
		return b[:n]
	}

	// Throttled installs take long enough (about a second) to be watched.
	c := newCluster(t, clusterOptions{flags: []string{"--snapshot-throttle", fmt.Sprint(2 << 20)}})
	c.start()
	l := c.waitLeader()
	fs := c.followers(l)
	lag := fs[0]

	want := map[string][]byte{} // what every node must hold at the end
	var gone []string           // keys that must be missing
	first := map[string][]byte{}
	for i := range 50 {
		first[fmt.Sprintf("a-%03d", i)] = random(1 << 10)
	}
	c.putMany(l, first, 8)
	maps.Copy(want, first)
	c.waitApplied(l.mustStatus().CommitIndex)

	lagLast := lag.mustStatus().LastLogIndex
	lag.stop()
	t.Logf("stopped follower %s at log index %d", lag.id, lagLast)

	// While it is down: a MiB of new keys, overwrites and deletes.
	bulk := map[string][]byte{}
	for i := range 256 {
		bulk[fmt.Sprintf("b-%03d", i)] = random(4 << 10)
	}
	for i := range 10 {
		bulk[fmt.Sprintf("a-%03d", i)] = random(100)
	}
	c.putMany(l, bulk, 8)
	maps.Copy(want, bulk)
	for i := 10; i < 20; i++ {
		k := fmt.Sprintf("a-%03d", i)
		l.reqFollow("DELETE", kvPath(k), nil, nil).want(t, "delete "+k, 200)
		delete(want, k)
		gone = append(gone, k)
	}

	// Write and snapshot until the leader's log no longer holds the entry
	// the stopped follower needs next (the leader keeps some trailing
	// entries after a snapshot).
	var snapIndex uint64
	fill := 0
	waitFor(t, 60*time.Second, fmt.Sprintf("the leader's log to be compacted past index %d", lagLast+1), func() (bool, string) {
		batch := map[string][]byte{}
		for range 300 {
			batch[fmt.Sprintf("fill-%05d", fill)] = fmt.Appendf(nil, "filler %d", fill)
			fill++
		}
		c.putMany(l, batch, 16)
		maps.Copy(want, batch)
		a := l.req("POST", "/v1/admin/snapshot", nil, nil).want(t, "POST /v1/admin/snapshot", 200)
		snapIndex = a.index(t, "POST /v1/admin/snapshot")
		s := l.mustStatus()
		if s.Snapshot.LastIncludedIndex < snapIndex {
			t.Errorf("after POST /v1/admin/snapshot answered index %d the leader's status shows snapshot %d", snapIndex, s.Snapshot.LastIncludedIndex)
		}
		return s.FirstLogIndex > lagLast+1, fmt.Sprintf("snapshot at %d, log %d..%d after %d fillers", snapIndex, s.FirstLogIndex, s.LastLogIndex, fill)
	})
	ls := l.mustStatus()
	t.Logf("leader %s: snapshot at %d, log %d..%d; %s last had %d", l.id, ls.Snapshot.LastIncludedIndex, ls.FirstLogIndex, ls.LastLogIndex, lag.id, lagLast)

	// Watch the lagging node with graftctl while it restarts.
	var watchOut syncBuffer
	watch := exec.Command(graftctlBin, "--addr", lag.httpAddr, "watch", "--interval", "50ms", "--timeout", "2s")
	watch.Stdout, watch.Stderr = &watchOut, &watchOut
	watch.SysProcAttr = sysProcAttr()
	watch.Env = childEnv()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan struct{})
	var watchErr error
	go func() {
		watchErr = watch.Wait()
		close(watchDone)
	}()
	t.Cleanup(func() {
		_ = watch.Process.Kill()
		<-watchDone
	})

	lag.start()
	target := l.mustStatus().CommitIndex
	c.waitApplied(target, lag)
	s := lag.mustStatus()
	p := s.Snapshot.Progress
	t.Logf("%s caught up: applied %d, log %d..%d, snapshot %d (term %d) %s; install progress files %d/%d bytes %d/%d at %.0f B/s",
		lag.id, s.AppliedIndex, s.FirstLogIndex, s.LastLogIndex, s.Snapshot.LastIncludedIndex, s.Snapshot.LastIncludedTerm,
		s.Snapshot.State, p.FilesDone, p.FilesTotal, p.BytesDone, p.BytesTotal, p.BytesPerSec)
	if s.Snapshot.LastIncludedIndex < snapIndex {
		t.Errorf("%s: snapshot.last_included_index %d after catching up, want at least the leader's %d: it cannot have caught up without installing it", lag.id, s.Snapshot.LastIncludedIndex, snapIndex)
	}
	if p.FilesTotal == 0 || p.FilesDone != p.FilesTotal || p.BytesTotal == 0 || p.BytesDone != p.BytesTotal {
		t.Errorf("%s: snapshot.progress %+v after the install, want it complete (files_done = files_total > 0, bytes_done = bytes_total > 0)", lag.id, p)
	}

	select {
	case <-watchDone:
		out := watchOut.String()
		t.Logf("graftctl watch exited (%v):\n%s", watchErr, out)
		if watchErr != nil || !strings.Contains(out, "snapshot installed") {
			t.Errorf("graftctl watch: %v, output without \"snapshot installed\"", watchErr)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("graftctl watch did not report the install within 20s of the catch-up:\n%s", watchOut.String())
	}

	// Identical state everywhere.
	c.waitApplied(l.mustStatus().CommitIndex)
	compareNodes(t, c, want, gone)

	// Replication resumes after the install.
	idx := c.put(l, "after-install", "yes")
	c.waitApplied(idx, lag)
	if v, ok, err := c.staleGet(lag, "after-install"); err != nil || !ok || v != "yes" {
		t.Errorf("%s after the install: after-install = %q, %v, %v", lag.id, v, ok, err)
	}
}

// compareNodes checks with stale reads that every node holds exactly want
// (and none of gone).
func compareNodes(t *testing.T, c *cluster, want map[string][]byte, gone []string) {
	t.Helper()
	keys := slices.Sorted(maps.Keys(want))
	var mu sync.Mutex
	var wg sync.WaitGroup
	var bad []string
	report := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		bad = append(bad, s)
	}
	for _, n := range c.nodes {
		wg.Go(func() {
			for _, k := range keys {
				v, ok, err := c.staleGet(n, k)
				switch {
				case err != nil:
					report(err.Error())
				case !ok:
					report(fmt.Sprintf("%s lacks %s", n.id, k))
				case !bytes.Equal([]byte(v), want[k]):
					report(fmt.Sprintf("%s has a different value for %s (%d bytes, want %d)", n.id, k, len(v), len(want[k])))
				}
			}
			for _, k := range gone {
				if _, ok, err := c.staleGet(n, k); ok || err != nil {
					report(fmt.Sprintf("%s still has deleted key %s (%v)", n.id, k, err))
				}
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		slices.Sort(bad)
		t.Fatalf("nodes differ in %d ways, e.g.:\n%s", len(bad), strings.Join(bad[:min(10, len(bad))], "\n"))
	}
	t.Logf("all %d nodes hold the same %d keys (%d deleted keys absent)", len(c.nodes), len(keys), len(gone))
}

// syncBuffer is a bytes.Buffer safe for a child's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
