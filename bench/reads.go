package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/graft-raft/graft"
	"github.com/hashicorp/raft"
)

// The reads workload: closed-loop clients doing linearizable reads on the
// leader, each a leadership confirmation followed by a read of the state
// machine's counter.
//
//   - graft: leader.ReadIndex(ctx), which returns once the leader's state
//     machine has applied the confirmed read index, then the counter.
//   - graft-lease: the same on a group with Options.LeaseReads, where the
//     leader skips the heartbeat round while its lease holds.
//   - hashicorp (and hashicorp-cached, the same for reads):
//     leader.VerifyLeader().Error(), then the counter. VerifyLeader
//     confirms leadership with a heartbeat round but does not wait for the
//     FSM to apply anything.

var readsOpts struct {
	graftModes string
	preload    int
	writeRate  float64
}

func init() {
	registerWorkload("reads", runReads, func(fs *flag.FlagSet) {
		fs.StringVar(&readsOpts.graftModes, "reads-graft", "readindex,lease",
			"reads workload: graft read modes run when -systems names graft: readindex (row graft), lease (row graft-lease, Options.LeaseReads)")
		fs.IntVar(&readsOpts.preload, "reads-preload", 500, "reads workload: writes applied before each run, so that the log is not empty")
		fs.Float64Var(&readsOpts.writeRate, "reads-write-rate", 0, "reads workload: background writes per second on the leader during each run (0: none)")
	})
}

// readTarget makes a read look like an apply to drive, so that reads are
// measured with exactly the writes workload's clients, window and
// accounting.
type readTarget struct {
	cluster
	read func() error
}

func (t readTarget) apply([]byte) error { return t.read() }

