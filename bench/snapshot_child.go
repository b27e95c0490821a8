package main

// The child process of the snapshot workload: one follower, alone in its
// process so that its memory and its sockets can be measured. It is the
// benchmark binary re-executed with -snapshot-child=<json spec>.
//
// Protocol on stdout, one line each:
//
//	ready <unix ns> <VmRSS bytes>        node started, not yet serving
//	caughtup <unix ns> <bytes read> <bytes written> <bulk unix ns> <applied>
//	bye                                   after stdin closed and the node shut down

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/graft-raft/graft/snapshot"
	"github.com/hashicorp/raft"
)

// snapChildSpec tells the child what to run.
type snapChildSpec struct {
	System string `json:"system"` // graft or hashicorp
	ID     string `json:"id"`
	Addr   string `json:"addr"` // listen address, the one in the group's configuration
	Dir    string `json:"dir"`  // the node's data directory
	// Target is the applied index that counts as caught up.
	Target uint64 `json:"target"`
	// Bulk is the bytes read that mark the start of the bulk transfer.
	Bulk int64 `json:"bulk"`
	// Profile, if set, is where a CPU profile from start to caught-up goes.
	Profile string `json:"profile,omitempty"`
	// GraftChunk, GraftParallel and GraftDirect override graft's Copy
	// options (zero: the snapshot package defaults).
	GraftChunk    int64 `json:"graft_chunk,omitempty"`
	GraftParallel int   `json:"graft_parallel,omitempty"`
	GraftDirect   bool  `json:"graft_direct,omitempty"`
}

type snapChildNode interface {
	applied() uint64
	close() error
}

