package main

import (
	"crypto/rand"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cluster is a running 3-node group of one system, seen from its leader.
type cluster interface {
	// apply submits data on the leader and waits until it is committed
	// and applied there.
	apply(data []byte) error
	// applied is how many commands the leader's state machine applied.
	applied() uint64
	// counters are the cluster's batching counters since it started.
	counters() counters
	close() error
}

// result is one measured run of one system at one configuration.
type result struct {
	system  string
	clients int
	size    int
	run     int

	ops     uint64 // successful applies completed inside the window
	errs    uint64 // failed applies completed inside the window
	elapsed time.Duration
	cpu     time.Duration // process user+system CPU inside the window
	ctr     counters      // batching inside the window
	// cpuPressure and ioPressure are the shares of the window in which
	// some task on the machine (this process's included) waited for a CPU
	// or for I/O, from /proc/pressure; -1 where unavailable.
	cpuPressure, ioPressure float64
	hist                    histogram
}

func (r *result) opsPerSec() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// cpuPer1k is the process's CPU seconds per 1,000 successful applies.
func (r *result) cpuPer1k() float64 {
	if r.ops == 0 {
		return 0
	}
	return r.cpu.Seconds() / float64(r.ops) * 1000
}

// hooks run at the edges of the measured window (used for profiling).
type hooks struct {
	start, stop func()
}

// drive runs clients closed-loop clients against c, each submitting its own
// size-byte command and waiting for it before the next. Nothing is recorded
// during warmup; then, for dur, every apply that completes is counted and
// its latency (submit to return) recorded.
func drive(c cluster, clients, size int, warmup, dur time.Duration, h hooks) *result {
	const (
		warming = iota
		measuring
		done
	)
	var phase atomic.Int32
	type client struct {
		hist      histogram
		ops, errs uint64
	}
	cs := make([]*client, clients)
	var wg sync.WaitGroup
	for i := range cs {
		cl := &client{}
		cs[i] = cl
		data := make([]byte, size)
		rand.Read(data)
		wg.Go(func() {
			for {
				p := phase.Load()
				if p == done {
					return
				}
				t0 := time.Now()
				err := c.apply(data)
				lat := time.Since(t0)
				if phase.Load() == measuring {
					if err != nil {
						cl.errs++
					} else {
						cl.ops++
						cl.hist.record(lat)
					}
				}
				if err != nil {
					time.Sleep(time.Millisecond) // no hot loop on a lost leader
				}
			}
		})
	}
	time.Sleep(warmup)
	ctr0 := c.counters()
	cpuStall0, ioStall0 := stallTime("cpu"), stallTime("io")
	cpu0 := cpuTime()
	t0 := time.Now()
	phase.Store(measuring)
	if h.start != nil {
		h.start()
	}
	time.Sleep(dur)
	phase.Store(done)
	elapsed := time.Since(t0)
	cpu := cpuTime() - cpu0
	ctr := c.counters().sub(ctr0)
	cpuStall1, ioStall1 := stallTime("cpu"), stallTime("io")
	if h.stop != nil {
		h.stop()
	}
	wg.Wait()
	r := &result{clients: clients, size: size, elapsed: elapsed, cpu: cpu, ctr: ctr,
		cpuPressure: pressure(cpuStall0, cpuStall1, elapsed), ioPressure: pressure(ioStall0, ioStall1, elapsed)}
	for _, cl := range cs {
		r.ops += cl.ops
		r.errs += cl.errs
		r.hist.merge(&cl.hist)
	}
	return r
}

// stallTime returns the "some" total of /proc/pressure/<resource>: how
// long at least one task waited for it since boot; -1 if unavailable.
func stallTime(resource string) time.Duration {
	for _, line := range strings.Split(readFile("/proc/pressure/"+resource), "\n") {
		if !strings.HasPrefix(line, "some ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				if us, err := strconv.ParseInt(v, 10, 64); err == nil {
					return time.Duration(us) * time.Microsecond
				}
			}
		}
	}
	return -1
}

func pressure(t0, t1, window time.Duration) float64 {
	if t0 < 0 || t1 < 0 {
		return -1
	}
	return float64(t1-t0) / float64(window)
}

// cpuTime is the user plus system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
