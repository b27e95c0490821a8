//go:build linux

package faults

// The scenarios. Each is a named test that runs it once with a new seed
// (or -faults.seed); TestSoak runs them all over many seeds.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// allScenarios lists every scenario, in the order the soak runs them.
var allScenarios = []scenario{
	{name: "NoFaults", run: noFaults},
	{name: "Kill9Follower", run: kill9Follower},
	{name: "Kill9Leader", run: kill9Leader},
	{name: "Kill9All", run: kill9All},
	{name: "CrashLeaderAfterWrite", run: crashLeaderAfterWrite},
	{name: "PauseLeader", run: pauseLeader},
	{name: "PauseFollowerUntilSnapshot", run: pauseFollowerUntilSnapshot},
	{name: "IsolateLeader", run: isolateLeader},
	{name: "RandomHalves", run: randomHalves},
	{name: "OneWayCut", run: oneWayCut},
	{name: "FlakyNetwork", run: flakyNetwork},
	{name: "Bridge", nodes: 5, run: bridge},
	{name: "MajoritiesRing", nodes: 5, run: majoritiesRing},
	{name: "LaggingFollowerBlackholed", run: laggingFollowerBlackholed},
	{name: "Kill9FollowerMidDownload", run: kill9FollowerMidDownload},
	{name: "LeaderChangeMidTransfer", run: leaderChangeMidTransfer},
	{name: "CorruptSnapshotOnFollower", run: corruptSnapshotOnFollower},
	{name: "TornLogTail", run: tornLogTail},
	{name: "VoteFileRemoved", run: voteFileRemoved},
	{name: "DiskFullLeader", tmpfs: "40m", run: diskFullLeader},
	{name: "DiskFullInstallingFollower", tmpfs: "40m", run: diskFullInstallingFollower},
	{name: "AddNodeUnderLoad", nodes: 4, initial: 3, run: addNodeUnderLoad},
	{name: "RemoveLeaderUnderLoad", run: removeLeaderUnderLoad},
	{name: "ReplaceMemberWiped", run: replaceMemberWiped},
	{name: "LeaderTransfers", run: leaderTransfers},
}

func scenarioNamed(t *testing.T, name string) scenario {
	for _, sc := range allScenarios {
		if sc.name == name {
			return sc
		}
	}
	t.Fatalf("faults: no scenario %q", name)
	return scenario{}
}

// runNamed runs the scenario the test is named after.
func runNamed(t *testing.T) {
	name := strings.TrimPrefix(t.Name(), "Test")
	runScenario(t, scenarioNamed(t, name), newSeed(), &result{})
}

func TestNoFaults(t *testing.T)                   { runNamed(t) }
func TestKill9Follower(t *testing.T)              { runNamed(t) }
func TestKill9Leader(t *testing.T)                { runNamed(t) }
func TestKill9All(t *testing.T)                   { runNamed(t) }
func TestCrashLeaderAfterWrite(t *testing.T)      { runNamed(t) }
func TestPauseLeader(t *testing.T)                { runNamed(t) }
func TestPauseFollowerUntilSnapshot(t *testing.T) { runNamed(t) }
func TestIsolateLeader(t *testing.T)              { runNamed(t) }
func TestRandomHalves(t *testing.T)               { runNamed(t) }
func TestOneWayCut(t *testing.T)                  { runNamed(t) }
func TestFlakyNetwork(t *testing.T)               { runNamed(t) }
func TestBridge(t *testing.T)                     { runNamed(t) }
func TestMajoritiesRing(t *testing.T)             { runNamed(t) }
func TestLaggingFollowerBlackholed(t *testing.T)  { runNamed(t) }
func TestKill9FollowerMidDownload(t *testing.T)   { runNamed(t) }
func TestLeaderChangeMidTransfer(t *testing.T)    { runNamed(t) }
func TestCorruptSnapshotOnFollower(t *testing.T)  { runNamed(t) }
func TestTornLogTail(t *testing.T)                { runNamed(t) }
func TestVoteFileRemoved(t *testing.T)            { runNamed(t) }
func TestDiskFullLeader(t *testing.T)             { runNamed(t) }
func TestDiskFullInstallingFollower(t *testing.T) { runNamed(t) }
func TestAddNodeUnderLoad(t *testing.T)           { runNamed(t) }
func TestRemoveLeaderUnderLoad(t *testing.T)      { runNamed(t) }
func TestReplaceMemberWiped(t *testing.T)         { runNamed(t) }
func TestLeaderTransfers(t *testing.T)            { runNamed(t) }

