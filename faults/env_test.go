//go:build linux

package faults

// A scenario run: its seed, cluster, clients, status monitor, the fault
// events it logs, the checks at its end, and its results folder.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// scenario is one named fault scenario.
type scenario struct {
	name    string
	nodes   int    // processes prepared: n1..nN (3 if 0)
	initial int    // of which the first initial form the cluster (nodes if 0)
	tmpfs   string // mount a tmpfs of this size as each data dir ("" none)
	flags   []string
	// keys is the number of registers the clients use (16 if 0).
	keys int
	run  func(e *env)
}

// result is what one run of a scenario found, for the soak table.
type result struct {
	scenario   string
	seed       uint64
	violations []string // safety: the checks that failed
	lostWrites int
	maxUnavail time.Duration
	failed     bool // the run failed for any reason (also liveness or harness)
	skipped    bool
	ops        int
	took       time.Duration
}

// env is one run of a scenario.
type env struct {
	t     *testing.T
	sc    scenario
	seed  uint64
	rng   *rand.Rand // the fault schedule's choices
	epoch time.Time
	c     *cluster
	w     *workload
	mon   *monitor
	res   *result
	// laggard is the nodes a scenario has cut off or paused on purpose,
	// which waits for a leader leave out.
	laggard []*node
	// expectExits is set by scenarios in which a node may stop by itself
	// (a full disk); elsewhere that fails the run at once.
	expectExits bool

	mu struct {
		sync.Mutex
		events []event
	}
}

// event is one line of the fault schedule as it happened.
type event struct {
	at   time.Duration
	what string
}

// now is the time since the run began, the clock of histories and events.
func (e *env) now() int64 { return int64(time.Since(e.epoch)) }

// event logs one step of the scenario.
func (e *env) event(format string, args ...any) {
	e.t.Helper()
	ev := event{at: time.Since(e.epoch), what: fmt.Sprintf(format, args...)}
	e.mu.Lock()
	e.mu.events = append(e.mu.events, ev)
	e.mu.Unlock()
	e.t.Logf("faults: %8.3fs  %s", ev.at.Seconds(), ev.what)
}

func (e *env) events() []event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.mu.events)
}

// violation reports a broken safety property.
func (e *env) violation(kind, format string, args ...any) {
	e.t.Helper()
	msg := fmt.Sprintf(format, args...)
	e.res.violations = append(e.res.violations, kind)
	e.t.Errorf("VIOLATION [%s] %s (seed %d)", kind, msg, e.seed)
}

// phase is d scaled by -faults.scale.
func (e *env) phase(d time.Duration) time.Duration {
	return time.Duration(float64(d) * *flagScale)
}

// hold lets the scenario run for d: the sleep is the fault schedule.
func (e *env) hold(d time.Duration) {
	time.Sleep(e.phase(d))
}

// newSeed returns the seed of a run: -faults.seed or a new one.
func newSeed() uint64 {
	if *flagSeed != 0 {
		return *flagSeed
	}
	return rand.Uint64() >> 1
}

// runScenario runs sc once with seed and fills in res with what it
// found. It runs in t, which fails on any violation or error.
func runScenario(t *testing.T, sc scenario, seed uint64, res *result) {
	if testing.Short() {
		t.Skip("faults: runs graftkv processes; skipped in -short mode")
	}
	if sc.nodes == 0 {
		sc.nodes = 3
	}
	if sc.initial == 0 {
		sc.initial = sc.nodes
	}
	if sc.keys == 0 {
		sc.keys = 16
	}
	e := &env{t: t, sc: sc, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)), epoch: time.Now()}
	*res = result{scenario: sc.name, seed: seed}
	e.res = res
	t.Logf("faults: scenario %s, seed %d (again: go test ./faults -run '^Test%s$' -faults.seed=%d)", sc.name, seed, sc.name, seed)
	defer func() {
		e.res.failed = t.Failed()
		e.res.skipped = t.Skipped()
		e.res.took = time.Since(e.epoch)
		if e.w != nil {
			e.res.ops = e.w.countOps()
		}
	}()
	e.c = newCluster(e, sc.nodes, sc.initial, sc.tmpfs, sc.flags)
	// Cleanups run last first: this one (stop clients and monitor, save
	// the results) before the cluster's (processes, proxies, mounts).
	t.Cleanup(e.finish)
	e.c.startAll()
	e.c.waitLeader()
	e.mon = startMonitor(e)
	e.w = startWorkload(e, sc.keys)
	e.event("clients started")
	sc.run(e)
	e.settle()
	e.check()
}

