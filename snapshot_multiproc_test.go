package graft_test

// Snapshot tests on real processes: nodes run as children of the test
// binary (see package internal/testnode) with a snapshot store, the
// process's FileService on their gRPC server and an optional throttle, and
// are killed with SIGKILL while they install snapshots.

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/internal/testnode"
	"github.com/graft-raft/graft/rafttest"
)

var (
	mpLargeFlag = flag.Bool("graft.large", false, "run TestLargeSnapshotInstall, the 1 GiB snapshot install measurement")
	mpSeedFlag  = flag.Uint64("graft.seed", 0, "seed of the blob payloads in the snapshot tests (0: random)")
)

const (
	mpWait = 15 * time.Second // bound on each wait for the cluster
	// mpWriteWait bounds writing a test's blobs: 32 MiB in 1 MiB commands
	// take about 1 s on an idle 2-core machine, 7 s with the race
	// detector in the children, and more than 15 s next to the rest of
	// make test (Docker builds included).
	mpWriteWait = 60 * time.Second
	mpMiB       = 1 << 20
	// mpResumeFile is the size of the blob files of the resume tests. The
	// snapshot copier records its progress durably at the latest once
	// 4 MiB of files completed since it last did (snapshot.progressBytes),
	// so every file of this size is on record the moment it counts in
	// FilesDone, and a kill -9 can never lose it.
	mpResumeFile = 4 * mpMiB
)

// mpSnapCluster starts a cluster of three processes with node options o.
func mpSnapCluster(t *testing.T, o testnode.NodeOptions) *testnode.Cluster {
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
		// machine, a follower busy with 1 MiB appends can miss a 300 ms
		// check-quorum window and the leader steps down mid-test.
		ElectionTimeout:   time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		Node:              o,
	})
	c.StartAll()
	return c
}

// mpSeed returns the seed of a test's payloads, and logs it.
func mpSeed(t *testing.T) uint64 {
	t.Helper()
	seed := *mpSeedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("payload seed %d (rerun with -graft.seed=%d)", seed, seed)
	return seed
}

// mpBlobWrite is one chunk written to a blob file.
type mpBlobWrite struct {
	file    string
	chunk   int
	version int // payloads differ per version
	size    int
}

// payload returns the deterministic pseudo-random payload of w.
func (w mpBlobWrite) payload(seed uint64) []byte {
	h := sha256.Sum256(fmt.Appendf(nil, "%d/%s/%d/%d", seed, w.file, w.chunk, w.version))
	var key [32]byte
	copy(key[:], h[:])
	b := make([]byte, w.size)
	_, _ = rand.NewChaCha8(key).Read(b) // never fails
	return b
}

// mpBlobFiles returns the writes of files named prefix0..prefix<n-1>, each
// of chunks chunks of size bytes.
func mpBlobFiles(prefix string, n, chunks, size, version int) []mpBlobWrite {
	var ws []mpBlobWrite
	for f := range n {
		for ch := range chunks {
			ws = append(ws, mpBlobWrite{file: fmt.Sprintf("%s%d", prefix, f), chunk: ch, version: version, size: size})
		}
	}
	return ws
}

// mpWriteBlobs applies every write through the leader with a few clients at
// once, and returns the highest index acknowledged.
func mpWriteBlobs(t *testing.T, c *testnode.Cluster, seed uint64, ws []mpBlobWrite, clients int, timeout time.Duration) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	jobs := make(chan mpBlobWrite)
	var (
		mu      sync.Mutex
		last    uint64
		firstEr error
		wg      sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for w := range jobs {
				rep, err := c.ApplyLeader(ctx, testnode.BlobCommand(w.file, w.chunk, w.payload(seed)))
				mu.Lock()
				if err != nil && firstEr == nil {
					firstEr = fmt.Errorf("write %s chunk %d: %w", w.file, w.chunk, err)
					cancel()
				}
				last = max(last, rep.Index)
				mu.Unlock()
			}
		})
	}
	for _, w := range ws {
		select {
		case jobs <- w:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if firstEr != nil {
		t.Fatal(firstEr)
	}
	return last
}

// mpWaitStatus polls node id's status until cond holds and returns it.
func mpWaitStatus(t *testing.T, c *testnode.Cluster, id string, timeout time.Duration, what string, cond func(testnode.Status) bool) testnode.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.Status(ctx, id)
		cancel()
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s; last status %+v, %v", timeout, id, what, st, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func mpStatus(t *testing.T, c *testnode.Cluster, id string) testnode.Status {
	t.Helper()
	st, err := c.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mpOthers(ids []string, not ...string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return slices.Contains(not, id) })
}