// pick returns a random element of nodes.
func (e *env) pick(nodes []*node) *node {
	if len(nodes) == 0 {
		e.t.Fatal("faults: no node to pick from")
	}
	return nodes[e.rng.IntN(len(nodes))]
}

// shuffled returns the ids of the members in a random order.
func (e *env) shuffled() []string {
	out := ids(e.c.members())
	e.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func others(all []*node, not ...*node) []*node {
	var out []*node
	for _, n := range all {
		if !slices.Contains(not, n) {
			out = append(out, n)
		}
	}
	return out
}

// ---- process faults ----

func noFaults(e *env) {
	e.hold(3 * time.Second)
}

func kill9Follower(e *env) {
	for range 2 {
		l := e.c.waitLeader()
		f := e.pick(e.c.followers(l))
		e.w.waitAcked(40, "before the kill")
		f.kill()
		e.hold(time.Second)
		e.w.waitAcked(40, "with a follower down")
		f.start(false)
		e.c.waitCaughtUp(20*time.Second, f)
	}
}

func kill9Leader(e *env) {
	for range 2 {
		l := e.c.waitLeader()
		e.w.waitAcked(40, "before the kill")
		l.kill()
		nl := e.c.waitLeader(e.c.followers(l)...)
		e.event("new leader %s", nl.id)
		e.hold(500 * time.Millisecond)
		e.w.waitAcked(40, "under the new leader")
		l.start(false)
	}
}

func kill9All(e *env) {
	for range 2 {
		e.w.waitAcked(60, "before the kill")
		e.c.killAllAtOnce()
		e.hold(200 * time.Millisecond)
		for _, n := range e.c.members() {
			n.launch(true)
		}
		for _, n := range e.c.members() {
			n.waitServing()
		}
		e.c.waitLeader()
		e.w.waitAcked(40, "after the restart")
	}
}

// crashLeaderAfterWrite kills the leader right after a write is
// acknowledged, again and again (figure 8 at process level): the write
// must survive every change of leader.
func crashLeaderAfterWrite(e *env) {
	for range 5 {
		l := e.c.waitLeader()
		e.w.nextAck()
		l.kill()
		e.c.waitLeader(e.c.followers(l)...)
		l.start(false)
	}
}

// pauseLeader stops the leader for several election timeouts; the others
// elect a new one and take writes; then the old leader resumes and is
// flooded with reads, none of which may be stale.
func pauseLeader(e *env) {
	l := e.c.waitLeader()
	e.w.waitAcked(30, "before the pause")
	l.pause()
	nl := e.c.waitLeader(e.c.followers(l)...)
	e.event("new leader %s while %s is paused", nl.id, l.id)
	e.w.waitAcked(30, "under the new leader")
	e.hold(4 * electionTimeout)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			client := e.w.newClientID()
			for i := range 20 {
				in := Input{Op: OpGet, Key: e.w.keys[(g*20+i)%len(e.w.keys)]}
				if _, oc := e.w.do(client, l, in); oc == unknown {
					client = e.w.newClientID()
				}
			}
		})
	}
	l.resume()
	wg.Wait()
	e.w.waitAcked(30, "after the resume")
}

// lagPast writes through the leader until it has compacted its log past
// index: a follower whose log ends there needs a snapshot.
func (e *env) lagPast(index uint64, valueSize int) {
	e.t.Helper()
	for round := 0; ; round++ {
		l := e.c.waitLeader()
		st := l.mustStatus()
		if st.FirstLogIndex > index+1 {
			e.event("leader %s compacted its log to start at %d, past %d", l.id, st.FirstLogIndex, index)
			return
		}
		if round == 8 {
			e.t.Fatalf("faults: the leader's log still starts at %d after %d fills; want past %d", st.FirstLogIndex, round, index)
		}
		e.w.fill(700, valueSize, 24)
	}
}

// cutOff isolates f and returns the last index of its log once it has
// stopped growing.
func (e *env) cutOff(f *node) uint64 {
	e.t.Helper()
	e.c.isolate(f.id)
	e.laggard = []*node{f}
	var last uint64
	var since time.Time
	e.waitFor(10*time.Second, f.id+"'s log to stop growing", func() (bool, string) {
		s, err := f.status()
		if err != nil {
			return false, err.Error()
		}
		if s.LastLogIndex != last {
			last, since = s.LastLogIndex, time.Now()
		}
		return time.Since(since) >= 3*monitorInterval, fmt.Sprintf("last index %d", last)
	})
	return last
}

// reconnect heals the network after a cutOff, first resetting f's
// connections, as a long partition does: what the proxies held for f
// (the leader's appends, pipelined into the cut) is dropped, not
// delivered late.
func (e *env) reconnect(f *node) {
	n := 0
	for l, p := range e.c.proxies {
		if l.from == f.id || l.to == f.id {
			n += p.Reset()
		}
	}
	e.event("reset %s's %d connections", f.id, n)
	e.laggard = nil
	e.c.heal()
}

