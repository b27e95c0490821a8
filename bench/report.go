package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type report struct {
	cfg           config
	args          []string
	start, end    time.Time
	machine       machine
	before, after *baseline
	results       []*result
	// rawFile is where the raw results were saved (relative to the
	// report), plots the PNGs drawn from them; both empty if none.
	rawFile string
	plots   []string
}

type machine struct {
	nproc, gomaxprocs int
	cpu, goVersion    string
	kernel            string
	disk              string
	loadBefore        string
	loadAfter         string
	pressureBefore    string
	pressureAfter     string
	graft             string
}

func (m machine) summary() string {
	return fmt.Sprintf("%d CPUs (%s), %s, disk %s, load %s", m.nproc, m.cpu, m.goVersion, m.disk, m.loadBefore)
}

func machineInfo(dir string) machine {
	m := machine{
		nproc:          runtime.NumCPU(),
		gomaxprocs:     runtime.GOMAXPROCS(0),
		cpu:            "unknown",
		goVersion:      runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		kernel:         strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		disk:           diskInfo(dir),
		loadBefore:     loadAvg(),
		pressureBefore: cpuPressureAvg60(),
		graft:          graftVersion(),
	}
	for _, line := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			m.cpu = strings.TrimSpace(v)
			break
		}
	}
	return m
}

// graftVersion names the graft commit the harness was built against,
// assuming it runs in bench/ of a graft checkout (as README.md says), and
// counts the uncommitted changes to graft's non-test Go files.
func graftVersion() string {
	out, err := exec.Command("git", "-C", "..", "log", "-1", "--format=%h %s").Output()
	if err != nil {
		return "unknown (not run in bench/ of a git checkout)"
	}
	v := strings.TrimSpace(string(out))
	dirty, err := exec.Command("git", "-C", "..", "status", "--porcelain", "--", "*.go", ":!*_test.go", ":!bench").Output()
	if err != nil {
		return v
	}
	if n := len(strings.Fields(strings.TrimSpace(string(dirty)))) / 2; n > 0 {
		return fmt.Sprintf("%s, plus uncommitted changes to %d non-test Go files", v, n)
	}
	return v + ", clean"
}

func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}

// cpuPressureAvg60 is the share of the last minute in which some task
// waited for a CPU.
func cpuPressureAvg60() string {
	for _, f := range strings.Fields(readFile("/proc/pressure/cpu")) {
		if v, ok := strings.CutPrefix(f, "avg60="); ok {
			return v + "%"
		}
	}
	return "unknown"
}

func loadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// diskInfo describes the filesystem holding dir: device, type, size, and
// whether the kernel thinks the device rotates.
func diskInfo(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	var dev, mnt, typ, opts string
	for _, line := range strings.Split(readFile("/proc/self/mounts"), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if (abs == f[1] || strings.HasPrefix(abs, strings.TrimSuffix(f[1], "/")+"/")) && len(f[1]) >= len(mnt) {
			dev, mnt, typ, opts = f[0], f[1], f[2], f[3]
		}
	}
	s := fmt.Sprintf("%s on %s (%s, %s)", dev, mnt, typ, opts)
	var st syscall.Statfs_t
	if syscall.Statfs(abs, &st) == nil {
		s += fmt.Sprintf(", %.0f GiB", float64(st.Blocks)*float64(st.Bsize)/(1<<30))
	}
	if rot := strings.TrimSpace(readFile("/sys/block/" + filepath.Base(dev) + "/queue/rotational")); rot != "" {
		s += map[string]string{"0": ", non-rotational", "1": ", rotational"}[rot]
	}
	if out, err := exec.Command("df", "-h", abs).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		s += "; df: " + strings.Join(strings.Fields(lines[len(lines)-1]), " ")
	}
	return s
}

// summary is one system at one configuration over its runs.
type summary struct {
	runs                []*result
	ops, p50, p99, p999 []float64
	cpu                 []float64
	errs                uint64
}

func summarize(rs []*result) summary {
	s := summary{runs: rs}
	for _, r := range rs {
		s.ops = append(s.ops, r.opsPerSec())
		s.p50 = append(s.p50, float64(r.hist.quantile(0.5)))
		s.p99 = append(s.p99, float64(r.hist.quantile(0.99)))
		s.p999 = append(s.p999, float64(r.hist.quantile(0.999)))
		s.cpu = append(s.cpu, r.cpuPer1k())
		s.errs += r.errs
	}
	return s
}

// spread is a median with the min and max of a set of runs.
type spread struct{ med, lo, hi float64 }

