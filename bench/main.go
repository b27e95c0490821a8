// Command bench compares graft with its peers on one machine: each system
// runs as a 3-node cluster inside this process, on loopback, with fsync on,
// applying commands to the same counting state machine, driven by
// closed-loop clients that submit on the leader.
//
// Runs of the systems are interleaved (graft then hashicorp, then the
// other way round, and so on) so that drift in the machine's load hits
// both alike; the report gives medians with min–max and graft/hashicorp
// ratios of runs taken side by side.
//
//	cd bench && go run . -clients 1,64,256 -runs 5 -duration 5s
//
// See README.md for the flags and for profiling.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

type config struct {
	workload string
	systems  []string
	clients  []int
	sizes    []int
	runs     int
	duration time.Duration
	warmup   time.Duration
	dir      string
	out      string
	baseline bool
	graft    graftTuning
	// hcCache is the LogCache size of the hashicorp-cached system.
	hcCache int

	cpuProfile, memProfile, mutexProfile string
}

// knownSystems are the systems -systems may name, in the order they are
// listed. hashicorp is set up as shared/PEERS.md says; hashicorp-cached is
// the same with a raft.LogCache in front of the BoltStore, as Consul and
// Nomad run it; hashicorp-wal has raft-wal as its log and stable store in
// place of the BoltStore. Other files add systems with registerSystem.
var knownSystems = []string{"graft", "hashicorp", "hashicorp-cached", "hashicorp-wal"}

// starters start a fresh 3-node cluster of a system in dir.
var starters = map[string]func(cfg config, dir string) (cluster, error){
	"graft":     func(cfg config, dir string) (cluster, error) { return startGraft(dir, cfg.graft) },
	"hashicorp": func(cfg config, dir string) (cluster, error) { return startHashicorp(dir, hcTuning{}) },
	"hashicorp-cached": func(cfg config, dir string) (cluster, error) {
		return startHashicorp(dir, hcTuning{logCache: cfg.hcCache})
	},
	"hashicorp-wal": func(cfg config, dir string) (cluster, error) { return startHashicorp(dir, hcTuning{wal: true}) },
}

// registerSystem adds a system that -systems may name (call it from init).
func registerSystem(name string, start func(cfg config, dir string) (cluster, error)) {
	knownSystems = append(knownSystems, name)
	starters[name] = start
}

// workloads other than writes, by -workload name: each runs its own
// measurements with cfg and writes its own report. Other files add theirs
// with registerWorkload.
var workloads = map[string]func(cfg config) error{}

// workloadFlags let workloads define flags of their own; the values land
// in variables of the defining file.
var workloadFlags []func(fs *flag.FlagSet)