// margin is how many entries a follower may take between a status read
// and a pause or kill.
const margin = 300

// waitInstalled waits until n's newest snapshot is past index (which its
// log ended at when it fell behind) and n has caught up.
func (e *env) waitInstalled(n *node, index uint64) {
	e.t.Helper()
	e.waitFor(60*time.Second, fmt.Sprintf("%s to install a snapshot past %d", n.id, index), func() (bool, string) {
		s, err := n.status()
		if err != nil {
			return false, err.Error()
		}
		p := s.Snapshot.Progress
		return s.Snapshot.LastIncludedIndex > index, fmt.Sprintf("snapshot %d, %s, %d/%d files, %d/%d bytes", s.Snapshot.LastIncludedIndex,
			s.Snapshot.State, p.FilesDone, p.FilesTotal, p.BytesDone, p.BytesTotal)
	})
	e.event("%s installed snapshot %d", n.id, n.mustStatus().Snapshot.LastIncludedIndex)
	e.c.waitCaughtUp(30*time.Second, n)
}

// pauseFollowerUntilSnapshot stops a follower while the leader moves on
// and compacts its log; resumed, the follower catches up by installing a
// snapshot.
func pauseFollowerUntilSnapshot(e *env) {
	l := e.c.waitLeader()
	f := e.pick(e.c.followers(l))
	e.w.waitAcked(20, "before the pause")
	last := f.mustStatus().LastLogIndex + margin
	f.pause()
	e.laggard = []*node{f}
	e.lagPast(last, 512)
	e.laggard = nil
	f.resume()
	e.waitInstalled(f, last)
}

// ---- network faults ----

// isolateLeader cuts the leader off. The majority elects a new leader
// and goes on; nothing sent to the old leader after the cut may succeed.
func isolateLeader(e *env) {
	l := e.c.waitLeader()
	e.w.waitAcked(30, "before the cut")
	e.c.isolate(l.id)
	cutAt := e.now()
	done := make(chan struct{})
	var probes []probe
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			client := e.w.newClientID()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				in := Input{Op: OpGet, Key: e.w.keys[(g+i)%len(e.w.keys)]}
				if i%2 == 0 {
					in = Input{Op: OpPut, Key: in.Key, Value: fmt.Sprintf("minority-%d-%d", g, i)}
				}
				op, oc := e.w.do(client, l, in)
				mu.Lock()
				probes = append(probes, probe{call: op.Call, oc: oc, via: fmt.Sprint(op.Metadata), in: in})
				mu.Unlock()
				if oc == unknown {
					client = e.w.newClientID()
				}
				if oc != definite {
					select { // pacing the probes
					case <-done:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		})
	}
	nl := e.c.waitLeader(e.c.followers(l)...)
	e.event("new leader %s in the majority", nl.id)
	e.w.waitAcked(40, "in the majority")
	e.hold(time.Second)
	close(done)
	wg.Wait()
	e.c.heal()
	// The isolated node answers nothing definite: a read needs a quorum's
	// heartbeats, a write a quorum's acknowledgement. It may redirect to
	// the new leader only once it hears from it, which it cannot.
	margin := int64(50 * time.Millisecond) // bytes already past the proxy
	n := 0
	for _, p := range probes {
		if p.call > cutAt+margin && p.oc == definite && !strings.Contains(p.via, "→") {
			e.violation("minority-op-succeeded", "%s sent to the isolated %s at %.3fs succeeded (%s)", p.in.Op, l.id,
				time.Duration(p.call).Seconds(), p.via)
		}
		n++
	}
	e.t.Logf("faults: %d operations sent to the isolated old leader", n)
	e.w.waitAcked(20, "after healing")
}

type probe struct {
	call int64
	oc   outcome
	via  string
	in   Input
}

// randomHalves partitions the cluster into two random halves every
// second.
func randomHalves(e *env) {
	for range 6 {
		ids := e.shuffled()
		k := 1 + e.rng.IntN(len(ids)-1)
		e.c.partition(ids[:k], ids[k:])
		e.hold(time.Second)
	}
	e.c.heal()
}

