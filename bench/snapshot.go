package main

// The snapshot catch-up workload: a follower with an empty disk joins a
// group whose state is -snap-bytes in -snap-files files; then 1% of the
// state changes and the follower, lagging, catches up again. Measured in
// the follower, which runs as a child process: time to caught-up, bytes
// on its sockets, peak RSS above idle. Also the physical baselines:
// sequential write bandwidth and a raw loopback TCP copy of the files.
//
//	go -C bench run . -workload snapshot -runs 3
//	go -C bench run . -workload snapshot -snap-bytes 64MiB -runs 1 -out none   # quick

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// snapByteSize is a flag value of bytes: 1073741824, 64MiB, 1GiB, 500MB.
type snapByteSize int64

func (b *snapByteSize) String() string { return snapHuman(int64(*b)) }

func (b *snapByteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		return fmt.Errorf("%q is not a positive size (e.g. 64MiB, 1GiB)", s)
	}
	*b = snapByteSize(v * float64(mult))
	return nil
}

// snapHuman formats n in binary units with three significant digits.
func snapHuman(n int64) string {
	v := float64(n)
	for _, u := range []string{"B", "KiB", "MiB", "GiB"} {
		if v < 1024 || u == "GiB" {
			switch {
			case u == "B":
				return fmt.Sprintf("%d B", n)
			case v < 10:
				return fmt.Sprintf("%.2f %s", v, u)
			case v < 100:
				return fmt.Sprintf("%.1f %s", v, u)
			}
			return fmt.Sprintf("%.0f %s", v, u)
		}
		v /= 1024
	}
	return ""
}

var snapFlags struct {
	bytes    snapByteSize
	files    int
	commands int
	profile  string
	child    string
	chunk    snapByteSize
	parallel int
	direct   bool
}

func init() {
	registerWorkload("snapshot", runSnapshot, func(fs *flag.FlagSet) {
		snapFlags.bytes = 1 << 30
		fs.Var(&snapFlags.bytes, "snap-bytes", "snapshot workload: bytes of state (e.g. 64MiB, 1GiB)")
		fs.IntVar(&snapFlags.files, "snap-files", 16, "snapshot workload: files the state is split into")
		fs.IntVar(&snapFlags.commands, "snap-commands", 300, "snapshot workload: commands applied before each snapshot")
		fs.StringVar(&snapFlags.profile, "snap-profile", "", "snapshot workload: directory for CPU profiles of each follower child, start to caught-up")
		fs.Var(&snapFlags.chunk, "snap-graft-chunk", "snapshot workload: graft Copy.ChunkSize of the follower (default: the snapshot package's)")
		fs.IntVar(&snapFlags.parallel, "snap-graft-parallel", 0, "snapshot workload: graft Copy.Parallel of the follower (0: the snapshot package's default)")
		fs.BoolVar(&snapFlags.direct, "snap-graft-direct", false, "snapshot workload: graft Copy.Direct of the follower (O_DIRECT writes)")
		fs.StringVar(&snapFlags.child, "snapshot-child", "", "internal: run as the follower child of the snapshot workload, with this JSON spec")
	})
}

// snapData is the generated state: files of the initial state and the
// extra file that phase 2 adds (1% of the state).
type snapData struct {
	files     []string
	sizes     []int64
	total     int64
	extra     string
	extraSize int64
}

// snapRun is one run of one system.
type snapRun struct {
	system string
	run    int
	first  snapChildResult // empty follower
	second snapChildResult // lagging follower after a 1% change
}

type snapBaseline struct {
	seqMiBps    float64       // disk.go seqWrite: 1 MiB writes, fsync each
	directMiBps float64       // seqWriteDirect: 1 MiB O_DIRECT writes, fsync at the end (0: not measured)
	filesTime   time.Duration // the state's files written whole, fsync each
	tcpTime     time.Duration // loopback TCP copy of the files into new files, fsync each
	tcpWritten  int64
}

type snapReport struct {
	cfg        config
	args       []string
	start, end time.Time
	machine    machine
	data       *snapData
	before     *snapBaseline
	after      *snapBaseline
	runs       []*snapRun
	genTime    time.Duration
}