// mpWaitApplied waits until every node in ids applied index.
func mpWaitApplied(t *testing.T, c *testnode.Cluster, ids []string, index uint64) {
	t.Helper()
	for _, id := range ids {
		mpWaitStatus(t, c, id, mpWait, fmt.Sprintf("applied %d", index), func(st testnode.Status) bool { return st.Applied >= index })
	}
}

// mpMaxLastIndex returns the highest last log index of the live nodes:
// no node holds an entry past it.
func mpMaxLastIndex(t *testing.T, c *testnode.Cluster) uint64 {
	t.Helper()
	var last uint64
	for _, id := range c.Live() {
		last = max(last, mpStatus(t, c, id).LastIndex)
	}
	return last
}

// mpSnapshotQuiet waits until the nodes ids have applied everything the
// leader has, with no writes going on, then has each take a snapshot,
// which must be at the same index (nothing can be in flight); it returns
// that index and fails unless each node's log now starts past the entry
// after lagging.
func mpSnapshotQuiet(t *testing.T, c *testnode.Cluster, ids []string, lagging uint64) uint64 {
	t.Helper()
	_, ldr, ok := c.Leader(context.Background())
	if !ok {
		t.Fatal("no leader")
	}
	mpWaitApplied(t, c, ids, ldr.LastIndex)
	var snap uint64
	for i, id := range ids {
		idx := mpSnapshotNow(t, c, id)
		if i > 0 && idx != snap {
			t.Fatalf("%s snapshotted at %d, %s at %d: the log moved", ids[0], snap, id, idx)
		}
		snap = idx
		if st := mpStatus(t, c, id); st.FirstIndex <= lagging+1 {
			t.Fatalf("%s's log starts at %d after snapshot %d: not past the follower's %d", id, st.FirstIndex, snap, lagging)
		}
	}
	return snap
}

// mpSnapshotNow makes node id take a snapshot and returns its index.
func mpSnapshotNow(t *testing.T, c *testnode.Cluster, id string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*mpWait)
	defer cancel()
	idx, err := c.Snapshot(ctx, id)
	if err != nil {
		t.Fatalf("snapshot on %s: %v", id, err)
	}
	return idx
}