// oneWayCut blackholes what the leader sends to a follower, then what the
// follower sends to the leader. No term may change: pre-vote keeps the
// cut-off follower from raising it, check-quorum keeps the leader.
func oneWayCut(e *env) {
	for _, fromLeader := range []bool{true, false} {
		l := e.c.waitLeader()
		f := e.pick(e.c.followers(l))
		e.w.waitAcked(20, "before the cut")
		term := l.mustStatus().Term
		from := e.now()
		if fromLeader {
			e.c.cutOneWay(l.id, f.id)
			e.event("one-way cut %s → %s", l.id, f.id)
		} else {
			e.c.cutOneWay(f.id, l.id)
			e.event("one-way cut %s → %s", f.id, l.id)
		}
		e.hold(2 * time.Second)
		e.w.waitAcked(20, "during the one-way cut")
		for _, n := range e.c.running() {
			e.mon.observe(n)
		}
		if got, who := e.mon.maxTerm(time.Duration(from), time.Duration(e.now())); got > term {
			e.violation("term-inflation", "during a one-way cut (leader %s, follower %s) %s reached term %d; it was %d", l.id, f.id, who, got, term)
		}
		e.c.heal()
		e.hold(500 * time.Millisecond)
	}
}

// flakyNetwork delays every link with jitter, limits one node's links to
// a low bandwidth, and resets all connections now and then.
func flakyNetwork(e *env) {
	e.c.shapeAll(Shape{Delay: 5 * time.Millisecond, Jitter: 40 * time.Millisecond})
	e.event("every link: delay 5ms + jitter up to 40ms")
	slow := e.pick(e.c.members())
	for _, o := range e.c.members() {
		if o != slow {
			for _, p := range []*Proxy{e.c.proxy(slow.id, o.id), e.c.proxy(o.id, slow.id)} {
				p.Set(Up, Shape{Delay: 5 * time.Millisecond, Jitter: 40 * time.Millisecond, BytesPerSec: 64 << 10})
				p.Set(Down, Shape{Delay: 5 * time.Millisecond, Jitter: 40 * time.Millisecond, BytesPerSec: 64 << 10})
			}
		}
	}
	e.event("%s's links: 64 KiB/s", slow.id)
	for range 4 {
		e.hold(800 * time.Millisecond)
		e.c.resetAll()
	}
	e.w.waitAcked(20, "on the flaky network")
	e.c.heal()
}

// bridge splits five nodes into two pairs joined only through a fifth.
func bridge(e *env) {
	p := e.shuffled()
	pairs := [][2]string{{p[0], p[1]}, {p[3], p[4]}, {p[2], p[0]}, {p[2], p[1]}, {p[2], p[3]}, {p[2], p[4]}}
	e.c.connectOnly(fmt.Sprintf("bridge: {%s %s} — %s — {%s %s}", p[0], p[1], p[2], p[3], p[4]), p, pairs)
	e.hold(3 * time.Second)
	e.c.heal()
	e.hold(500 * time.Millisecond)
}

// majoritiesRing connects each of five nodes to its two neighbours on a
// ring only: every node sees a majority, no two the same one.
func majoritiesRing(e *env) {
	p := e.shuffled()
	var pairs [][2]string
	for i := range p {
		pairs = append(pairs, [2]string{p[i], p[(i+1)%len(p)]})
	}
	e.c.connectOnly("majorities ring: "+strings.Join(p, " — ")+" — "+p[0], p, pairs)
	e.hold(3 * time.Second)
	e.c.heal()
	e.hold(500 * time.Millisecond)
}

// ---- snapshots under faults ----

// laggingFollowerBlackholed cuts a follower off until the leader has
// compacted its log past it; healed, it catches up through an install.
func laggingFollowerBlackholed(e *env) {
	l := e.c.waitLeader()
	f := e.pick(e.c.followers(l))
	e.w.waitAcked(20, "before the cut")
	last := e.cutOff(f)
	e.lagPast(last, 512)
	e.reconnect(f)
	e.waitInstalled(f, last)
}

// behindOnSnapshot cuts a follower off, makes the state a few MiB and
// compacts the leader's log past the follower, then heals with the
// follower's download from the leader slowed to rate: it returns the
// follower, the leader and the follower's last index before the cut.
func (e *env) behindOnSnapshot(rate int64) (f, l *node, last uint64) {
	e.t.Helper()
	l = e.c.waitLeader()
	f = e.pick(e.c.followers(l))
	e.w.waitAcked(20, "before the cut")
	last = e.cutOff(f)
	e.w.fill(1200, 2048, 24)
	e.lagPast(last, 2048)
	e.reconnect(f)
	// Snapshot files flow leader → follower on connections the follower
	// dials: the proxy's down direction.
	for _, o := range e.c.members() {
		if o != f {
			e.c.proxy(f.id, o.id).Set(Down, Shape{BytesPerSec: rate})
		}
	}
	e.event("%s's downloads limited to %d KiB/s", f.id, rate>>10)
	e.waitFor(30*time.Second, f.id+" downloading", func() (bool, string) {
		s, err := f.status()
		if err != nil {
			return false, err.Error()
		}
		p := s.Snapshot.Progress
		// Well into the download: some files complete, some not.
		return s.Snapshot.State == "DOWNLOADING" && p.BytesDone > p.BytesTotal/4, fmt.Sprintf("%s %d/%d bytes", s.Snapshot.State, p.BytesDone, p.BytesTotal)
	})
	s := f.mustStatus()
	e.event("%s is downloading snapshot: %d/%d files, %d/%d bytes", f.id, s.Snapshot.Progress.FilesDone, s.Snapshot.Progress.FilesTotal,
		s.Snapshot.Progress.BytesDone, s.Snapshot.Progress.BytesTotal)
	return f, e.c.waitLeader(), last
}