func runSnapshot(cfg config) error {
	if snapFlags.child != "" {
		return runSnapChild(snapFlags.child)
	}
	var systems []string
	for _, s := range cfg.systems {
		if s == "graft" || s == "hashicorp" {
			systems = append(systems, s)
		} else {
			logf("snapshot workload: skipping system %s (only graft and hashicorp)", s)
		}
	}
	if len(systems) == 0 {
		return errors.New("snapshot workload: -systems names neither graft nor hashicorp")
	}
	cfg.systems = systems
	switch {
	case snapFlags.files < 1 || snapFlags.files > 10000:
		return fmt.Errorf("-snap-files %d must be in [1, 10000]", snapFlags.files)
	case int64(snapFlags.bytes) < int64(snapFlags.files)*100:
		return fmt.Errorf("-snap-bytes %d is too small for %d files", snapFlags.bytes, snapFlags.files)
	case snapFlags.commands < snapTrailing*2:
		return fmt.Errorf("-snap-commands %d must be at least %d, to compact the log past a follower", snapFlags.commands, snapTrailing*2)
	}
	if snapFlags.profile != "" {
		if err := os.MkdirAll(snapFlags.profile, 0o755); err != nil {
			return err
		}
		abs, err := filepath.Abs(snapFlags.profile)
		if err != nil {
			return err
		}
		snapFlags.profile = abs
	}
	rep := &snapReport{cfg: cfg, args: os.Args[1:], start: time.Now(), machine: machineInfo(cfg.dir)}
	logf("machine: %s", rep.machine.summary())

	cache, err := os.MkdirTemp(cfg.dir, "graft-bench-snapshot-data-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cache)
	logf("generating %s of random state in %d files in %s...", snapHuman(int64(snapFlags.bytes)), snapFlags.files, cache)
	t0 := time.Now()
	data, err := generateSnapData(cache, int64(snapFlags.bytes), snapFlags.files)
	if err != nil {
		return fmt.Errorf("generating the state: %w", err)
	}
	rep.data, rep.genTime = data, time.Since(t0)

	logf("baselines (before)...")
	if rep.before, err = measureSnapBaseline(cfg.dir, data); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	snapLogBaseline(rep.before)
	for i := 1; i <= cfg.runs; i++ {
		order := slices.Clone(cfg.systems)
		if i%2 == 0 {
			slices.Reverse(order)
		}
		for _, sys := range order {
			r, err := snapRunOne(cfg, sys, i, data)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", sys, i, err)
			}
			rep.runs = append(rep.runs, r)
			for k, p := range []snapChildResult{r.first, r.second} {
				logf("%-9s run %d install %d: %s (startup %s, wait %s, transfer %s), wire %s, RSS idle %s peak +%s, follower CPU %.2f s",
					sys, i, k+1, snapSecs(p.total), snapSecs(p.startup), snapSecs(p.wait), snapSecs(p.transfer),
					snapHuman(p.read+p.written), snapHuman(p.idleRSS), snapHuman(p.peakRSS-p.idleRSS), p.childCPU.Seconds())
				if g := p.graftIO; len(g) == 6 {
					logf("          graft follower I/O: GetFile %.2f s in %d calls, writes %.2f s in %d, syncs %.2f s in %d (summed over the copier's goroutines)",
						float64(g[0])/1e9, g[1], float64(g[2])/1e9, g[3], float64(g[4])/1e9, g[5])
				}
			}
		}
	}
	logf("baselines (after)...")
	if rep.after, err = measureSnapBaseline(cfg.dir, data); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	snapLogBaseline(rep.after)
	rep.end = time.Now()
	rep.machine.loadAfter = loadAvg()
	rep.machine.pressureAfter = cpuPressureAvg60()

	md := rep.markdown()
	fmt.Print(md)
	out := cfg.out
	if out == "auto" {
		out = filepath.Join("results", rep.start.Format("2006-01-02")+"-snapshot.md")
	}
	if out != "none" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			return err
		}
		logf("report written to %s", out)
	}
	return nil
}

func snapLogBaseline(b *snapBaseline) {
	logf("  sequential write %.0f MiB/s, direct %.0f MiB/s; files written + fsync %s; loopback TCP copy %s", b.seqMiBps, b.directMiBps, snapSecs(b.filesTime), snapSecs(b.tcpTime))
}

func snapSecs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// generateSnapData writes files incompressible random files of total
// bytes into dir, plus the extra file of total/100 bytes, each synced.
func generateSnapData(dir string, total int64, files int) (*snapData, error) {
	var seed [32]byte
	rand.Read(seed[:])
	rng := mrand.NewChaCha8(seed)
	buf := make([]byte, 1<<20)
	write := func(name string, size int64) error {
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		defer f.Close()
		for left := size; left > 0; {
			n := min(left, int64(len(buf)))
			rng.Read(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				return err
			}
			left -= n
		}
		return f.Sync()
	}
	d := &snapData{total: total}
	per := total / int64(files)
	for i := range files {
		size := per
		if i == files-1 {
			size = total - per*int64(files-1)
		}
		name := filepath.Join(dir, fmt.Sprintf("state-%03d.sst", i))
		if err := write(name, size); err != nil {
			return nil, err
		}
		d.files = append(d.files, name)
		d.sizes = append(d.sizes, size)
	}
	d.extra = filepath.Join(dir, "state-new-000.sst")
	d.extraSize = max(total/100, 1)
	if err := write(d.extra, d.extraSize); err != nil {
		return nil, err
	}
	return d, snapSyncDir(dir)
}