// registerWorkload adds a workload (call it from init); flags, if not nil,
// defines its own flags.
func registerWorkload(name string, run func(cfg config) error, flags func(fs *flag.FlagSet)) {
	workloads[name] = run
	if flags != nil {
		workloadFlags = append(workloadFlags, flags)
	}
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var c config
	var systems, clients, sizes string
	fs.StringVar(&c.workload, "workload", "writes", "workload: writes (closed-loop Apply of fresh commands), reads, failover, snapshot, or plot (see README.md)")
	fs.StringVar(&systems, "systems", "graft,hashicorp", "comma-separated systems to run: graft, hashicorp, hashicorp-cached, hashicorp-wal, etcd (writes); reads, failover and snapshot run graft and hashicorp")
	fs.StringVar(&clients, "clients", "1,16,64,256", "comma-separated numbers of closed-loop clients")
	fs.StringVar(&sizes, "size", "256", "comma-separated command sizes in bytes (e.g. 16,256,1024,4096)")
	fs.IntVar(&c.runs, "runs", 5, "runs of each system at each configuration")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured time of one run")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "load applied before each measured window, not recorded")
	fs.StringVar(&c.dir, "dir", os.TempDir(), "where the clusters' data directories are made (must be on the disk under test)")
	fs.StringVar(&c.out, "out", "auto", "markdown report file; auto: results/<date>-<workload>.md; none: stdout only")
	fs.BoolVar(&c.baseline, "baseline", true, "measure the disk's fsync latency and bandwidth before and after")
	fs.IntVar(&c.graft.maxInflightAppends, "graft-inflight", 0, "graft Options.MaxInflightAppends (0: graft's default)")
	fs.Int64Var(&c.graft.preallocate, "graft-preallocate", 0, "graft's segment.Options.Preallocate in bytes (0: graft's default; -1: off)")
	fs.IntVar(&c.graft.maxAppendEntries, "graft-max-append", 0, "graft Options.MaxAppendEntries (0: graft's default)")
	fs.IntVar(&c.hcCache, "hashicorp-logcache", 512, "raft.LogCache entries in front of the BoltStore of the hashicorp-cached system")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured window to this file (one system, configuration and run)")
	fs.StringVar(&c.memProfile, "memprofile", "", "write the allocation profile at the end of the measured window to this file, and the one at its start to FILE.base")
	fs.StringVar(&c.mutexProfile, "mutexprofile", "", "write a mutex contention profile of the measured window to this file")
	for _, f := range workloadFlags {
		f(fs)
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if _, ok := workloads[c.workload]; !ok && c.workload != "writes" {
		names := []string{"writes"}
		for n := range workloads {
			names = append(names, n)
		}
		slices.Sort(names[1:])
		return c, fmt.Errorf("-workload %q: unknown (known: %s)", c.workload, strings.Join(names, ", "))
	}
	for _, s := range strings.Split(systems, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(knownSystems, s) {
			return c, fmt.Errorf("-systems: unknown system %q (known: %s)", s, strings.Join(knownSystems, ", "))
		}
		if !slices.Contains(c.systems, s) {
			c.systems = append(c.systems, s)
		}
	}
	var err error
	if c.clients, err = parseInts("-clients", clients); err != nil {
		return c, err
	}
	if c.sizes, err = parseInts("-size", sizes); err != nil {
		return c, err
	}
	switch {
	case c.runs < 1:
		return c, fmt.Errorf("-runs %d must be at least 1", c.runs)
	case c.duration <= 0:
		return c, fmt.Errorf("-duration %v must be positive", c.duration)
	case c.warmup < 0:
		return c, fmt.Errorf("-warmup %v must not be negative", c.warmup)
	case c.hcCache < 1:
		return c, fmt.Errorf("-hashicorp-logcache %d must be at least 1", c.hcCache)
	}
	profiling := c.cpuProfile != "" || c.memProfile != "" || c.mutexProfile != ""
	if profiling && (len(c.systems) != 1 || len(c.clients) != 1 || len(c.sizes) != 1 || c.runs != 1) {
		return c, errors.New("profiling needs exactly one system, one -clients, one -size and -runs 1")
	}
	return c, nil
}

func parseInts(name, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive integer", name, f)
		}
		out = append(out, v)
	}
	return out, nil
}