func (e *env) unlimitDownloads(f *node) {
	for _, o := range e.c.nodes {
		if o != f {
			e.c.proxy(f.id, o.id).Set(Down, Shape{})
		}
	}
	e.event("%s's downloads unlimited", f.id)
}

// kill9FollowerMidDownload kills a follower while it downloads a
// snapshot and restarts it: it resumes, and never loads a partial
// snapshot.
func kill9FollowerMidDownload(e *env) {
	f, _, last := e.behindOnSnapshot(512 << 10)
	f.kill()
	temp := filepath.Join(f.dir, "snap", "temp")
	if _, err := os.Stat(temp); err == nil {
		e.event("%s left %s for the next download to resume", f.id, temp)
	}
	gen := f.generation() + 1
	f.start(false)
	e.hold(500 * time.Millisecond)
	e.unlimitDownloads(f)
	e.waitInstalled(f, last)
	if m := regexp.MustCompile(`msg="snapshot: resuming download".*`).FindString(f.logOfRun(gen)); m != "" {
		e.event("%s resumed: %s", f.id, m)
	} else {
		e.event("%s fetched the snapshot afresh (the leader had a newer one)", f.id)
	}
}

// leaderChangeMidTransfer kills the leader while a follower downloads a
// snapshot from it: the follower installs from the new leader.
func leaderChangeMidTransfer(e *env) {
	f, l, last := e.behindOnSnapshot(512 << 10)
	l.kill()
	nl := e.c.waitLeader(e.c.followers(l)...)
	e.event("new leader %s", nl.id)
	e.hold(300 * time.Millisecond)
	e.unlimitDownloads(f)
	e.waitInstalled(f, last)
	l.start(false)
}

// corruptSnapshotOnFollower flips a byte in a data file of a stopped
// follower's newest snapshot and lets the leader move past it: the
// corruption must be detected, the file never loaded, and the snapshot
// fetched again.
func corruptSnapshotOnFollower(e *env) {
	l := e.c.waitLeader()
	f := e.pick(e.c.followers(l))
	e.w.fill(600, 2048, 24)
	// An automatic snapshot (--snapshot-log-entries) may be under way:
	// the node then answers 409 busy, and we ask again.
	var body string
	e.waitFor(30*time.Second, "a snapshot on "+f.id, func() (bool, string) {
		code, b, err := f.admin("/v1/admin/snapshot", nil, nil)
		switch {
		case err == nil && code == 200:
			body = b
			return true, ""
		case err == nil && code == 409:
			return false, b
		}
		e.t.Fatalf("faults: snapshot on %s: %d %s %v", f.id, code, b, err)
		return false, ""
	})
	e.event("%s saved a snapshot: %s", f.id, body)
	last := f.mustStatus().LastLogIndex + margin
	f.kill()
	snap := f.newestSnapshot()
	if snap == "" {
		e.t.Fatalf("faults: %s has no snapshot", f.id)
	}
	victim := largestFile(filepath.Join(snap, "db"))
	flipByte(e, victim)
	e.laggard = []*node{f}
	e.lagPast(last, 2048)
	e.laggard = nil
	gen := f.generation() + 1
	f.launch(true)
	// The damaged snapshot must not be loaded: the node must notice the
	// checksum mismatch and fetch a snapshot from the leader instead.
	idx := strings.TrimLeft(strings.TrimPrefix(filepath.Base(snap), "snapshot_"), "0")
	loadedRE := regexp.MustCompile(`(?m)msg="(loaded snapshot|snapshot loaded)".* index=` + idx + `( |$)`)
	loaded := func() bool { return loadedRE.MatchString(f.logOfRun(gen)) }
	e.expectExits = true
	e.waitFor(60*time.Second, fmt.Sprintf("%s to install a snapshot past %d, or to stop", f.id, last), func() (bool, string) {
		if !f.running() {
			return true, ""
		}
		s, err := f.status()
		if err != nil {
			return false, err.Error()
		}
		return s.Snapshot.LastIncludedIndex > last && s.AppliedIndex > last, fmt.Sprintf("snapshot %d, %s", s.Snapshot.LastIncludedIndex, s.Snapshot.State)
	})
	e.expectExits = false
	switch {
	case loaded():
		why := ""
		if !f.running() {
			log := f.logOfRun(gen)
			if i := strings.Index(log, "\npanic: "); i >= 0 {
				why = "; then it crashed: " + strings.SplitN(log[i+1:], "\n", 2)[0]
			}
		}
		e.violation("corrupt-snapshot-loaded", "%s loaded its snapshot %s at startup although %s fails the SHA-256 in its meta%s",
			f.id, idx, filepath.Base(victim), why)
		e.t.FailNow()
	case !f.running():
		e.t.Fatalf("faults: %s did not load its damaged snapshot %s, but stopped instead of fetching a good one from the leader: %s",
			f.id, idx, lastLine(f.logOfRun(gen)))
	}
	e.waitInstalled(f, last)
}