// measureSnapBaseline measures, over the state's byte count, the disk's
// sequential write bandwidth, writing the state's files, and copying them
// over loopback TCP into new files.
func measureSnapBaseline(dir string, data *snapData) (*snapBaseline, error) {
	d, err := os.MkdirTemp(dir, "graft-bench-snapshot-baseline-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d)
	b := &snapBaseline{}
	if b.seqMiBps, err = seqWrite(filepath.Join(d, "seq"), data.total); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(d, "seq"))
	if b.directMiBps, err = seqWriteDirect(filepath.Join(d, "direct"), data.total); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(d, "direct"))
	if b.filesTime, err = snapWriteFiles(filepath.Join(d, "files"), data.sizes); err != nil {
		return nil, err
	}
	os.RemoveAll(filepath.Join(d, "files"))
	if b.tcpTime, b.tcpWritten, err = snapTCPCopy(filepath.Join(d, "tcp"), data.files); err != nil {
		return nil, err
	}
	return b, nil
}

// snapWriteFiles writes files of sizes into dir in 1 MiB writes,
// syncing each file once written, then the directory.
func snapWriteFiles(dir string, sizes []int64) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	t0 := time.Now()
	for i, size := range sizes {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%03d", i)))
		if err != nil {
			return 0, err
		}
		for left := size; left > 0; {
			n := min(left, int64(len(buf)))
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				return 0, err
			}
			left -= n
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return 0, err
		}
		if err := f.Close(); err != nil {
			return 0, err
		}
	}
	if err := snapSyncDir(dir); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// snapTCPCopy sends files over one loopback TCP connection (each