// readsSystems expands -systems into the reads workload's rows.
func readsSystems(cfg config) ([]string, error) {
	var out []string
	for _, s := range cfg.systems {
		switch s {
		case "graft":
			for _, m := range strings.Split(readsOpts.graftModes, ",") {
				switch strings.TrimSpace(m) {
				case "readindex":
					out = append(out, "graft")
				case "lease":
					out = append(out, "graft-lease")
				default:
					return nil, fmt.Errorf("-reads-graft: unknown mode %q (known: readindex, lease)", m)
				}
			}
		case "hashicorp", "hashicorp-cached":
			out = append(out, s)
		default:
			return nil, fmt.Errorf("reads: system %q has no read path here (reads runs graft, hashicorp, hashicorp-cached)", s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("reads: no system to run")
	}
	return out, nil
}

// readsRun is one run's result with what the reads workload adds.
type readsRun struct {
	*result
	stale    uint64 // reads that missed a write acknowledged before they started
	bgWrites uint64 // background writes acknowledged during the run
	bgErrs   uint64
	// leaderKept: the node read from still led at the end of the run (if
	// not, reads after it lost leadership failed: errors).
	leaderKept bool
}

func runReads(cfg config) error {
	systems, err := readsSystems(cfg)
	if err != nil {
		return err
	}
	profiling := cfg.cpuProfile != "" || cfg.memProfile != "" || cfg.mutexProfile != ""
	if profiling && len(systems) != 1 {
		return fmt.Errorf("reads: profiling needs one row, not %s (use -reads-graft readindex or lease)", strings.Join(systems, ", "))
	}
	if readsOpts.preload < 0 || readsOpts.writeRate < 0 {
		return errors.New("-reads-preload and -reads-write-rate must not be negative")
	}
	start := time.Now()
	m := machineInfo(cfg.dir)
	logf("machine: %s", m.summary())
	var runs []*readsRun
	var retries []string
	for _, clients := range cfg.clients {
		rs, err := interleaved(systems, cfg.runs, fmt.Sprintf("%d clients", clients), func(sys string) (*readsRun, error) {
			return readsOne(cfg, sys, clients)
		}, func(sys string, i int, r *readsRun) {
			r.run = i
			runs = append(runs, r)
			logf("%-16s c=%-3d run %d: %8.0f reads/s  p50 %s µs  p99 %s µs  p99.9 %s µs  cpu %s ms/1k reads  errors %d  stale %d  bg writes %d  leader kept %v  pressure cpu %s io %s",
				sys, clients, i, r.opsPerSec(), fmtUs(float64(r.hist.quantile(0.5))), fmtUs(float64(r.hist.quantile(0.99))),
				fmtUs(float64(r.hist.quantile(0.999))), fmtCPUms(r.cpuPer1k()), r.errs, r.stale, r.bgWrites, r.leaderKept, fmtPct(r.cpuPressure), fmtPct(r.ioPressure))
		})
		retries = append(retries, rs...)
		if err != nil {
			return fmt.Errorf("reads: %w", err)
		}
	}
	m.loadAfter = loadAvg()
	m.pressureAfter = cpuPressureAvg60()
	md := readsMarkdown(cfg, systems, m, start, time.Now(), runs, retries)
	return writeWorkloadReport(cfg, start, md)
}

// readsOne starts a fresh cluster of sys, preloads it, and drives reads.
func readsOne(cfg config, sys string, clients int) (r *readsRun, err error) {
	dir, err := os.MkdirTemp(cfg.dir, "graft-bench-reads-"+sys+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	var c cluster
	var confirm func() error // leadership confirmation, on the leader
	var counter func() uint64
	var isLeader func() bool
	switch sys {
	case "graft", "graft-lease":
		lease := sys == "graft-lease"
		gc, _, err := startGraftWith(dir, cfg.graft, func(o *graft.Options) { o.LeaseReads = lease }, false)
		if err != nil {
			return nil, setupError{err}
		}
		c = gc
		leader := gc.leader
		confirm = func() error {
			_, err := leader.ReadIndex(context.Background())
			return err
		}
		counter = gc.lfsm.n.Load
		isLeader = leader.IsLeader
	default:
		sc, err := starters[sys](cfg, dir)
		if err != nil {
			return nil, setupError{err}
		}
		c = sc
		hc, ok := sc.(*hcCluster)
		if !ok {
			sc.close()
			return nil, fmt.Errorf("%s does not start a hashicorp/raft cluster", sys)
		}
		leader := hc.leader
		confirm = func() error { return leader.raft.VerifyLeader().Error() }
		counter = leader.fsm.n.Load
		isLeader = func() bool { return leader.raft.State() == raft.Leader }
	}
	defer func() {
		if cerr := c.close(); cerr != nil && err == nil {
			err = fmt.Errorf("shutdown: %w", cerr)
		}
	}()

	size := cfg.sizes[0]
	if err := readsPreload(c, readsOpts.preload, size); err != nil {
		return nil, setupError{fmt.Errorf("preload: %w", err)}
	}

	// acked is a lower bound of the counter that every read must observe:
	// everything applied before the run, plus the background writes
	// acknowledged so far.
	var acked atomic.Uint64
	acked.Store(counter())
	var stale atomic.Uint64
	target := readTarget{cluster: c, read: func() error {
		floor := acked.Load()
		if err := confirm(); err != nil {
			return err
		}
		if counter() < floor {
			stale.Add(1)
		}
		return nil
	}}

	var bgWrites, bgErrs atomic.Uint64
	stopWriter := make(chan struct{})
	var writer sync.WaitGroup
	if readsOpts.writeRate > 0 {
		data := make([]byte, size)
		rand.Read(data)
		tick := time.NewTicker(time.Duration(float64(time.Second) / readsOpts.writeRate))
		writer.Go(func() {
			defer tick.Stop()
			for {
				select {
				case <-stopWriter:
					return
				case <-tick.C:
				}
				if err := c.apply(data); err != nil {
					bgErrs.Add(1)
					continue
				}
				bgWrites.Add(1)
				acked.Add(1)
			}
		})
	}

	h, finish, err := profileHooks(cfg)
	if err != nil {
		close(stopWriter)
		writer.Wait()
		return nil, err
	}
	res := drive(target, clients, 0, cfg.warmup, cfg.duration, h)
	close(stopWriter)
	writer.Wait()
	if err := finish(); err != nil {
		return nil, err
	}
	res.system = sys
	r = &readsRun{result: res, stale: stale.Load(), bgWrites: bgWrites.Load(), bgErrs: bgErrs.Load(), leaderKept: isLeader()}
	runtime.GC() // leave no garbage of this run to the next
	return r, nil
}

// setupError is a failure to start a cluster or preload it (on this
// shared machine, mostly a leader that lost its lease under CPU
// starvation): the run starts over with a fresh cluster, at most twice.
type setupError struct{ err error }

func (e setupError) Error() string { return e.err.Error() }
func (e setupError) Unwrap() error { return e.err }

// readsPreload applies n writes of size bytes with 16 concurrent clients.
func readsPreload(c cluster, n, size int) error {
	if n == 0 {
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for w := range errs {
		data := make([]byte, size)
		rand.Read(data)
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := c.apply(data); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeWorkloadReport prints md and writes it where cfg.out says:
// results/<date>-<workload>.md for auto, nowhere for none.
func writeWorkloadReport(cfg config, start time.Time, md string) error {
	fmt.Print(md)
	out := cfg.out
	if out == "auto" {
		out = filepath.Join("results", start.Format("2006-01-02")+"-"+cfg.workload+".md")
	}
	if out == "none" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
		return err
	}
	logf("report written to %s", out)
	return nil
}

// workloadMachineSection is the report's machine section, as the writes
// report has it.
func workloadMachineSection(b *strings.Builder, cfg config, m machine) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Machine\n\n")
	w("- graft: %s\n", m.graft)
	w("- CPUs: %d (GOMAXPROCS %d), %s\n", m.nproc, m.gomaxprocs, m.cpu)
	w("- Go: %s; kernel %s\n", m.goVersion, m.kernel)
	w("- Disk under `%s`: %s\n", cfg.dir, m.disk)
	w("- Load average (1, 5, 15 min): %s at start, %s at end; CPU pressure (some, avg60) %s at start, %s at end. The machine is shared: compare the ratios, taken from runs side by side, more than absolute numbers.\n\n",
		m.loadBefore, m.loadAfter, m.pressureBefore, m.pressureAfter)
}

func readsMarkdown(cfg config, systems []string, m machine, start, end time.Time, runs []*readsRun, retries []string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# reads: %s, %s\n\n", strings.Join(systems, " vs "), start.Format("2006-01-02 15:04 MST"))
	w("Command: `go run . %s` (in bench/), %s in all.\n\n", strings.Join(os.Args[1:], " "), end.Sub(start).Round(time.Second))
	workloadMachineSection(&b, cfg, m)

	w("## Setup\n\n")
	w("Each system runs as a 3-node cluster in this one process, on loopback, with every log write fsync'd, set up as in the writes workload. ")
	w("Each run is a fresh cluster in a fresh directory, preloaded with %d writes of %d B (16 concurrent clients) so that the log is not empty; ", readsOpts.preload, cfg.sizes[0])
	if readsOpts.writeRate > 0 {
		w("during the run a background writer applies one %d B write every %v on the leader (%.0f/s, not counted as reads). ", cfg.sizes[0], time.Duration(float64(time.Second)/readsOpts.writeRate), readsOpts.writeRate)
	} else {
		w("there are no writes during the run. ")
	}
	w("Closed-loop clients (as many as the row says) do linearizable reads on the leader, each waiting for its read before the next: %v warm-up, then %v measured (the writes workload's driver, with a read in place of an apply). ", cfg.warmup, cfg.duration)
	w("Runs alternate (the systems in order, then in reverse order, …), %d of each system per row. Latency is call-to-return of one read, from a log-linear histogram (±0.4%%). CPU is the whole process's user+system time (all three nodes and the clients) per 1,000 reads.\n\n", cfg.runs)
	w("A read is a leadership confirmation followed by a load of the leader's state machine counter:\n\n")
	if slices.Contains(systems, "graft") {
		w("- **graft**: `leader.ReadIndex(ctx)`: the leader takes its commit index, confirms with a round of heartbeats that a quorum still follows it (concurrent reads share rounds), and returns once its own state machine has applied that index; then the counter. `DefaultOptions()` otherwise, wired as in the writes workload.\n")
	}
	if slices.Contains(systems, "graft-lease") {
		w("- **graft-lease**: the same on a group with `Options.LeaseReads = true`: while the leader's lease holds (an election timeout less 10%% after the heartbeats a quorum last answered were sent), ReadIndex skips the heartbeat round. This assumes the peers' clocks run at rates within 10%% of each other; it is a different guarantee from ReadIndex and is reported as its own row, never in place of it.\n")
	}
	if slices.Contains(systems, "hashicorp") || slices.Contains(systems, "hashicorp-cached") {
		w("- **hashicorp**: `leader.VerifyLeader().Error()` (a heartbeat round to confirm leadership; concurrent calls share the heartbeats they trigger), then the FSM's counter: what hashicorp/raft users do for a linearizable read. VerifyLeader does **not** wait for the FSM to apply anything: the read is linearizable here because a hashicorp Apply returns only after the leader's FSM applied the entry, but a freshly elected leader can pass VerifyLeader before its FSM has applied what earlier leaders committed (applications add a `Barrier()` after winning an election for that). graft's ReadIndex does that wait itself, on every read.\n")
	}
	if slices.Contains(systems, "hashicorp-cached") {
		w("- **hashicorp-cached**: the same with a %d-entry `raft.LogCache`; the read path does not touch the log, so it should not differ from hashicorp.\n", cfg.hcCache)
	}
	w("\nThe harness checks every read: the counter it loads must be at least the number of writes acknowledged before the read started (preload, plus background writes); a read that sees less is counted as stale. The clients read on the leader that acknowledged those writes, and both systems acknowledge a write only once that leader has applied it, so this check guards the harness, not the read path: graft's linearizability of reads is tested by its own suite (porcupine-checked `TestReadIndexLinearizable`, and the reads in every fault scenario of faults/).\n\n")

	w("## Results\n\n")
	w("Median over runs, (min–max) across them.\n\n")
	w("| clients | system | reads/s | p50 µs | p99 µs | p99.9 µs | CPU ms / 1k reads | errors | stale |\n")
	w("| ---: | --- | --- | --- | --- | --- | --- | ---: | ---: |\n")
	pick := func(sys string, clients int) []*result {
		var out []*result
		for _, r := range runs {
			if r.system == sys && r.clients == clients {
				out = append(out, r.result)
			}
		}
		return out
	}
	var mine, peers []string
	for _, s := range systems {
		if strings.HasPrefix(s, "graft") {
			mine = append(mine, s)
		} else {
			peers = append(peers, s)
		}
	}
	for _, clients := range cfg.clients {
		for _, sys := range systems {
			s := summarize(pick(sys, clients))
			var stale uint64
			for _, r := range runs {
				if r.system == sys && r.clients == clients {
					stale += r.stale
				}
			}
			w("| %d | %s | %s | %s | %s | %s | %s | %d | %d |\n", clients, sys,
				spreadOf(s.ops).format(fmtOps), spreadOf(s.p50).format(fmtUs), spreadOf(s.p99).format(fmtUs),
				spreadOf(s.p999).format(fmtUs), spreadOf(s.cpu).format(fmtCPUms), s.errs, stale)
		}
		for _, g := range mine {
			for _, peer := range peers {
				gr, hr := pick(g, clients), pick(peer, clients)
				ratio := func(f func(*result) float64) string { return spreadOf(pairedRatios(gr, hr, f)).format(fmtRatio) }
				q := func(p float64) func(*result) float64 {
					return func(r *result) float64 { return float64(r.hist.quantile(p)) }
				}
				w("| %d | **%s / %s** | %s | %s | %s | %s | %s | | |\n", clients, g, peer,
					ratio((*result).opsPerSec), ratio(q(0.5)), ratio(q(0.99)), ratio(q(0.999)), ratio((*result).cpuPer1k))
			}
		}
	}
	if len(retries) > 0 {
		w("\nRuns started over because the cluster could not be set up (start or preload failed):\n\n")
		for _, r := range retries {
			w("- %s\n", r)
		}
	}
	if len(mine) > 0 && len(peers) > 0 {
		w("\nRatios are per pair of runs of the same number, taken side by side (run i of the graft row over run i of the peer), median (min–max): above 1 is more throughput for graft, below 1 is lower latency or CPU for graft.\n")
	}

	w("\n## Every run\n\n")
	w("CPU and I/O pressure: share of the window in which some task on the machine (this process included) waited for a CPU or for I/O (`/proc/pressure`, \"some\"). Background writes: acknowledged during the whole run (warm-up included). Leader kept: whether the node the clients read from still led at the end of the run; if not, the reads after it lost leadership failed (errors), as writes do in the writes workload, which does not follow a new leader either.\n\n")
	w("| clients | run | system | reads/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU ms / 1k reads | errors | stale | background writes (errors) | leader kept | CPU pressure | I/O pressure |\n")
	w("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
	for _, r := range runs {
		kept := "yes"
		if !r.leaderKept {
			kept = "**no**"
		}
		w("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d (%d) | %s | %s | %s |\n", r.clients, r.run, r.system,
			fmtOps(r.opsPerSec()), fmtUs(float64(r.hist.quantile(0.5))), fmtUs(float64(r.hist.quantile(0.99))),
			fmtUs(float64(r.hist.quantile(0.999))), fmtUs(float64(r.hist.max)), fmtCPUms(r.cpuPer1k()), r.errs, r.stale,
			r.bgWrites, r.bgErrs, kept, fmtPct(r.cpuPressure), fmtPct(r.ioPressure))
	}
	return b.String()
}

// fmtUs formats nanoseconds as microseconds with three significant digits
// and no unit.
func fmtUs(ns float64) string {
	us := ns / 1e3
	switch {
	case us < 1:
		return fmt.Sprintf("%.3f", us)
	case us < 10:
		return fmt.Sprintf("%.2f", us)
	case us < 100:
		return fmt.Sprintf("%.1f", us)
	}
	return commas(int64(us + 0.5))
}

// fmtCPUms formats CPU seconds per 1,000 operations as milliseconds (that
// is, microseconds per operation).
func fmtCPUms(s float64) string { return fmtUs(s * 1e6) }