// logOfRun returns the log of n's run gen.
func (n *node) logOfRun(gen int) string {
	b, _ := os.ReadFile(filepath.Join(n.c.dir, fmt.Sprintf("%s.%d.log", n.id, gen)))
	return string(b)
}

func largestFile(dir string) string {
	entries, _ := os.ReadDir(dir)
	best, size := "", int64(-1)
	for _, de := range entries {
		fi, err := de.Info()
		if err == nil && fi.Mode().IsRegular() && fi.Size() > size {
			best, size = filepath.Join(dir, de.Name()), fi.Size()
		}
	}
	return best
}

// flipByte inverts one byte in the middle of path.
func flipByte(e *env, path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	off := fi.Size() / 2
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		e.t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		e.t.Fatal(err)
	}
	e.event("flipped the byte at offset %d of %s (%d bytes)", off, path, fi.Size())
}

// ---- disk faults ----

// tornLogTail tears the tail of a stopped node's log as a crash in the
// middle of a write does: a partial frame after the last entry (twice on
// a follower, once on the leader), then a follower's last frame cut
// short. Each node restarts, truncates the tail and catches up.
func tornLogTail(e *env) {
	tear := func(n *node, how string) {
		e.w.waitAcked(30, "before the tear")
		n.kill()
		seg := n.inprogressSegment()
		if seg == "" {
			e.t.Fatalf("faults: %s has no in-progress log segment", n.id)
		}
		b, err := os.ReadFile(seg)
		if err != nil {
			e.t.Fatal(err)
		}
		end := framesEnd(b)
		f, err := os.OpenFile(seg, os.O_RDWR, 0)
		if err != nil {
			e.t.Fatal(err)
		}
		switch how {
		case "partial frame":
			// A frame header announcing 4000 bytes, and only 100 of them,
			// right after the last frame (in its preallocated zeros).
			frame := binary.LittleEndian.AppendUint32(nil, 4000)
			frame = binary.LittleEndian.AppendUint32(frame, 0xdeadbeef)
			junk := make([]byte, 100)
			_, _ = rand.Read(junk)
			_, err = f.WriteAt(append(frame, junk...), end)
		case "cut frame":
			// The last frame's last 3 bytes never reached the disk.
			_, err = f.WriteAt(make([]byte, 3), end-3)
		}
		f.Close()
		if err != nil {
			e.t.Fatal(err)
		}
		e.event("tore %s's log tail (%s) in %s (frames end at %d of %d bytes)", n.id, how, filepath.Base(seg), end, len(b))
		gen := n.generation()
		n.start(false)
		e.c.waitCaughtUp(20*time.Second, n)
		if !strings.Contains(n.logOfRun(gen+1), "truncating torn tail") {
			e.t.Errorf("faults: %s restarted without reporting a torn tail", n.id)
		}
	}
	l := e.c.waitLeader()
	f := e.pick(e.c.followers(l))
	tear(f, "partial frame")
	tear(e.c.waitLeader(), "partial frame")
	l = e.c.waitLeader()
	// Cutting the last frame loses an entry this follower may have
	// acknowledged: safe while the other two keep theirs.
	tear(e.pick(e.c.followers(l)), "cut frame")
}

// framesEnd returns where the frames of segment file b end: at its end, or
// where the preallocated zeros after them begin (a frame is a 4-byte
// little-endian payload length, a 4-byte checksum and the payload; see
// storage/segment).
func framesEnd(b []byte) int64 {
	off := 0
	for off+8 <= len(b) {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n == 0 || off+8+n > len(b) {
			break
		}
		off += 8 + n
	}
	return int64(off)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func (n *node) generation() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.gen
}