func runSnapChild(arg string) error {
	var spec snapChildSpec
	if err := json.Unmarshal([]byte(arg), &spec); err != nil {
		return fmt.Errorf("-snapshot-child: %w", err)
	}
	if spec.Profile != "" {
		f, err := os.Create(spec.Profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctr := &wireCounter{bulkAt: spec.Bulk}
	raw, err := snapListenRetry(spec.Addr, 10*time.Second)
	if err != nil {
		return err
	}
	lis := newWireListener(raw, ctr)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("child", spec.ID)

	var node snapChildNode
	times := &snapIOTimes{}
	switch spec.System {
	case "graft":
		dial := func(ctx context.Context, addr string) (net.Conn, error) { return wireDial(ctx, ctr, addr) }
		x := graftChildExtras{dial: dial, copy: snapshot.CopyOptions{ChunkSize: spec.GraftChunk, Parallel: spec.GraftParallel, Direct: spec.GraftDirect}, times: times}
		p, err := startGraftSnapProc(spec.ID, spec.Dir, nil, lis, x, logger)
		if err != nil {
			lis.Close()
			return err
		}
		node = p
	case "hashicorp":
		trans := raft.NewNetworkTransport(hcWireStream{lis}, 3, 10*time.Second, io.Discard)
		n, err := startHCSnapNode(spec.ID, spec.Dir, trans, true, os.Stderr)
		if err != nil {
			trans.Close()
			return err
		}
		node = n
	default:
		lis.Close()
		return fmt.Errorf("-snapshot-child: unknown system %q", spec.System)
	}
	idle, err := snapProcStatus(os.Getpid(), "VmRSS")
	if err != nil {
		node.close()
		return err
	}
	fmt.Printf("ready %d %d\n", time.Now().UnixNano(), idle)
	lis.open()

	deadline := time.Now().Add(30 * time.Minute)
	// Every 5 ms: graft's applied() is Node.Status, which takes the
	// node's lock; at 1 ms its cost would show in graft's follower CPU.
	tick := time.NewTicker(5 * time.Millisecond)
	for node.applied() < spec.Target {
		if time.Now().After(deadline) {
			tick.Stop()
			node.close()
			return fmt.Errorf("child %s: applied %d, not %d, after 30 minutes", spec.ID, node.applied(), spec.Target)
		}
		<-tick.C
	}
	tick.Stop()
	now := time.Now().UnixNano()
	if spec.Profile != "" {
		pprof.StopCPUProfile()
	}
	if spec.System == "graft" {
		fmt.Printf("graftio %d %d %d %d %d %d\n", times.getFile.Load(), times.getFiles.Load(), times.write.Load(), times.writes.Load(), times.sync.Load(), times.syncs.Load())
	}
	fmt.Printf("caughtup %d %d %d %d %d\n", now, ctr.read.Load(), ctr.written.Load(), ctr.bulkNanos.Load(), node.applied())

	// Stay up until the parent, having read our peak RSS, closes stdin.
	_, _ = io.Copy(io.Discard, os.Stdin)
	err = node.close()
	fmt.Println("bye")
	return err
}

// snapListenRetry listens on addr, retrying while the port is still taken (a
// previous child on the same address may be exiting).
func snapListenRetry(addr string, wait time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(wait)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// snapProcStatus reads a "kB" field (VmRSS, VmHWM) of /proc/<pid>/status.
func snapProcStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// snapChildResult is what the parent measured of one child run.
type snapChildResult struct {
	total, startup, wait, transfer time.Duration
	read, written                  int64
	idleRSS, peakRSS               int64
	childCPU, parentCPU            time.Duration
	// graftIO is the graft child's GetFile, write and sync clocks: time
	// (ns, summed over goroutines) and calls of each.
	graftIO []int64
}

// runSnapChildProc starts the child with spec, calls onReady (if not nil) once it
// is ready to serve, and waits until it has caught up; then reads its
// peak RSS and stops it.
func runSnapChildProc(cfg config, spec snapChildSpec, onReady func()) (res snapChildResult, err error) {
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return res, err
	}
	cmd := exec.Command(exe, "-workload", "snapshot", "-dir", cfg.dir, "-snapshot-child", string(js))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return res, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	cmd.Stderr = os.Stderr
	if spec.Profile != "" {
		// The leader's side of the install, in this process.
		f, err := os.Create(strings.TrimSuffix(spec.Profile, ".pprof") + "-leader.pprof")
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0 := cpuTime()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// stop ends the child: close its stdin, let it finish its output and
	// exit, and reap it; kill it (this process's own child, by its pid) if
	// it hangs.
	stop := func() error {
		stdin.Close()
		t := time.NewTimer(2 * time.Minute)
		defer t.Stop()
	drain:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break drain
				}
				if line != "bye" {
					logf("child %s: %s", spec.ID, line)
				}
			case <-t.C:
				cmd.Process.Kill()
				cmd.Wait()
				return fmt.Errorf("child %s did not exit within 2 minutes; killed", spec.ID)
			}
		}
		return cmd.Wait()
	}
	defer func() {
		if err != nil && cmd.ProcessState == nil {
			stop()
		}
	}()
	next := func(prefix string, wait time.Duration) ([]int64, error) {
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					return nil, fmt.Errorf("child %s: exited before %q", spec.ID, prefix)
				}
				f := strings.Fields(line)
				if len(f) == 7 && f[0] == "graftio" {
					for _, v := range f[1:] {
						n, _ := strconv.ParseInt(v, 10, 64)
						res.graftIO = append(res.graftIO, n)
					}
					continue
				}
				if len(f) == 0 || f[0] != prefix {
					logf("child %s: %s", spec.ID, line)
					continue
				}
				var vs []int64
				for _, s := range f[1:] {
					v, err := strconv.ParseInt(s, 10, 64)
					if err != nil {
						return nil, fmt.Errorf("child %s: bad line %q", spec.ID, line)
					}
					vs = append(vs, v)
				}
				return vs, nil
			case <-t.C:
				return nil, fmt.Errorf("child %s: no %q within %v", spec.ID, prefix, wait)
			}
		}
	}
	ready, err := next("ready", 5*time.Minute)
	if err != nil {
		return res, err
	}
	if len(ready) != 2 {
		return res, fmt.Errorf("child %s: bad ready line", spec.ID)
	}
	if onReady != nil {
		onReady()
	}
	caught, err := next("caughtup", 30*time.Minute)
	if err != nil {
		return res, err
	}
	if len(caught) != 5 {
		return res, fmt.Errorf("child %s: bad caughtup line", spec.ID)
	}
	res.parentCPU = cpuTime() - cpu0
	if res.peakRSS, err = snapProcStatus(cmd.Process.Pid, "VmHWM"); err != nil {
		return res, err
	}
	res.idleRSS = ready[1]
	res.total = time.Duration(caught[0] - t0.UnixNano())
	res.startup = time.Duration(ready[0] - t0.UnixNano())
	res.read, res.written = caught[1], caught[2]
	if bulk := caught[3]; bulk > 0 {
		res.wait = time.Duration(bulk - ready[0])
		res.transfer = time.Duration(caught[0] - bulk)
	} else {
		res.wait = time.Duration(caught[0] - ready[0])
	}
	if err := stop(); err != nil {
		return res, fmt.Errorf("child %s: %w", spec.ID, err)
	}
	res.childCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, nil
}