func run(cfg config) error {
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return err
	}
	if w, ok := workloads[cfg.workload]; ok {
		return w(cfg)
	}
	rep := &report{cfg: cfg, args: os.Args[1:], start: time.Now(), machine: machineInfo(cfg.dir)}
	logf("machine: %s", rep.machine.summary())
	if cfg.baseline {
		logf("disk baseline (before)...")
		b, err := measureBaseline(cfg.dir, 2000, 256<<20)
		if err != nil {
			return fmt.Errorf("disk baseline: %w", err)
		}
		rep.before = &b
	}
	for _, size := range cfg.sizes {
		for _, clients := range cfg.clients {
			for i := 1; i <= cfg.runs; i++ {
				order := slices.Clone(cfg.systems)
				if i%2 == 0 {
					slices.Reverse(order)
				}
				for _, sys := range order {
					r, err := runOne(cfg, sys, clients, size)
					if err != nil {
						return fmt.Errorf("%s, %d clients × %d B, run %d: %w", sys, clients, size, i, err)
					}
					r.run = i
					rep.results = append(rep.results, r)
					logf("%-16s c=%-3d s=%-4d run %d: %8.0f ops/s  p50 %-8s p99 %-8s p99.9 %-8s cpu %.3f s/1k ops  errors %d  pressure cpu %s io %s",
						sys, clients, size, i, r.opsPerSec(), fmtDur(r.hist.quantile(0.5)), fmtDur(r.hist.quantile(0.99)),
						fmtDur(r.hist.quantile(0.999)), r.cpuPer1k(), r.errs, fmtPct(r.cpuPressure), fmtPct(r.ioPressure))
				}
			}
		}
	}
	if cfg.baseline {
		logf("disk baseline (after)...")
		b, err := measureBaseline(cfg.dir, 2000, 256<<20)
		if err != nil {
			return fmt.Errorf("disk baseline: %w", err)
		}
		rep.after = &b
	}
	rep.end = time.Now()
	rep.machine.loadAfter = loadAvg()
	rep.machine.pressureAfter = cpuPressureAvg60()
	out := cfg.out
	if out == "auto" {
		out = filepath.Join("results", rep.start.Format("2006-01-02")+"-"+cfg.workload+".md")
	}
	var saveErr error
	if out != "none" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		// The raw results next to the report, and the plots drawn from
		// them; the report links both. A failure here still leaves the
		// report written, then is returned.
		raw := strings.TrimSuffix(out, ".md") + ".json"
		if err := rep.writeJSON(raw); err != nil {
			saveErr = fmt.Errorf("raw results: %w", err)
		} else {
			logf("raw results written to %s", raw)
			rep.rawFile = filepath.Base(raw)
			pngs, err := renderPlots(rep.json(), rep.results, filepath.Dir(out), strings.TrimSuffix(rep.rawFile, ".json"))
			if err != nil {
				saveErr = fmt.Errorf("plots: %w", err)
			}
			for _, p := range pngs {
				logf("plot written to %s", p)
				rep.plots = append(rep.plots, filepath.Base(p))
			}
		}
	}
	md := rep.markdown()
	fmt.Print(md)
	if out != "none" {
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			return errors.Join(err, saveErr)
		}
		logf("report written to %s", out)
	}
	return saveErr
}

// runOne starts a fresh cluster of sys in a fresh directory, drives it and
// tears it down.
func runOne(cfg config, sys string, clients, size int) (r *result, err error) {
	dir, err := os.MkdirTemp(cfg.dir, "graft-bench-"+sys+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	c, err := starters[sys](cfg, dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := c.close(); cerr != nil && err == nil {
			err = fmt.Errorf("shutdown: %w", cerr)
		}
	}()
	h, finish, err := profileHooks(cfg)
	if err != nil {
		return nil, err
	}
	r = drive(c, clients, size, cfg.warmup, cfg.duration, h)
	if err := finish(); err != nil {
		return nil, err
	}
	r.system = sys
	if got := c.applied(); got < r.ops {
		return nil, fmt.Errorf("leader's state machine applied %d commands, but %d applies were acknowledged", got, r.ops)
	}
	runtime.GC() // leave no garbage of this run to the next
	return r, nil
}

// profileHooks returns the hooks that profile the measured window as cfg
// asks, and a function to call after the run that reports write errors.
func profileHooks(cfg config) (hooks, func() error, error) {
	var errs []error
	write := func(name, profile string) {
		f, err := os.Create(name)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if err := pprof.Lookup(profile).WriteTo(f, 0); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, f.Close())
	}
	var cpuFile *os.File
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return hooks{}, nil, err
		}
		cpuFile = f
	}
	h := hooks{
		start: func() {
			if cfg.memProfile != "" {
				runtime.GC() // the allocation profile is as of the last GC
				write(cfg.memProfile+".base", "allocs")
			}
			if cfg.mutexProfile != "" {
				runtime.SetMutexProfileFraction(5)
			}
			if cpuFile != nil {
				errs = append(errs, pprof.StartCPUProfile(cpuFile))
			}
		},
		stop: func() {
			if cpuFile != nil {
				pprof.StopCPUProfile()
				errs = append(errs, cpuFile.Close())
			}
			if cfg.mutexProfile != "" {
				write(cfg.mutexProfile, "mutex")
				runtime.SetMutexProfileFraction(0)
			}
			if cfg.memProfile != "" {
				runtime.GC()
				write(cfg.memProfile, "allocs")
			}
		},
	}
	return h, func() error { return errors.Join(errs...) }, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}