// voteFileRemoved removes the term-and-vote file of a stopped node, again
// and again, leaders included: the node must not forget a term it has
// seen (its term may not go back), and no term may get two leaders.
func voteFileRemoved(e *env) {
	for range 4 {
		n := e.pick(e.c.running())
		e.w.waitAcked(20, "before the kill")
		before := n.mustStatus().Term
		n.kill()
		meta := filepath.Join(n.dir, "raft", "raft_meta")
		saved, err := os.ReadFile(meta)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := os.Remove(meta); err != nil {
			e.t.Fatal(err)
		}
		e.event("removed %s's raft/raft_meta (its term was %d)", n.id, before)
		n.launch(true)
		// Read the term as soon as the node answers, before a leader's
		// heartbeat can teach it the current one. Refusing to start is
		// safe too: then an operator restores the file.
		var got *status
		e.expectExits = true
		e.waitFor(startTimeout, n.id+" serving or refusing to start", func() (bool, string) {
			if !n.running() {
				return true, ""
			}
			s, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			got = s
			return true, ""
		})
		e.expectExits = false
		if got == nil {
			e.event("%s refused to start without raft_meta: %s", n.id, lastLine(n.logOfRun(n.generation())))
			if err := os.WriteFile(meta, saved, 0o644); err != nil {
				e.t.Fatal(err)
			}
			e.event("restored %s's raft_meta", n.id)
			n.start(true)
			continue
		}
		if got.Term < before {
			e.violation("term-regressed", "%s restarted without raft_meta at term %d; it had seen term %d (its log holds entries up to index %d)",
				n.id, got.Term, before, got.LastLogIndex)
		}
		e.c.waitLeader()
	}
}

// diskFullLeader fills the leader's disk while clients write; then frees
// it. The node may stop, but must come back without damage.
func diskFullLeader(e *env) {
	e.expectExits = true
	l := e.c.waitLeader()
	e.w.waitAcked(30, "before filling the disk")
	filler := l.fillDisk(512 << 10)
	e.pressure(l, 4096, func() (bool, string) {
		if !l.running() {
			return true, ""
		}
		s, err := l.status()
		if err == nil && !s.isLeader() {
			return true, ""
		}
		return false, fmt.Sprintf("%s still leads with %d KiB free", l.id, l.diskFree()>>10)
	})
	e.event("%s's disk is full: running %v", l.id, l.running())
	nl := e.c.waitLeader(others(e.c.running(), l)...)
	e.event("new leader %s", nl.id)
	e.w.waitAcked(30, "with the old leader's disk full")
	if err := os.Remove(filler); err != nil {
		e.t.Fatal(err)
	}
	e.event("freed %s's disk", l.id)
	if !l.running() {
		l.start(false)
	}
	e.c.waitCaughtUp(30*time.Second, l)
}

// diskFullInstallingFollower fills the disk of a follower that needs a
// snapshot, so that the download fails for want of space; then frees it.
func diskFullInstallingFollower(e *env) {
	e.expectExits = true
	l := e.c.waitLeader()
	f := e.pick(e.c.followers(l))
	e.w.waitAcked(20, "before the cut")
	last := e.cutOff(f)
	e.w.fill(1200, 2048, 24)
	e.lagPast(last, 2048)
	filler := f.fillDisk(1 << 20)
	e.reconnect(f)
	e.waitFor(30*time.Second, f.id+" running out of space", func() (bool, string) {
		if !f.running() {
			return true, ""
		}
		if strings.Contains(f.logs(), "no space left on device") {
			return true, ""
		}
		s, _ := f.status()
		if s != nil {
			return false, fmt.Sprintf("%s %d/%d bytes, %d KiB free", s.Snapshot.State, s.Snapshot.Progress.BytesDone, s.Snapshot.Progress.BytesTotal, f.diskFree()>>10)
		}
		return false, "no status"
	})
	e.event("%s ran out of space (running %v)", f.id, f.running())
	e.hold(500 * time.Millisecond)
	if err := os.Remove(filler); err != nil {
		e.t.Fatal(err)
	}
	e.event("freed %s's disk", f.id)
	if !f.running() {
		f.start(false)
	}
	e.waitInstalled(f, last)
}