// mpCheckSameState waits until every node has the same record and the same
// blob files (hashed on disk), and no node reports a violation; it returns
// the common digest.
func mpCheckSameState(t *testing.T, c *testnode.Cluster, ids []string, timeout time.Duration) testnode.Digest {
	t.Helper()
	var (
		why  string
		dig  testnode.Digest
		hist = map[string][]testnode.Entry{}
	)
	same := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
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
				why = fmt.Sprintf("%s has %d records, %s %d, and they differ", ids[0], len(hist[ids[0]]), id, len(hist[id]))
				return false
			}
		}
		for i, id := range ids {
			d, err := c.Digest(ctx, id)
			if err != nil {
				why = err.Error()
				return false
			}
			if i == 0 {
				dig = d
			} else if !slices.Equal(d.Blobs, dig.Blobs) {
				why = fmt.Sprintf("blob files differ: %s %v, %s %v", ids[0], dig.Blobs, id, d.Blobs)
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(timeout)
	for !same() {
		if time.Now().After(deadline) {
			kill9ReportDiff(t, hist)
			t.Fatalf("nodes did not converge within %v: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	for _, id := range ids {
		if st := mpStatus(t, c, id); st.Violations != "" || st.Err != "" {
			t.Errorf("%s: state machine violation %q, node error %q", id, st.Violations, st.Err)
		}
	}
	var bytes int64
	for _, b := range dig.Blobs {
		bytes += b.Size
	}
	t.Logf("%v hold the same %d records and %d blob files (%d bytes)", ids, len(hist[ids[0]]), len(dig.Blobs), bytes)
	return dig
}

// TestMultiProcLaggingFollowerInstallsSnapshot kills a follower, writes
// until the leader has snapshotted and compacted its log past the
// follower, and restarts the follower: it must catch up by installing the
// leader's snapshot, and every node must end with the same record.
func TestMultiProcLaggingFollowerInstallsSnapshot(t *testing.T) {
	c := mpSnapCluster(t, testnode.NodeOptions{SnapshotLogEntries: 64, SnapshotTrailingEntries: 16, VerifyLoads: true})
	follower := mpOthers(c.IDs(), c.WaitLeader(mpWait))[0]

	load := c.StartLoad("a", kill9Clients)
	defer load.Stop()
	kill9WaitAcked(t, c, load, 30, "with every node up")
	c.Kill(follower)
	lagging := mpMaxLastIndex(t, c)
	kill9WaitAcked(t, c, load, 20, "after the kill")
	c.WaitFor(mpWait, fmt.Sprintf("the leader's log compacted past %d", lagging+1), func() bool {
		_, st, ok := c.Leader(context.Background())
		return ok && st.FirstIndex > lagging+1 && st.Snapshot.Index > lagging
	})
	load.Stop()
	acked := load.Acked()
	leader, ldr, ok := c.Leader(context.Background())
	if !ok {
		t.Fatal("no leader")
	}
	t.Logf("follower %s killed at or before index %d; leader %s: snapshot %d, log [%d, %d], %d writes acknowledged",
		follower, lagging, leader, ldr.Snapshot.Index, ldr.FirstIndex, ldr.LastIndex, len(acked))

	c.Start(follower)
	st := mpWaitStatus(t, c, follower, mpWait, fmt.Sprintf("snapshot %d installed and commit %d applied", ldr.Snapshot.Index, ldr.Commit),
		func(st testnode.Status) bool {
			return st.Snapshot.Index >= ldr.Snapshot.Index && st.Snapshot.State == "IDLE" && st.Applied >= ldr.Commit
		})
	i := slices.IndexFunc(st.Loads, func(l testnode.LoadInfo) bool { return l.Index == st.Snapshot.Index })
	if i < 0 || !st.Loads[i].Verified {
		t.Errorf("follower's snapshot is %d but its state machine loaded %+v", st.Snapshot.Index, st.Loads)
	}
	if p := st.Snapshot.Progress; p.FilesTotal == 0 || p.FilesDone != p.FilesTotal || p.BytesFetched+p.BytesReused != p.BytesTotal || p.BytesFetched == 0 {
		t.Errorf("follower's install progress %+v: want every file done, and fetched", p)
	}
	t.Logf("follower %s installed snapshot %d (%+v) and applied through %d", follower, st.Snapshot.Index, st.Snapshot.Progress, st.Applied)

	// Replication goes on as usual after the install.
	load2 := c.StartLoad("b", kill9Clients)
	defer load2.Stop()
	kill9WaitAcked(t, c, load2, 30, "after the install")
	load2.Stop()
	for cmd, idx := range load2.Acked() {
		acked[cmd] = idx
	}
	kill9CheckHistories(t, c, acked)
}

// TestMultiProcFollowerKilledMidDownloadResumes kills a follower with
// SIGKILL while it downloads a throttled snapshot of eight 4 MiB files,
// some of them complete; after the restart its second download must fetch
// only what was not complete, and its state must equal the leader's.
func TestMultiProcFollowerKilledMidDownloadResumes(t *testing.T) {
	seed := mpSeed(t)
	c := mpSnapCluster(t, testnode.NodeOptions{
		BlobChunkSize: mpMiB, SnapshotTrailingEntries: 2, LogCacheEntries: 64, VerifyLoads: true,
		// 8 MiB/s: about half a second per file.
		ThrottleBytesPerSec: 8 * mpMiB,
		// One file at a time, largest first: the files complete one by
		// one, and the small record files come last.
		CopyParallel: 1,
	})
	follower := mpOthers(c.IDs(), c.WaitLeader(mpWait))[0]
	c.Kill(follower)
	lagging := mpMaxLastIndex(t, c)

	start := time.Now()
	last := mpWriteBlobs(t, c, seed, mpBlobFiles("f", 8, mpResumeFile/mpMiB, mpMiB, 1), 4, mpWriteWait)
	// Both live nodes snapshot, so whichever leads sends the same one.
	snap := mpSnapshotQuiet(t, c, mpOthers(c.IDs(), follower), lagging)
	t.Logf("wrote 32 MiB through index %d and snapshotted at %d in %v", last, snap, time.Since(start))

	c.Start(follower)
	first := mpWaitStatus(t, c, follower, mpWait, "some files of the snapshot downloaded, but not all", func(st testnode.Status) bool {
		p := st.Snapshot.Progress
		if st.Snapshot.Index >= snap || (p.FilesTotal > 0 && p.FilesDone == p.FilesTotal) {
			t.Fatalf("the download completed before it could be interrupted: %+v", st.Snapshot)
		}
		// Files done but at least three of the eight blob files to go.
		return p.FilesDone >= 1 && p.FilesDone <= p.FilesTotal-5
	}).Snapshot.Progress
	c.Kill(follower)
	t.Logf("killed %s mid-download: %d of %d files, %d of %d bytes done", follower, first.FilesDone, first.FilesTotal, first.BytesDone, first.BytesTotal)

	restart := time.Now()
	c.Start(follower)
	st := mpWaitStatus(t, c, follower, mpWait, fmt.Sprintf("snapshot %d installed", snap), func(st testnode.Status) bool {
		return st.Snapshot.Index >= snap && st.Snapshot.State == "IDLE" && st.Applied >= snap
	})
	second := st.Snapshot.Progress
	t.Logf("second download took %v: fetched %d bytes, kept %d, of %d", time.Since(restart), second.BytesFetched, second.BytesReused, second.BytesTotal)

	// Every file complete before the kill is kept, and only the mpOthers
	// are fetched, each once.
	done := int64(first.FilesDone) * mpResumeFile
	switch {
	case st.Snapshot.Index != snap:
		t.Errorf("follower installed snapshot %d, want %d", st.Snapshot.Index, snap)
	case second.BytesTotal != first.BytesTotal || second.FilesDone != second.FilesTotal:
		t.Errorf("second download %+v is not of the same snapshot as the first %+v, or incomplete", second, first)
	case second.BytesFetched+second.BytesReused != second.BytesTotal:
		t.Errorf("second download fetched %d and kept %d bytes, want a total of %d: some bytes were fetched twice",
			second.BytesFetched, second.BytesReused, second.BytesTotal)
	case second.BytesReused < done:
		t.Errorf("second download kept %d bytes, want at least the %d bytes of the %d files complete before the kill",
			second.BytesReused, done, first.FilesDone)
	case second.BytesFetched > second.BytesTotal-done:
		t.Errorf("second download fetched %d bytes, want at most %d (total %d minus the files complete before the kill)",
			second.BytesFetched, second.BytesTotal-done, second.BytesTotal)
	case second.BytesFetched == 0:
		t.Errorf("second download fetched nothing: every file was complete before the kill")
	}
	if len(st.Loads) != 1 || st.Loads[0].Index != snap || !st.Loads[0].Verified {
		t.Errorf("follower loaded %+v, want snapshot %d once, verified", st.Loads, snap)
	}
	mpCheckSameState(t, c, c.IDs(), mpWait)
}

// TestMultiProcLeaderKilledMidCopy kills the leader with SIGKILL while a
// follower downloads its snapshot. The follower's previous snapshot must
// stay intact and loadable, no partial snapshot may ever be loaded, and
// once a new leader is elected the follower must install its snapshot,
// keeping the files it already had; then all three converge.
func TestMultiProcLeaderKilledMidCopy(t *testing.T) {
	seed := mpSeed(t)
	c := mpSnapCluster(t, testnode.NodeOptions{
		BlobChunkSize: mpMiB, SnapshotTrailingEntries: 2, LogCacheEntries: 64, VerifyLoads: true,
		ThrottleBytesPerSec: 8 * mpMiB, CopyParallel: 1,
	})
	follower := mpOthers(c.IDs(), c.WaitLeader(mpWait))[0]

	// Every node snapshots two 1 MiB files.
	mpWriteBlobs(t, c, seed, mpBlobFiles("a", 2, 1, mpMiB, 1), 2, mpWriteWait)
	prev := mpSnapshotQuiet(t, c, c.IDs(), 0)

	// With the follower down: six 4 MiB files, and a0 changes.
	c.Kill(follower)
	lagging := mpMaxLastIndex(t, c)
	ws := append(mpBlobFiles("b", 6, mpResumeFile/mpMiB, mpMiB, 1), mpBlobWrite{file: "a0", chunk: 0, version: 2, size: mpMiB})
	mpWriteBlobs(t, c, seed, ws, 4, mpWriteWait)
	snap := mpSnapshotQuiet(t, c, mpOthers(c.IDs(), follower), lagging)
	t.Logf("follower %s has snapshot %d; the others snapshot %d", follower, prev, snap)

	c.Start(follower)
	first := mpWaitStatus(t, c, follower, mpWait, "some files of the leader's snapshot downloaded, but not all", func(st testnode.Status) bool {
		p := st.Snapshot.Progress
		if st.Snapshot.Index > prev || (p.FilesTotal > 0 && p.FilesDone == p.FilesTotal) {
			t.Fatalf("the download completed before it could be interrupted: %+v", st.Snapshot)
		}
		// a1 is reused from the previous snapshot; wait for a downloaded
		// file too, with at least three of the six 4 MiB files to go.
		return st.Snapshot.State == "DOWNLOADING" && st.LeaderID != "" && p.FilesDone >= 2 && p.FilesDone <= p.FilesTotal-6
	})
	leader := first.LeaderID // serving the download
	other := mpOthers(c.IDs(), follower, leader)[0]
	c.Kill(leader)
	p1 := first.Snapshot.Progress
	t.Logf("killed leader %s while %s downloaded snapshot %d: %d of %d files, %d of %d bytes done (%d reused)",
		leader, follower, snap, p1.FilesDone, p1.FilesTotal, p1.BytesDone, p1.BytesTotal, p1.BytesReused)

	// The previous snapshot is untouched and loadable, and nothing else
	// was loaded.
	if len(first.Loads) != 1 || first.Loads[0].Index != prev {
		t.Errorf("follower loaded %+v at startup, want its snapshot %d", first.Loads, prev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mpWait)
	defer cancel()
	if chk, err := c.CheckSnapshot(ctx, follower); err != nil || chk.Index != prev || chk.Err != "" {
		t.Errorf("follower's newest snapshot after the leader's death: %+v, %v; want %d intact", chk, err, prev)
	}

	// Until it completes the install from the new leader, the follower
	// holds its previous snapshot, and loads only complete ones.
	newLeader := ""
	st := mpWaitStatus(t, c, follower, mpWait, "a snapshot from the new leader installed", func(st testnode.Status) bool {
		for _, l := range st.Loads {
			if (l.Index != prev && l.Index != snap) || !l.Verified {
				t.Fatalf("follower loaded %+v: not one of the complete snapshots %d, %d", st.Loads, prev, snap)
			}
		}
		if st.Violations != "" || st.Err != "" {
			t.Fatalf("follower: violation %q, error %q", st.Violations, st.Err)
		}
		if st.Snapshot.Index != prev && st.Snapshot.Index != snap {
			t.Fatalf("follower's snapshot is %d, want %d or, from the new leader, %d", st.Snapshot.Index, prev, snap)
		}
		if st.LeaderID != "" && st.LeaderID != leader {
			newLeader = st.LeaderID
		}
		return st.Snapshot.Index == snap && st.Snapshot.State == "IDLE" && st.Applied >= snap
	})
	if newLeader != other {
		t.Errorf("follower followed %q after the leader's death, want %s", newLeader, other)
	}
	p2 := st.Snapshot.Progress
	t.Logf("follower installed snapshot %d from %s: fetched %d bytes, kept %d, of %d", snap, other, p2.BytesFetched, p2.BytesReused, p2.BytesTotal)
	// The files complete before the leader died are kept: a1 (linked
	// from the previous snapshot) and the 4 MiB files downloaded.
	if p1.BytesReused != mpMiB {
		t.Errorf("first download reused %d bytes, want a1's %d, linked from the previous snapshot", p1.BytesReused, mpMiB)
	}
	kept := p1.BytesReused + int64(p1.FilesDone-1)*mpResumeFile
	if p2.FilesDone != p2.FilesTotal || p2.BytesFetched+p2.BytesReused != p2.BytesTotal || p2.BytesReused < kept {
		t.Errorf("install from the new leader: %+v; want every byte once, at least %d bytes kept", p2, kept)
	}
	if n := len(st.Loads); n != 2 || st.Loads[1].Index != snap {
		t.Errorf("follower loaded %+v, want %d at startup then %d", st.Loads, prev, snap)
	}
	if chk, err := c.CheckSnapshot(ctx, follower); err != nil || chk.Index != snap || chk.Err != "" {
		t.Errorf("follower's newest snapshot: %+v, %v; want %d intact", chk, err, snap)
	}

	c.Start(leader)
	last := mpWriteBlobs(t, c, seed, []mpBlobWrite{{file: "c", chunk: 0, version: 1, size: mpMiB}}, 1, mpWriteWait)
	mpWaitApplied(t, c, c.IDs(), last)
	mpCheckSameState(t, c, c.IDs(), mpWait)
}

// TestLargeSnapshotInstall measures the install of a 1 GiB snapshot (100
// files of about 10 MiB, written as 1 MiB chunks) by a follower whose disk
// was wiped, then the install of the next snapshot after 1% of the state
// (one file) changed while it was down. It runs only with -graft.large.
func TestLargeSnapshotInstall(t *testing.T) {
	if !*mpLargeFlag {
		t.Skip("needs -graft.large: 1 GiB snapshot measurement")
	}
	const (
		files      = 100
		chunks     = 1024 // 1 GiB
		largeWait  = 5 * time.Minute
		maxFetched = 0.02 // share of the state the second install may fetch
	)
	seed := mpSeed(t)
	c := mpSnapCluster(t, testnode.NodeOptions{BlobChunkSize: mpMiB, SnapshotTrailingEntries: 8, LogCacheEntries: 64})
	leader := c.WaitLeader(mpWait)
	follower := mpOthers(c.IDs(), leader)[0]

	// File i has 11 chunks for i < 24, else 10: 1024 chunks in all.
	chunksOf := func(i int) int { return chunks/files + min(1, max(0, chunks%files-i)) }
	var ws []mpBlobWrite
	for i := range files {
		for ch := range chunksOf(i) {
			ws = append(ws, mpBlobWrite{file: fmt.Sprintf("f%03d", i), chunk: ch, version: 1, size: mpMiB})
		}
	}
	start := time.Now()
	last := mpWriteBlobs(t, c, seed, ws, 8, largeWait)
	mpWaitApplied(t, c, c.IDs(), last)
	writeTime := time.Since(start)
	t.Logf("wrote %d MiB in %v (%.0f MiB/s) through index %d", len(ws), writeTime, float64(len(ws))/writeTime.Seconds(), last)

	// Install 1: the follower comes back with an empty disk.
	c.Kill(follower)
	c.Wipe(follower)
	start = time.Now()
	snap1 := mpSnapshotNow(t, c, leader)
	saveTime := time.Since(start)
	ldr := mpStatus(t, c, leader)
	t.Logf("leader %s saved snapshot %d in %v; log [%d, %d]", leader, snap1, saveTime, ldr.FirstIndex, ldr.LastIndex)
	start = time.Now()
	c.Start(follower)
	st1 := mpWaitStatus(t, c, follower, largeWait, fmt.Sprintf("snapshot %d installed", snap1), func(st testnode.Status) bool {
		return st.Snapshot.Index >= snap1 && st.Snapshot.State == "IDLE" && st.Applied >= ldr.Commit
	})
	catchUp1 := time.Since(start)
	p1 := st1.Snapshot.Progress

	// Install 2: one file of 100 changes while the follower is down.
	c.Kill(follower)
	var ws2 []mpBlobWrite
	for ch := range chunksOf(0) {
		ws2 = append(ws2, mpBlobWrite{file: "f000", chunk: ch, version: 2, size: mpMiB})
	}
	last = mpWriteBlobs(t, c, seed, ws2, 4, largeWait)
	mpWaitApplied(t, c, mpOthers(c.IDs(), follower), last)
	start = time.Now()
	snap2 := mpSnapshotNow(t, c, leader)
	saveTime2 := time.Since(start)
	ldr = mpStatus(t, c, leader)
	if ldr.FirstIndex <= st1.LastIndex+1 {
		t.Fatalf("leader's log starts at %d after snapshot %d: not past the follower's %d", ldr.FirstIndex, snap2, st1.LastIndex)
	}
	start = time.Now()
	c.Start(follower)
	st2 := mpWaitStatus(t, c, follower, largeWait, fmt.Sprintf("snapshot %d installed", snap2), func(st testnode.Status) bool {
		return st.Snapshot.Index >= snap2 && st.Snapshot.State == "IDLE" && st.Applied >= ldr.Commit
	})
	catchUp2 := time.Since(start)
	p2 := st2.Snapshot.Progress
	ldr = mpStatus(t, c, leader)

	start = time.Now()
	mpCheckSameState(t, c, []string{leader, follower}, largeWait)
	t.Logf("compared the leader's and follower's state in %v", time.Since(start))

	const gib = 1 << 30
	t.Logf("1 GiB snapshot install (%d blob files written as %d chunks of 1 MiB; no throttle; seed %d)\n"+
		"| | install 1: empty disk | install 2: 1%% changed |\n"+
		"|---|---|---|\n"+
		"| leader snapshot save (hash of all files) | %v | %v |\n"+
		"| time from restart to caught up | %v | %v |\n"+
		"| snapshot size | %.3f GiB (%d files) | %.3f GiB (%d files) |\n"+
		"| bytes fetched | %d (%.2f%%) | %d (%.2f%%) |\n"+
		"| bytes reused | %d | %d |\n"+
		"| copy rate | %.0f MiB/s | %.0f MiB/s |\n"+
		"| follower RSS idle after start, before the install | %.1f MiB | %.1f MiB |\n"+
		"| follower peak RSS (VmHWM) | %.1f MiB | %.1f MiB |\n"+
		"| follower RSS after the install | %.1f MiB | %.1f MiB |\n"+
		"leader: RSS %.1f MiB, peak %.1f MiB; write phase %v (%.0f MiB/s)",
		files, len(ws), seed,
		saveTime, saveTime2,
		catchUp1.Round(time.Millisecond), catchUp2.Round(time.Millisecond),
		float64(p1.BytesTotal)/gib, p1.FilesTotal, float64(p2.BytesTotal)/gib, p2.FilesTotal,
		p1.BytesFetched, 100*float64(p1.BytesFetched)/float64(p1.BytesTotal), p2.BytesFetched, 100*float64(p2.BytesFetched)/float64(p2.BytesTotal),
		p1.BytesReused, p2.BytesReused,
		p1.BytesPerSec/mpMiB, p2.BytesPerSec/mpMiB,
		float64(st1.StartRSS)/mpMiB, float64(st2.StartRSS)/mpMiB,
		float64(st1.PeakRSS)/mpMiB, float64(st2.PeakRSS)/mpMiB,
		float64(st1.RSS)/mpMiB, float64(st2.RSS)/mpMiB,
		float64(ldr.RSS)/mpMiB, float64(ldr.PeakRSS)/mpMiB, writeTime.Round(time.Millisecond), float64(len(ws))/writeTime.Seconds())

	if p1.BytesFetched < gib || p1.BytesReused != 0 {
		t.Errorf("first install fetched %d bytes and reused %d, want all of the 1 GiB fetched", p1.BytesFetched, p1.BytesReused)
	}
	if float64(p2.BytesFetched) > maxFetched*float64(p2.BytesTotal) || p2.BytesFetched+p2.BytesReused != p2.BytesTotal {
		t.Errorf("second install fetched %d bytes and reused %d of %d, want at most %.0f%% fetched",
			p2.BytesFetched, p2.BytesReused, p2.BytesTotal, 100*maxFetched)
	}
}

// TestEmptyFollowerInstallsSnapshot is the in-process regression test of
// a bug the multi-process tests found: a leader whose log is compacted
// never brought a follower with an empty log up to date if it probed that
// follower from the end of its log (a leader elected after the
// compaction, or one that walked back while the follower was up). The
// follower rejects the probe with last_log_index 0, so the leader probed
// at prev_log_index 0, which matches (index 0 always has term 0); its
// pipeline then could not read entry 1 (compacted) and returned to the
// probe at 0, forever, without ever sending InstallSnapshot.
func TestEmptyFollowerInstallsSnapshot(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3, Configure: func(_ string, o *graft.Options) {
		o.SnapshotTrailingEntries = 2
	}})
	f := "n3"
	c.Crash(f)
	c.Disconnect(f)
	for i := range 10 {
		c.One(fmt.Appendf(nil, "x-%d", i), 2, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var idx uint64
	for _, id := range []string{"n1", "n2"} {
		var err error
		if idx, err = c.Node(id).Snapshot(ctx); err != nil {
			t.Fatal(err)
		}
		if first := c.Node(id).Status().FirstIndex; first <= 2 {
			t.Fatalf("%s's log starts at %d after snapshot %d", id, first, idx)
		}
	}
	// A leader elected now has a compacted log from the start.
	old := c.CheckOneLeader("n1", "n2")
	c.Restart(old)
	c.One([]byte("new leader"), 2, true)
	t.Logf("leader %s restarted; leader now %s", old, c.CheckOneLeader("n1", "n2"))

	if err := c.Start(f); err != nil {
		t.Fatal(err)
	}
	c.Reconnect(f)
	deadline := time.Now().Add(5 * time.Second)
	for c.Node(f).Status().Snapshot.LastIndex < idx {
		if time.Now().After(deadline) {
			ldr := c.CheckOneLeader()
			before := c.Net.LinkStats(c.Addr(ldr), c.Addr(f)).Delivered
			time.Sleep(100 * time.Millisecond) // measuring a rate
			after := c.Net.LinkStats(c.Addr(ldr), c.Addr(f)).Delivered
			st, fs := c.Node(ldr).Status(), c.Node(f).Status()
			t.Fatalf("follower %s (log [%d, %d], snapshot %d) never got a snapshot from leader %s (log [%d, %d], snapshot %d, view of %s %+v); "+
				"the leader delivered %d messages to it in 100ms",
				f, fs.FirstIndex, fs.LastIndex, fs.Snapshot.LastIndex, ldr, st.FirstIndex, st.LastIndex, st.Snapshot.LastIndex, f,
				st.Followers, after-before)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	c.One([]byte("after"), 3, true)
	c.CheckConverged(5 * time.Second)
}