// after a header of name length, name and size) and writes them into new
// files in dir, syncing each; both sides copy through 1 MiB user-space
// buffers, as a raft library would. It returns the time from dialling to
// the last sync and the bytes sent.
func snapTCPCopy(dir string, files []string) (time.Duration, int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer lis.Close()
	sent := make(chan error, 1)
	go func() {
		sent <- func() error {
			conn, err := lis.Accept()
			if err != nil {
				return err
			}
			defer conn.Close()
			buf := make([]byte, 1<<20)
			for _, name := range files {
				f, err := os.Open(name)
				if err != nil {
					return err
				}
				fi, err := f.Stat()
				if err != nil {
					f.Close()
					return err
				}
				base := filepath.Base(name)
				hdr := binary.BigEndian.AppendUint16(nil, uint16(len(base)))
				hdr = append(hdr, base...)
				hdr = binary.BigEndian.AppendUint64(hdr, uint64(fi.Size()))
				if _, err := conn.Write(hdr); err != nil {
					f.Close()
					return err
				}
				_, err = io.CopyBuffer(struct{ io.Writer }{conn}, struct{ io.Reader }{f}, buf)
				f.Close()
				if err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	t0 := time.Now()
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	buf := make([]byte, 1<<20)
	var total int64
	for range files {
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return 0, 0, err
		}
		name := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, name); err != nil {
			return 0, 0, err
		}
		var sz [8]byte
		if _, err := io.ReadFull(conn, sz[:]); err != nil {
			return 0, 0, err
		}
		size := int64(binary.BigEndian.Uint64(sz[:]))
		f, err := os.Create(filepath.Join(dir, filepath.Base(string(name))))
		if err != nil {
			return 0, 0, err
		}
		n, err := io.CopyBuffer(struct{ io.Writer }{f}, io.LimitReader(conn, size), buf)
		if err == nil && n != size {
			err = fmt.Errorf("tcp copy: %s: %d bytes, want %d", name, n, size)
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, 0, err
		}
		total += size
	}
	if err := snapSyncDir(dir); err != nil {
		return 0, 0, err
	}
	d := time.Since(t0)
	if err := <-sent; err != nil {
		return 0, 0, err
	}
	return d, total, nil
}

// snapCluster is the parent's 2-node group of one system.
type snapCluster interface {
	apply(n int, cmd []byte) error
	snapshotAll() error
	lastIndex() (uint64, error)
	addStateFile(src string) error
	addChild(ctx context.Context, id, addr string) error
	close() error
}

// snapReservePort returns a free loopback address for the child to listen on.
func snapReservePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// snapRunOne runs both installs of one system in a fresh directory.
func snapRunOne(cfg config, sys string, run int, data *snapData) (r *snapRun, err error) {
	dir, err := os.MkdirTemp(cfg.dir, "graft-bench-snapshot-"+sys+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Errors only: while the child is down the leader warns of every
	// failed attempt to reach it.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("system", sys)
	var c snapCluster
	switch sys {
	case "graft":
		c, err = startGraftSnap(dir, data.files, logger)
	case "hashicorp":
		c, err = startHCSnap(dir, data.files)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := c.close(); cerr != nil && err == nil {
			err = fmt.Errorf("shutdown: %w", cerr)
		}
	}()
	cmd := make([]byte, 64)
	rand.Read(cmd)
	prepare := func() (uint64, error) {
		if err := c.apply(snapFlags.commands, cmd); err != nil {
			return 0, err
		}
		if err := c.snapshotAll(); err != nil {
			return 0, err
		}
		return c.lastIndex()
	}
	r = &snapRun{system: sys, run: run}

	// Install 1: a follower with an empty disk joins.
	target, err := prepare()
	if err != nil {
		return nil, err
	}
	addr, err := snapReservePort()
	if err != nil {
		return nil, err
	}
	spec := snapChildSpec{System: sys, ID: "n3", Addr: addr, Dir: filepath.Join(dir, "n3"), Target: target, Bulk: 16 << 10,
		GraftChunk: int64(snapFlags.chunk), GraftParallel: snapFlags.parallel, GraftDirect: snapFlags.direct}
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		return nil, err
	}
	if snapFlags.profile != "" {
		spec.Profile = filepath.Join(snapFlags.profile, fmt.Sprintf("%s-run%d-install1.pprof", sys, run))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	added := make(chan error, 1)
	if r.first, err = runSnapChildProc(cfg, spec, func() {
		go func() { added <- c.addChild(ctx, spec.ID, spec.Addr) }()
	}); err != nil {
		return nil, fmt.Errorf("install 1: %w", err)
	}
	select {
	case err := <-added:
		if err != nil {
			return nil, fmt.Errorf("adding the follower: %w", err)
		}
	case <-time.After(2 * time.Minute):
		return nil, errors.New("adding the follower: not done 2 minutes after it caught up")
	}
	if got := r.first.read; got < data.total*9/10 {
		return nil, fmt.Errorf("install 1: the follower read only %d bytes of a %d-byte state: it caught up without an install", got, data.total)
	}

	// Install 2: 1% of the state changes while the follower is down.
	if err := c.addStateFile(data.extra); err != nil {
		return nil, err
	}
	if spec.Target, err = prepare(); err != nil {
		return nil, err
	}
	if snapFlags.profile != "" {
		spec.Profile = filepath.Join(snapFlags.profile, fmt.Sprintf("%s-run%d-install2.pprof", sys, run))
	}
	if r.second, err = runSnapChildProc(cfg, spec, nil); err != nil {
		return nil, fmt.Errorf("install 2: %w", err)
	}
	if err := checkChildState(filepath.Join(spec.Dir, "state"), data); err != nil {
		return nil, fmt.Errorf("after install 2: %w", err)
	}
	return r, nil
}

// checkChildState checks that the follower's state directory holds every
// file of the final state, each with the same bytes as the leader's.
func checkChildState(dir string, data *snapData) error {
	want := map[string]int64{filepath.Base(data.extra): data.extraSize}
	src := map[string]string{filepath.Base(data.extra): data.extra}
	for i, f := range data.files {
		want[filepath.Base(f)] = data.sizes[i]
		src[filepath.Base(f)] = f
	}
	names, err := snapStateFiles(dir)
	if err != nil {
		return err
	}
	if len(names) != len(want) {
		return fmt.Errorf("follower state has %d files, want %d", len(names), len(want))
	}
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		if size, ok := want[n]; !ok || size != fi.Size() {
			return fmt.Errorf("follower state file %s: %d bytes, want %d", n, fi.Size(), size)
		}
		if err := sameContent(filepath.Join(dir, n), src[n]); err != nil {
			return fmt.Errorf("follower state file %s: %w", n, err)
		}
	}
	return nil
}

// sameContent fails unless the files at a and b hold the same bytes
// (compared by their SHA-256).
func sameContent(a, b string) error {
	da, err := fileSHA256(a)
	if err != nil {
		return err
	}
	db, err := fileSHA256(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(da, db) {
		return fmt.Errorf("content differs from %s", b)
	}
	return nil
}

// fileSHA256 returns the SHA-256 of the file at path.
func fileSHA256(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