// pressure writes large values through n as fast as it takes them until
// cond holds (at most 30s), and records them in the ledger.
func (e *env) pressure(n *node, size int, cond func() (bool, string)) {
	e.t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			value := strings.Repeat(fmt.Sprintf("%x", g), size)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("pressure-%s-%d-%d", n.id, g, i)
				code, b, _, err := do(context.Background(), e.w.hc, "PUT", n.url(kvPath(key), nil), []byte(value))
				switch {
				case err == nil && code == 200:
					e.w.ledger(key, value, true)
				case err != nil && refused(err), err == nil && (notProposed(code, b) || code == 307):
					select { // pacing
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				default:
					e.w.ledger(key, value, false)
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	e.waitFor(30*time.Second, "the disk to fill", cond)
}

// ---- membership ----

// addNodeUnderLoad adds a fourth node while clients write; the leader has
// compacted its log, so the new node joins by installing a snapshot.
func addNodeUnderLoad(e *env) {
	e.lagPast(1, 512)
	n4 := e.c.node("n4")
	n4.start(true)
	e.addPeer(n4)
	e.c.setMembers(ids(e.c.nodes)...)
	e.waitInstalled(n4, 0)
	e.w.waitAcked(30, "with four members")
}

func (e *env) addPeer(n *node) {
	e.t.Helper()
	e.event("add %s", n.id)
	code, body, err := e.c.waitLeader().admin("/v1/admin/peers", nil, map[string]any{"add": map[string]string{"id": n.id, "addr": n.raftAddr}})
	if err != nil || code != 200 {
		e.t.Fatalf("faults: adding %s: %d %s %v", n.id, code, body, err)
	}
	e.event("added %s: %s", n.id, oneLine(body))
}

func (e *env) removePeer(n *node) {
	e.t.Helper()
	e.event("remove %s", n.id)
	var code int
	var body string
	e.waitFor(30*time.Second, "removing "+n.id, func() (bool, string) {
		var err error
		code, body, err = e.c.waitLeader(e.c.reachable(true)...).admin("/v1/admin/peers", nil, map[string]any{"remove": n.id})
		if err != nil {
			return false, err.Error()
		}
		if code == 409 || code == 503 {
			return false, fmt.Sprintf("%d %s", code, body)
		}
		return true, ""
	})
	if code != 200 {
		e.t.Fatalf("faults: removing %s: %d %s", n.id, code, body)
	}
	e.event("removed %s: %s", n.id, oneLine(body))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// removeLeaderUnderLoad removes the leader from the configuration while
// clients write; the rest elect a new one.
func removeLeaderUnderLoad(e *env) {
	l := e.c.waitLeader()
	e.w.waitAcked(30, "before the removal")
	rest := others(e.c.members(), l)
	e.removePeer(l)
	e.c.setMembers(ids(rest)...)
	nl := e.c.waitLeader(rest...)
	e.event("new leader %s", nl.id)
	e.w.waitAcked(30, "without the old leader")
	l.stop()
	for _, n := range rest {
		if s := n.mustStatus(); len(s.Peers) != len(rest) || s.isVoter(l.id) {
			e.t.Errorf("faults: %s's configuration is %v, want %v", n.id, s.Peers, ids(rest))
		}
	}
}

// replaceMemberWiped removes a follower, wipes its data dir and adds it
// back empty under the same id: it catches up through a snapshot.
func replaceMemberWiped(e *env) {
	e.w.fill(600, 512, 16)
	l := e.c.waitLeader()
	f := e.pick(e.c.followers(l))
	all := ids(e.c.members())
	e.removePeer(f)
	e.c.setMembers(ids(others(e.c.members(), f))...)
	f.kill()
	entries, _ := os.ReadDir(f.dir)
	for _, de := range entries {
		if err := os.RemoveAll(filepath.Join(f.dir, de.Name())); err != nil {
			e.t.Fatal(err)
		}
	}
	e.event("wiped %s's data dir", f.id)
	e.w.waitAcked(30, "with two members")
	f.start(true)
	e.addPeer(f)
	e.c.setMembers(all...)
	e.c.waitCaughtUp(30*time.Second, f)
}

// leaderTransfers moves leadership to a random other voter ten times
// while clients write.
func leaderTransfers(e *env) {
	ok := 0
	for range 10 {
		l := e.c.waitLeader()
		to := e.pick(e.c.followers(l))
		code, body, err := l.admin("/v1/admin/transfer-leader", url.Values{"to": {to.id}}, nil)
		if err == nil && code == 200 {
			ok++
			e.event("transferred leadership %s → %s", l.id, to.id)
		} else {
			e.event("transfer %s → %s failed: %d %s %v", l.id, to.id, code, oneLine(body), err)
		}
		e.w.waitAcked(15, "after the transfer")
	}
	if ok < 5 {
		e.t.Errorf("faults: only %d of 10 leadership transfers succeeded", ok)
	}
}