func spreadOf(v []float64) spread {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return spread{}
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{med, s[0], s[len(s)-1]}
}

func (s spread) format(f func(float64) string) string {
	return fmt.Sprintf("%s (%s–%s)", f(s.med), f(s.lo), f(s.hi))
}

func fmtOps(v float64) string { return commas(int64(v + 0.5)) }

func commas(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtDur(d time.Duration) string { return fmtMs(float64(d)) + " ms" }

// fmtMs formats nanoseconds as milliseconds with three significant digits
// and no unit.
func fmtMs(ns float64) string {
	ms := ns / 1e6
	switch {
	case ms < 1:
		return fmt.Sprintf("%.3f", ms)
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f", ms)
	}
	return fmt.Sprintf("%.0f", ms)
}

func fmtPct(v float64) string {
	if v < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func fmtCPU(v float64) string   { return fmt.Sprintf("%.3f", v) }
func fmtRatio(v float64) string { return fmt.Sprintf("%.2f×", v) }

func (rep *report) pick(sys string, clients, size int) []*result {
	var out []*result
	for _, r := range rep.results {
		if r.system == sys && r.clients == clients && r.size == size {
			out = append(out, r)
		}
	}
	return out
}

// pairedRatios divides each graft run's metric by the hashicorp run of the
// same number, which ran right before or after it.
func pairedRatios(g, h []*result, metric func(*result) float64) []float64 {
	var out []float64
	for _, gr := range g {
		for _, hr := range h {
			if gr.run == hr.run && metric(hr) > 0 {
				out = append(out, metric(gr)/metric(hr))
			}
		}
	}
	return out
}

func (rep *report) markdown() string {
	var b strings.Builder
	cfg := rep.cfg
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# %s: %s, %s\n\n", cfg.workload, strings.Join(cfg.systems, " vs "), rep.start.Format("2006-01-02 15:04 MST"))
	w("Command: `go run . %s` (in bench/), %s in all.\n\n", strings.Join(rep.args, " "), rep.end.Sub(rep.start).Round(time.Second))
	m := rep.machine
	w("## Machine\n\n")
	w("- graft: %s\n", m.graft)
	w("- CPUs: %d (GOMAXPROCS %d), %s\n", m.nproc, m.gomaxprocs, m.cpu)
	w("- Go: %s; kernel %s\n", m.goVersion, m.kernel)
	w("- Disk under `%s`: %s\n", cfg.dir, m.disk)
	w("- Load average (1, 5, 15 min): %s at start, %s at end; CPU pressure (some, avg60) %s at start, %s at end. The machine is shared: compare the ratios, taken from runs side by side, more than absolute numbers.\n\n",
		m.loadBefore, m.loadAfter, m.pressureBefore, m.pressureAfter)

	w("## Setup\n\n")
	w("Each system runs as a 3-node cluster in this one process, on loopback, with every log write fsync'd, applying to the same state machine (it counts applies). ")
	w("Closed-loop clients (as many as the row says) submit on the leader; each run is a fresh cluster in a fresh directory: %v warm-up, then %v measured. ", cfg.warmup, cfg.duration)
	w("Runs alternate (the systems in order, then in reverse order, …), %d of each system per configuration. Latency is submit-to-return of one apply, from a log-linear histogram (±0.4%%). CPU is the whole process's user+system time (all three nodes and the clients) per 1,000 applies.\n\n", cfg.runs)
	if slices.Contains(cfg.systems, "graft") {
		w("- **graft**: `DefaultOptions()`")
		if cfg.graft.maxInflightAppends > 0 {
			w(", MaxInflightAppends=%d", cfg.graft.maxInflightAppends)
		}
		if cfg.graft.maxAppendEntries > 0 {
			w(", MaxAppendEntries=%d", cfg.graft.maxAppendEntries)
		}
		if cfg.graft.preallocate != 0 {
			w(", segment Preallocate=%d", cfg.graft.preallocate)
		}
		w("; gRPC transport (one server and one client transport per node); storage/segment log and storage/metafile; `node.Apply(ctx, cmd)` on the leader.\n")
	}
	if slices.Contains(cfg.systems, "hashicorp") || slices.Contains(cfg.systems, "hashicorp-cached") || slices.Contains(cfg.systems, "hashicorp-wal") {
		w("- **hashicorp**: hashicorp/raft v1.7.3 with raft-boltdb/v2 v2.3.1 (v1.8.0 does not build with raft-boltdb/v2: it needs go-metrics v0.7.0, which dropped the `compat` package boltdb imports), set up as shared/PEERS.md says: `DefaultConfig()` with BatchApplyCh, MaxAppendEntries=1024, SnapshotThreshold 2^62, SnapshotInterval 1h; BoltStore as log and stable store; TCP transport (pool 3, 10 s timeout); bootstrapped on one node; a BatchingFSM; `leader.Apply(cmd, 0).Error()`.\n")
	}
	if slices.Contains(cfg.systems, "hashicorp-cached") {
		w("- **hashicorp-cached**: the same with a %d-entry `raft.LogCache` in front of the BoltStore (as Consul and Nomad run it), so that the leader replicates recent entries from memory instead of reading them back from bbolt.\n", cfg.hcCache)
	}
	if slices.Contains(cfg.systems, "hashicorp-wal") {
		w("- **hashicorp-wal**: the same with raft-wal v0.4.0 (`raftwal.Open`, its defaults: 64 MiB preallocated segments, fsync on every append) as log and stable store in place of the BoltStore.\n")
	}
	w("\n")

	if rep.before != nil {
		w("## Disk baseline\n\n")
		w("| measurement | before | after |\n| --- | --- | --- |\n")
		row := func(name string, f func(*baseline) string) {
			after := "–"
			if rep.after != nil {
				after = f(rep.after)
			}
			w("| %s | %s | %s |\n", name, f(rep.before), after)
		}
		row(fmt.Sprintf("append 256 B + fsync, p50 / p99 (%d)", rep.before.fsync256.n), func(b *baseline) string { return b.fsync256.String() })
		row("3 appenders at once (as 3 nodes), append 256 B + fsync, p50 / p99", func(b *baseline) string { return b.fsync256x3.String() })
		if rep.before.fdatasync256 != nil {
			row("append 256 B + fdatasync, p50 / p99", func(b *baseline) string { return b.fdatasync256.String() })
			row("overwrite 256 B in an allocated file + fdatasync, p50 / p99", func(b *baseline) string { return b.overwrite256.String() })
		}
		row("sequential write, 1 MiB + fsync each", func(b *baseline) string { return fmt.Sprintf("%.0f MiB/s", b.seqMiBps) })
		w("\n")
	}

	w("## Results\n\n")
	w("Median over runs, (min–max) across them.\n\n")
	w("| clients | size | system | ops/s | p50 ms | p99 ms | p99.9 ms | CPU s / 1k ops | errors |\n")
	w("| ---: | ---: | --- | --- | --- | --- | --- | --- | ---: |\n")
	var peers []string // systems graft is compared with
	if slices.Contains(cfg.systems, "graft") {
		for _, s := range cfg.systems {
			if s != "graft" {
				peers = append(peers, s)
			}
		}
	}
	var single []string
	for _, size := range cfg.sizes {
		for _, clients := range cfg.clients {
			sums := map[string]summary{}
			for _, sys := range cfg.systems {
				s := summarize(rep.pick(sys, clients, size))
				sums[sys] = s
				w("| %d | %d B | %s | %s | %s | %s | %s | %s | %d |\n", clients, size, sys,
					spreadOf(s.ops).format(fmtOps), spreadOf(s.p50).format(fmtMs), spreadOf(s.p99).format(fmtMs),
					spreadOf(s.p999).format(fmtMs), spreadOf(s.cpu).format(fmtCPU), s.errs)
			}
			for _, peer := range peers {
				g, h := sums["graft"].runs, sums[peer].runs
				ratio := func(f func(*result) float64) string { return spreadOf(pairedRatios(g, h, f)).format(fmtRatio) }
				q := func(p float64) func(*result) float64 {
					return func(r *result) float64 { return float64(r.hist.quantile(p)) }
				}
				w("| %d | %d B | **graft / %s** | %s | %s | %s | %s | %s | |\n", clients, size, peer,
					ratio((*result).opsPerSec), ratio(q(0.5)), ratio(q(0.99)), ratio(q(0.999)), ratio((*result).cpuPer1k))
			}
			if clients == 1 && rep.before != nil && rep.after != nil {
				b, a := float64(rep.before.fsync256.p50), float64(rep.after.fsync256.p50)
				for _, sys := range cfg.systems {
					p := spreadOf(sums[sys].p50)
					var own []float64
					for _, r := range sums[sys].runs {
						own = append(own, float64(r.ctr.logWriteHist.quantile(0.5)))
					}
					o := spreadOf(own).med
					single = append(single, fmt.Sprintf("- %s, 1 client × %d B: p50 commit latency %s = %.1f× the disk baseline's fsync p50 before the runs (%s), %.1f× after (%s), %.1f× its own log writes' p50 in the runs (%s)",
						sys, size, fmtDur(time.Duration(p.med)), p.med/b, fmtDur(rep.before.fsync256.p50), p.med/a, fmtDur(rep.after.fsync256.p50), p.med/o, fmtDur(time.Duration(o))))
				}
			}
		}
	}
	if len(peers) > 0 {
		w("\nRatios are per pair of runs of the same number, taken within a minute of each other (run i of graft over run i of the peer), median (min–max): above 1 is more throughput for graft, below 1 is lower latency or CPU for graft.\n")
	}
	if len(single) > 0 {
		w("\n%s\n", strings.Join(single, "\n"))
	}
	if rep.rawFile != "" {
		w("\n## Plots\n\n")
		w("Raw results (every run, with its latency histogram): [`%s`](%s). ", rep.rawFile, rep.rawFile)
		w("Throughput is the median over the runs, bars from min to max; a latency CDF merges the histograms of all runs of a system.\n")
		for _, p := range rep.plots {
			w("\n![%s](%s)\n", strings.TrimSuffix(p, ".png"), p)
		}
	}

	w("\n## Batching\n\n")
	w("Counted by wrappers around each system's log store (and graft's transport), summed over the three nodes; medians over runs. ")
	w("A graft log write is one write and one fsync; a hashicorp one is one bbolt transaction (two fdatasyncs).\n\n")
	w("A log write's time is the call's duration (write and sync); disk busy is the share of the window a node spent in log writes, averaged over the nodes.\n\n")
	w("| clients | size | system | log writes / s | entries per log write | log write p50 / p99 ms | disk busy | AppendEntries requests / s | entries per request |\n")
	w("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, size := range cfg.sizes {
		for _, clients := range cfg.clients {
			for _, sys := range cfg.systems {
				var writes, perWrite, wp50, wp99, busy, reqs, perReq []float64
				for _, r := range rep.pick(sys, clients, size) {
					c, secs := r.ctr, r.elapsed.Seconds()
					writes = append(writes, float64(c.logWrites)/secs)
					perWrite = append(perWrite, float64(c.logEntries)/max(float64(c.logWrites), 1))
					wp50 = append(wp50, float64(c.logWriteHist.quantile(0.5)))
					wp99 = append(wp99, float64(c.logWriteHist.quantile(0.99)))
					busy = append(busy, c.logWriteTime.Seconds()/secs/3)
					reqs = append(reqs, float64(c.appendRequests)/secs)
					perReq = append(perReq, float64(c.appendEntries)/max(float64(c.appendRequests), 1))
				}
				reqCells := "– | –"
				if sys == "graft" {
					reqCells = fmt.Sprintf("%s | %.1f", fmtOps(spreadOf(reqs).med), spreadOf(perReq).med)
				}
				w("| %d | %d B | %s | %s | %.1f | %s | %.0f%% | %s |\n", clients, size, sys, fmtOps(spreadOf(writes).med), spreadOf(perWrite).med,
					fmtMs(spreadOf(wp50).med)+" / "+fmtMs(spreadOf(wp99).med), 100*spreadOf(busy).med, reqCells)
			}
		}
	}

	w("\n## Every run\n\n")
	w("CPU and I/O pressure: share of the window in which some task on the machine (this process included) waited for a CPU or for I/O (`/proc/pressure`, \"some\").\n\n")
	w("| clients | size | run | system | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | CPU s / 1k ops | errors | CPU pressure | I/O pressure |\n")
	w("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rep.results {
		w("| %d | %d B | %d | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |\n", r.clients, r.size, r.run, r.system,
			fmtOps(r.opsPerSec()), fmtMs(float64(r.hist.quantile(0.5))), fmtMs(float64(r.hist.quantile(0.99))),
			fmtMs(float64(r.hist.quantile(0.999))), fmtMs(float64(r.hist.max)), fmtCPU(r.cpuPer1k()), r.errs,
			fmtPct(r.cpuPressure), fmtPct(r.ioPressure))
	}
	return b.String()
}

// resultsJSON is the writes workload's raw results, saved next to its
// markdown report so that plots (-workload plot) and other tools can be
// made from them later. Durations are in nanoseconds; latency histograms
// are histJSON.
type resultsJSON struct {
	Workload    string    `json:"workload"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Args        []string  `json:"args"`
	Graft       string    `json:"graft"`
	Machine     string    `json:"machine"`
	Systems     []string  `json:"systems"`
	Clients     []int     `json:"clients"`
	Sizes       []int     `json:"sizes"`
	Runs        int       `json:"runs"`
	WarmupNs    int64     `json:"warmup_ns"`
	DurationNs  int64     `json:"duration_ns"`
	RunsResults []runJSON `json:"results"`
}

// runJSON is one measured run (a result).
type runJSON struct {
	System    string  `json:"system"`
	Clients   int     `json:"clients"`
	Size      int     `json:"size_bytes"`
	Run       int     `json:"run"`
	Ops       uint64  `json:"ops"`
	Errors    uint64  `json:"errors"`
	ElapsedNs int64   `json:"elapsed_ns"`
	CPUNs     int64   `json:"cpu_ns"`
	OpsPerSec float64 `json:"ops_per_sec"` // ops / elapsed, for convenience
	// CPUPressure and IOPressure are shares (0–1) of the window; null
	// where /proc/pressure is unavailable.
	CPUPressure *float64   `json:"cpu_pressure"`
	IOPressure  *float64   `json:"io_pressure"`
	Latency     *histogram `json:"latency"`
	Batching    struct {
		LogWrites        uint64     `json:"log_writes"`
		LogEntries       uint64     `json:"log_entries"`
		LogWriteNs       int64      `json:"log_write_ns"`
		LogWriteLatency  *histogram `json:"log_write_latency"`
		AppendRequests   uint64     `json:"append_requests"`
		AppendReqEntries uint64     `json:"append_entries"`
	} `json:"batching"`
}

func pressureJSON(v float64) *float64 {
	if v < 0 {
		return nil
	}
	return &v
}

func pressureOf(v *float64) float64 {
	if v == nil {
		return -1
	}
	return *v
}

func (rep *report) json() resultsJSON {
	cfg := rep.cfg
	j := resultsJSON{
		Workload: cfg.workload, Start: rep.start, End: rep.end, Args: rep.args,
		Graft: rep.machine.graft, Machine: rep.machine.summary(),
		Systems: cfg.systems, Clients: cfg.clients, Sizes: cfg.sizes, Runs: cfg.runs,
		WarmupNs: int64(cfg.warmup), DurationNs: int64(cfg.duration),
		RunsResults: []runJSON{},
	}
	for _, r := range rep.results {
		rj := runJSON{
			System: r.system, Clients: r.clients, Size: r.size, Run: r.run,
			Ops: r.ops, Errors: r.errs, ElapsedNs: int64(r.elapsed), CPUNs: int64(r.cpu), OpsPerSec: r.opsPerSec(),
			CPUPressure: pressureJSON(r.cpuPressure), IOPressure: pressureJSON(r.ioPressure),
			Latency: &r.hist,
		}
		b := &rj.Batching
		b.LogWrites, b.LogEntries, b.LogWriteNs = r.ctr.logWrites, r.ctr.logEntries, int64(r.ctr.logWriteTime)
		b.LogWriteLatency = r.ctr.logWriteHist
		b.AppendRequests, b.AppendReqEntries = r.ctr.appendRequests, r.ctr.appendEntries
		j.RunsResults = append(j.RunsResults, rj)
	}
	return j
}

// writeJSON saves the raw results to name.
func (rep *report) writeJSON(name string) error {
	b, err := json.Marshal(rep.json())
	if err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}

// readResults loads a file written by writeJSON.
func readResults(name string) (resultsJSON, []*result, error) {
	var j resultsJSON
	b, err := os.ReadFile(name)
	if err != nil {
		return j, nil, err
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return j, nil, fmt.Errorf("%s: %w", name, err)
	}
	var rs []*result
	for _, rj := range j.RunsResults {
		r := &result{
			system: rj.System, clients: rj.Clients, size: rj.Size, run: rj.Run,
			ops: rj.Ops, errs: rj.Errors, elapsed: time.Duration(rj.ElapsedNs), cpu: time.Duration(rj.CPUNs),
			cpuPressure: pressureOf(rj.CPUPressure), ioPressure: pressureOf(rj.IOPressure),
		}
		if rj.Latency != nil {
			r.hist = *rj.Latency
		}
		b := rj.Batching
		r.ctr = counters{logWrites: b.LogWrites, logEntries: b.LogEntries, logWriteTime: time.Duration(b.LogWriteNs),
			logWriteHist: b.LogWriteLatency, appendRequests: b.AppendRequests, appendEntries: b.AppendReqEntries}
		if r.ctr.logWriteHist == nil {
			r.ctr.logWriteHist = &histogram{}
		}
		rs = append(rs, r)
	}
	return j, rs, nil
}