// settle ends the faults: resumes paused nodes, heals the network,
// restarts members that are down, waits for a leader, stops the clients
// and reads every key through the leader.
func (e *env) settle() {
	e.t.Helper()
	for _, n := range e.c.nodes {
		if n.paused() {
			n.resume()
		}
	}
	e.c.heal()
	for _, n := range e.c.members() {
		if !n.running() {
			n.start(false)
		}
	}
	e.c.waitLeader()
	e.w.waitAcked(5, "after the faults")
	e.w.stop()
	e.event("clients stopped: %d operations", e.w.countOps())
	e.w.finalReads()
}

// finish stops what still runs of the clients and the monitor, and saves
// the results folder if the run failed (or -faults.keep).
func (e *env) finish() {
	if e.w != nil {
		e.w.stop()
	}
	if e.mon != nil {
		e.mon.stop()
	}
	if e.c != nil {
		e.c.killAll()
	}
	if e.t.Failed() || *flagLogs {
		for _, n := range e.c.nodes {
			files, _ := filepath.Glob(filepath.Join(e.c.dir, n.id+".*.log"))
			for _, f := range files {
				e.t.Logf("faults: ---- %s ----\n%s", filepath.Base(f), tail(f, 12<<10))
			}
		}
	}
	if e.t.Failed() || *flagKeep {
		e.saveResults()
	}
}

// saveResults leaves the run's evidence in -faults.results/<test>-<seed>/:
// the history (text and, if checked, the porcupine visualisation), the
// fault events, the status samples, and every node's data dir and logs.
func (e *env) saveResults() {
	name := strings.ReplaceAll(e.t.Name(), "/", "_")
	dir, err := filepath.Abs(filepath.Join(*flagResults, fmt.Sprintf("%s-%d", name, e.seed)))
	if err != nil {
		e.t.Log(err)
		return
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Logf("faults: cannot save results: %v", err)
		return
	}
	var ev strings.Builder
	fmt.Fprintf(&ev, "scenario %s seed %d\n", e.sc.name, e.seed)
	for _, x := range e.events() {
		fmt.Fprintf(&ev, "%9.3fs  %s\n", x.at.Seconds(), x.what)
	}
	_ = os.WriteFile(filepath.Join(dir, "events.txt"), []byte(ev.String()), 0o644)
	if e.w != nil {
		_ = os.WriteFile(filepath.Join(dir, "history.txt"), []byte(e.w.dump()), 0o644)
		if e.w.html != nil {
			_ = os.WriteFile(filepath.Join(dir, "history.html"), e.w.html, 0o644)
		}
	}
	if e.mon != nil {
		_ = os.WriteFile(filepath.Join(dir, "status.tsv"), []byte(e.mon.dump()), 0o644)
	}
	for _, n := range e.c.nodes {
		if err := copyTree(n.dir, filepath.Join(dir, "data", n.id)); err != nil {
			e.t.Logf("faults: copying %s's data dir: %v", n.id, err)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(e.c.dir, "*.log"))
	for _, f := range logs {
		_ = copyFile(f, filepath.Join(dir, "logs", filepath.Base(f)))
	}
	e.t.Logf("faults: results of seed %d saved in %s", e.seed, dir)
}

func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(to, 0o755)
		case fi.Mode().IsRegular():
			return copyFile(p, to)
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
