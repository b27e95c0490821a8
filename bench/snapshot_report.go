package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/graft-raft/graft/snapshot"
)

// Targets of the snapshot workload (from the issue).
const (
	snapTargetSpeedup  = 2.0      // graft's first catch-up vs hashicorp's
	snapTargetSeqShare = 0.70     // of the disk's sequential write bandwidth
	snapTargetSecond   = 0.02     // bytes of the second install / state bytes
	snapTargetRSS      = 64 << 20 // follower peak RSS above idle
)

func (rep *snapReport) pick(sys string) []*snapRun {
	var out []*snapRun
	for _, r := range rep.runs {
		if r.system == sys {
			out = append(out, r)
		}
	}
	return out
}

// pairedSnap divides graft's metric by hashicorp's for the runs of the
// same number (taken one right after the other).
func (rep *snapReport) pairedSnap(metric func(*snapRun) float64) []float64 {
	var out []float64
	for _, g := range rep.pick("graft") {
		for _, h := range rep.pick("hashicorp") {
			if g.run == h.run && metric(h) > 0 {
				out = append(out, metric(g)/metric(h))
			}
		}
	}
	return out
}

func snapCollect(rs []*snapRun, f func(*snapRun) float64) spread {
	var v []float64
	for _, r := range rs {
		v = append(v, f(r))
	}
	return spreadOf(v)
}

func snapFmtS(v float64) string     { return fmt.Sprintf("%.2f", v) }
func snapFmtMiBps(v float64) string { return fmt.Sprintf("%.0f", v) }
func snapFmtMiB(v float64) string   { return fmt.Sprintf("%.1f", v/(1<<20)) }
func snapFmtPct(v float64) string   { return fmt.Sprintf("%.2f%%", 100*v) }
func snapMiBps(b int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(b) / (1 << 20) / d.Seconds()
}

func snapPassFail(ok bool) string {
	if ok {
		return "**PASS**"
	}
	return "**FAIL**"
}

func (rep *snapReport) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cfg, d := rep.cfg, rep.data
	total1, total2 := d.total, d.total+d.extraSize
	w("# snapshot catch-up: %s, %s\n\n", strings.Join(cfg.systems, " vs "), rep.start.Format("2006-01-02 15:04 MST"))
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
	w("The state is %s of incompressible random bytes in %d files (generated once per invocation, in %s, not measured), the same files for both systems; both state machines are \"a directory of files\" and their snapshot is those files. ", snapHuman(d.total), len(d.files), snapSecs(rep.genTime))
	w("Each run starts a 2-node group (leader and follower 1) in this process with the full state in both nodes' state directories (hard links to the generated files, as if built by applies), applies %d commands of 64 B, snapshots on both nodes and compacts the log to %d trailing entries, so that a new node needs an install.\n\n", snapFlags.commands, snapTrailing)
	w("1. **Install 1, empty follower**: follower 3 starts as a **child process** with an empty data directory and is added as a voter (graft `AddPeer`, hashicorp `AddVoter`, both called once the child is up). Time runs from the child's exec until it reports an applied index at or past the leader's last index before the add.\n")
	w("2. **Install 2, lagging follower after a 1%% change**: the child stops (its data directory kept); the state gains one new random file of %s (1%% of the state, as an LSM compaction writes a new file); the group applies %d more commands, snapshots and compacts again; the child restarts on the same data directory and catches up again.\n\n", snapHuman(d.extraSize), snapFlags.commands)
	w("Measured in and around the child: **time** (exec → caught up), split into **startup** (exec → node started, before it serves: graft verifies its local snapshot's checksums here), **wait** (started → 16 KiB received: the leader reconnecting and, for hashicorp, its replication backoff) and **transfer** (16 KiB received → caught up); **bytes on the wire**: every byte the child read from and wrote to its sockets (its listener and its dialer wrap each connection with a counter; TCP/IP headers not counted); **RSS**: the child's VmHWM from `/proc/<pid>/status` read by the parent once it caught up, minus its VmRSS just after its node started and before it served anyone (idle); follower CPU is the child's user+system time over its whole life; leader-process CPU is this process's (both in-process nodes) from the child's exec to caught up. MiB/s is the state's bytes over the time.\n\n")
	w("- **graft**: `DefaultOptions()` with `SnapshotTrailingEntries=%d`, `Throttle` nil (unlimited), `Copy` %s, one `snapshot.FileService` per node; gRPC transport; storage/segment and storage/metafile; snapshot store `snapshot.Open`. `SaveSnapshot` hard-links the state files into the writer's directory and adds each; `LoadSnapshot` hard-links the installed files (already durable in the snapshot directory) into a fresh state directory and swaps it in. On restart the node verifies its newest snapshot (the CRC-32C of every file, read from the disk) and loads it.\n", snapTrailing, rep.copyDesc())
	w("- **hashicorp**: hashicorp/raft v1.7.3 + raft-boltdb/v2, set up as shared/PEERS.md says (`BatchApplyCh`, `MaxAppendEntries=1024`, BoltStore, TCP transport pool 3 / 10 s, `FileSnapshotStore` retain 1) with `TrailingLogs=%d`; snapshots by `raft.Snapshot()`. `FSM.Snapshot` hard-links the state files into a private directory; `Persist` streams a small header (names, sizes) and the files into the sink; `Restore` writes the files into a fresh state directory, fsyncing each, and swaps it in. The child's transport is `NewNetworkTransport` over a counting `StreamLayer`. The child runs with `NoSnapshotRestoreOnStart` (its state directory is durable by itself), so its restart does not rewrite the state from its local snapshot.\n\n", snapTrailing)

	if rep.before != nil {
		w("## Physical baselines\n\n")
		w("Over the state's %s, on the disk under `%s`, before and after the runs.\n\n", snapHuman(d.total), cfg.dir)
		w("| measurement | before | after |\n| --- | --- | --- |\n")
		row := func(name string, f func(*snapBaseline) string) {
			after := "–"
			if rep.after != nil {
				after = f(rep.after)
			}
			w("| %s | %s | %s |\n", name, f(rep.before), after)
		}
		row("sequential write, 1 MiB writes + fsync each (disk.go `seqWrite`)", func(b *snapBaseline) string {
			return fmt.Sprintf("%.0f MiB/s (%s)", b.seqMiBps, snapSecs(time.Duration(float64(d.total)/(1<<20)/b.seqMiBps*1e9)))
		})
		row("sequential write, 1 MiB `O_DIRECT` writes, one fsync at the end (as `dd bs=1M oflag=direct`)", func(b *snapBaseline) string {
			if b.directMiBps == 0 {
				return "not measured (no O_DIRECT here)"
			}
			return fmt.Sprintf("%.0f MiB/s (%s)", b.directMiBps, snapSecs(time.Duration(float64(d.total)/(1<<20)/b.directMiBps*1e9)))
		})
		row(fmt.Sprintf("the %d files written whole, 1 MiB writes, fsync each file", len(d.files)), func(b *snapBaseline) string {
			return fmt.Sprintf("%.0f MiB/s (%s)", snapMiBps(d.total, b.filesTime), snapSecs(b.filesTime))
		})
		row(fmt.Sprintf("raw loopback TCP copy of the %d files into new files, 1 MiB buffers, fsync each", len(d.files)), func(b *snapBaseline) string {
			return fmt.Sprintf("%.0f MiB/s (%s)", snapMiBps(b.tcpWritten, b.tcpTime), snapSecs(b.tcpTime))
		})
		w("\n")
	}

	phase := func(title string, stateBytes int64, get func(*snapRun) *snapChildResult) {
		w("## %s\n\n", title)
		w("Median over %d runs of each system, (min–max) across them.\n\n", cfg.runs)
		w("| system | time s | MiB/s | startup s | wait s | transfer s | bytes on the wire | of the state | follower RSS peak − idle MiB | idle MiB | follower CPU s | leader-process CPU s |\n")
		w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, sys := range cfg.systems {
			rs := rep.pick(sys)
			g := func(f func(*snapChildResult) float64) spread {
				return snapCollect(rs, func(r *snapRun) float64 { return f(get(r)) })
			}
			wire := g(func(p *snapChildResult) float64 { return float64(p.read + p.written) })
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sys,
				g(func(p *snapChildResult) float64 { return p.total.Seconds() }).format(snapFmtS),
				g(func(p *snapChildResult) float64 { return snapMiBps(stateBytes, p.total) }).format(snapFmtMiBps),
				g(func(p *snapChildResult) float64 { return p.startup.Seconds() }).format(snapFmtS),
				g(func(p *snapChildResult) float64 { return p.wait.Seconds() }).format(snapFmtS),
				g(func(p *snapChildResult) float64 { return p.transfer.Seconds() }).format(snapFmtS),
				wire.format(func(v float64) string { return snapHuman(int64(v)) }),
				snapFmtPct(wire.med/float64(stateBytes)),
				g(func(p *snapChildResult) float64 { return float64(p.peakRSS - p.idleRSS) }).format(snapFmtMiB),
				snapFmtMiB(g(func(p *snapChildResult) float64 { return float64(p.idleRSS) }).med),
				g(func(p *snapChildResult) float64 { return p.childCPU.Seconds() }).format(snapFmtS),
				g(func(p *snapChildResult) float64 { return p.parentCPU.Seconds() }).format(snapFmtS))
		}
		if slices.Contains(cfg.systems, "graft") && slices.Contains(cfg.systems, "hashicorp") {
			ratio := func(f func(*snapChildResult) float64) string {
				return spreadOf(rep.pairedSnap(func(r *snapRun) float64 { return f(get(r)) })).format(fmtRatio)
			}
			w("| **graft / hashicorp** | %s | | %s | %s | %s | %s | | %s | | %s | %s |\n",
				ratio(func(p *snapChildResult) float64 { return p.total.Seconds() }),
				ratio(func(p *snapChildResult) float64 { return p.startup.Seconds() }),
				ratio(func(p *snapChildResult) float64 { return p.wait.Seconds() }),
				ratio(func(p *snapChildResult) float64 { return p.transfer.Seconds() }),
				ratio(func(p *snapChildResult) float64 { return float64(p.read + p.written) }),
				ratio(func(p *snapChildResult) float64 { return float64(p.peakRSS - p.idleRSS) }),
				ratio(func(p *snapChildResult) float64 { return p.childCPU.Seconds() }),
				ratio(func(p *snapChildResult) float64 { return p.parentCPU.Seconds() }))
			w("\nRatios are per pair of runs of the same number, taken one right after the other, median (min–max): below 1 is less time, fewer bytes, less memory or CPU for graft.\n")
		}
		w("\n")
	}
	phase(fmt.Sprintf("Install 1: empty follower, %s", snapHuman(total1)), total1, func(r *snapRun) *snapChildResult { return &r.first })
	phase(fmt.Sprintf("Install 2: lagging follower after a 1%% change, %s", snapHuman(total2)), total2, func(r *snapRun) *snapChildResult { return &r.second })

	if gs := rep.pick("graft"); len(gs) > 0 && len(gs[0].first.graftIO) == 6 {
		w("## Where graft's follower spends the install\n\n")
		clock := ""
		if snapFlags.direct {
			clock = " (the copier's direct writes, made through a descriptor of its own, pass the clock: \"writes\" counts the writes through the page cache only)"
		}
		w("The child wraps its snapshot store's filesystem and its transport's `GetFile` with clocks%s. Times are summed over the copier's %d parallel file downloads, so \"GetFile / parallel\" is the share of the transfer's wall time the downloads spent waiting for chunks; a downloaded file's sync runs beside the next downloads. Medians over runs.\n\n", clock, rep.parallel())
		w("| install | transfer s | GetFile calls | GetFile s (summed) | GetFile / parallel s | per call ms | writes s (summed) | syncs s (summed) |\n")
		w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for k, get := range []func(*snapRun) *snapChildResult{func(r *snapRun) *snapChildResult { return &r.first }, func(r *snapRun) *snapChildResult { return &r.second }} {
			med := func(f func(p *snapChildResult) float64) float64 {
				return snapCollect(gs, func(r *snapRun) float64 { return f(get(r)) }).med
			}
			io := func(i int) func(p *snapChildResult) float64 {
				return func(p *snapChildResult) float64 {
					if len(p.graftIO) != 6 {
						return 0
					}
					return float64(p.graftIO[i])
				}
			}
			calls := med(io(1))
			w("| %d | %.2f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", k+1, med(func(p *snapChildResult) float64 { return p.transfer.Seconds() }),
				calls, med(io(0))/1e9, med(io(0))/1e9/float64(rep.parallel()), med(io(0))/1e6/max(calls, 1), med(io(2))/1e9, med(io(4))/1e9)
		}
		w("\n")
	}

	w("## Targets\n\n")
	for _, line := range rep.targets() {
		w("- %s\n", line)
	}
	w("\n")

	if notes := rep.notes(); len(notes) > 0 {
		w("## Notes\n\n")
		for _, n := range notes {
			w("- %s\n", n)
		}
		w("\n")
	}

	w("## Every run\n\n")
	w("| run | system | install | time s | startup s | wait s | transfer s | read | written | RSS idle MiB | RSS peak MiB | follower CPU s | leader-process CPU s |\n")
	w("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rep.runs {
		for k, p := range []snapChildResult{r.first, r.second} {
			w("| %d | %s | %d | %.2f | %.2f | %.2f | %.2f | %s | %s | %s | %s | %.2f | %.2f |\n", r.run, r.system, k+1,
				p.total.Seconds(), p.startup.Seconds(), p.wait.Seconds(), p.transfer.Seconds(),
				snapHuman(p.read), snapHuman(p.written), snapFmtMiB(float64(p.idleRSS)), snapFmtMiB(float64(p.peakRSS)),
				p.childCPU.Seconds(), p.parentCPU.Seconds())
		}
	}
	return b.String()
}

// targets checks the targets and returns one PASS/FAIL line each.
func (rep *snapReport) targets() []string {
	d := rep.data
	gs := rep.pick("graft")
	if len(gs) == 0 {
		return []string{"graft did not run: no target checked"}
	}
	var out []string
	if len(rep.pick("hashicorp")) > 0 {
		ratios := rep.pairedSnap(func(r *snapRun) float64 { return r.first.total.Seconds() })
		var speedups []float64
		for _, v := range ratios {
			speedups = append(speedups, 1/v)
		}
		s := spreadOf(speedups)
		out = append(out, fmt.Sprintf("%s graft's first catch-up of %s is %.2f× as fast as hashicorp's (median of paired runs, %.2f–%.2f; target ≥ %.0f×)",
			snapPassFail(s.med >= snapTargetSpeedup), snapHuman(d.total), s.med, s.lo, s.hi, snapTargetSpeedup))
	}
	seq := rep.before.seqMiBps
	if rep.after != nil {
		seq = max(seq, rep.after.seqMiBps)
	}
	// The copier syncs each file once, as the files-whole baseline does,
	// and writes past the page cache, as the direct one does; the target
	// is held to the fastest of the three baselines.
	whole := snapMiBps(d.total, rep.before.filesTime)
	direct := rep.before.directMiBps
	if rep.after != nil {
		whole = max(whole, snapMiBps(d.total, rep.after.filesTime))
		direct = max(direct, rep.after.directMiBps)
	}
	ref := max(seq, whole, direct)
	bw := snapCollect(gs, func(r *snapRun) float64 { return snapMiBps(d.total, r.first.total) })
	out = append(out, fmt.Sprintf("%s graft's first catch-up runs at %.0f MiB/s (median; %.0f–%.0f) = %.0f%% of the disk's sequential write bandwidth with an fsync per 1 MiB, %.0f MiB/s, %.0f%% of its bandwidth with 1 MiB O_DIRECT writes, %.0f MiB/s, and %.0f%% of the rate at which the same files are written whole with an fsync per file, %.0f MiB/s (each the higher of the measurements before and after; target ≥ %.0f%% of the highest of the three)",
		snapPassFail(bw.med >= snapTargetSeqShare*ref), bw.med, bw.lo, bw.hi, 100*bw.med/seq, seq, 100*bw.med/max(direct, 1e-9), direct, 100*bw.med/whole, whole, 100*snapTargetSeqShare))
	total2 := d.total + d.extraSize
	second := snapCollect(gs, func(r *snapRun) float64 { return float64(r.second.read + r.second.written) })
	out = append(out, fmt.Sprintf("%s graft's second install (after the 1%% change) moves %s on the wire at most (median %s) = %.2f%% of the %s state (target ≤ %.0f%%)",
		snapPassFail(second.hi <= snapTargetSecond*float64(total2)), snapHuman(int64(second.hi)), snapHuman(int64(second.med)),
		100*second.hi/float64(total2), snapHuman(total2), 100*snapTargetSecond))
	var worst int64
	for _, r := range gs {
		worst = max(worst, r.first.peakRSS-r.first.idleRSS, r.second.peakRSS-r.second.idleRSS)
	}
	out = append(out, fmt.Sprintf("%s graft's follower peak RSS is at most %s above its idle RSS (worst of both installs over all runs; target ≤ %s)",
		snapPassFail(worst <= snapTargetRSS), snapHuman(worst), snapHuman(snapTargetRSS)))
	return out
}

// parallel is the graft follower's Copy.Parallel.
func (rep *snapReport) parallel() int {
	if snapFlags.parallel > 0 {
		return snapFlags.parallel
	}
	return snapshot.DefaultParallel
}

func (rep *snapReport) copyDesc() string {
	chunk := int64(snapFlags.chunk)
	if chunk == 0 && snapFlags.parallel == 0 && !snapFlags.direct {
		return fmt.Sprintf("at the snapshot package defaults (%s chunks, %d files in parallel, writes through the page cache)", snapHuman(snapshot.DefaultChunkSize), snapshot.DefaultParallel)
	}
	if chunk == 0 {
		chunk = snapshot.DefaultChunkSize
	}
	writes := "through the page cache"
	if snapFlags.direct {
		writes = "`Direct` (O_DIRECT)"
	}
	return fmt.Sprintf("**not at its defaults: %s chunks, %d files in parallel, writes %s** (-snap-graft-chunk, -snap-graft-parallel, -snap-graft-direct)", snapHuman(chunk), rep.parallel(), writes)
}

// notes reads the results: what the targets' numbers leave out.
func (rep *snapReport) notes() []string {
	d := rep.data
	gs, hs := rep.pick("graft"), rep.pick("hashicorp")
	var out []string
	gib := float64(d.total) / (1 << 30)
	cpu := func(rs []*snapRun) float64 {
		return snapCollect(rs, func(r *snapRun) float64 { return (r.first.childCPU + r.first.parentCPU).Seconds() / gib }).med
	}
	if len(gs) > 0 && len(hs) > 0 {
		tr := spreadOf(rep.pairedSnap(func(r *snapRun) float64 { return r.first.transfer.Seconds() }))
		busy := func(rs []*snapRun) float64 {
			return snapCollect(rs, func(r *snapRun) float64 {
				return (r.first.childCPU + r.first.parentCPU).Seconds() / r.first.total.Seconds()
			}).med
		}
		tcp := snapMiBps(rep.before.tcpWritten, rep.before.tcpTime)
		if rep.after != nil {
			tcp = max(tcp, snapMiBps(rep.after.tcpWritten, rep.after.tcpTime))
		}
		rate := func(rs []*snapRun) float64 {
			return snapCollect(rs, func(r *snapRun) float64 { return snapMiBps(d.total, r.first.total) }).med
		}
		out = append(out, fmt.Sprintf("Install 1 on its transfer alone (leaving out process start and the add): graft / hashicorp time %s. The raw loopback TCP copy of the same files ran at %.0f MiB/s (the higher of before and after); graft's install at %.0f MiB/s and hashicorp's at %.0f MiB/s (medians, whole install). Per GiB installed, follower + leader-process CPU is %.1f s for graft and %.1f s for hashicorp (medians); graft keeps %.2f of the 2 cores busy during the install, hashicorp %.2f.",
			tr.format(fmtRatio), tcp, rate(gs), rate(hs), cpu(gs), cpu(hs), busy(gs), busy(hs)))
	}
	if len(gs) > 0 && len(gs[0].first.graftIO) == 6 {
		share := snapCollect(gs, func(r *snapRun) float64 {
			if r.first.transfer <= 0 {
				return 0
			}
			return float64(r.first.graftIO[0]) / float64(rep.parallel()) / float64(r.first.transfer)
		}).med
		disk := snapCollect(gs, func(r *snapRun) float64 {
			if r.first.transfer <= 0 {
				return 0
			}
			return float64(r.first.graftIO[2]+r.first.graftIO[4]) / float64(rep.parallel()) / float64(r.first.transfer)
		}).med
		clocked := "writes"
		if snapFlags.direct {
			clocked = "clocked writes (through the page cache; its direct writes are not clocked)"
		}
		out = append(out, fmt.Sprintf("graft's follower spends %.0f%% of install 1's transfer waiting for GetFile answers (one unary gRPC call per %s chunk, %d files at a time) and %.0f%% in its %s and syncs (both summed over the parallel downloads and the syncs beside them, divided by the downloads' number). Profile the child with -snap-profile to see where the per-chunk time goes.",
			100*share, snapHuman(rep.chunk()), rep.parallel(), 100*disk, clocked))
	}
	if len(gs) > 0 {
		st := snapCollect(gs, func(r *snapRun) float64 { return r.second.startup.Seconds() }).med
		tr := snapCollect(gs, func(r *snapRun) float64 { return r.second.transfer.Seconds() }).med
		out = append(out, fmt.Sprintf("Install 2, graft: the restart's startup (%.2f s median) is mostly the node verifying its local %s snapshot (reading every file from the disk for its CRC-32C) before it loads it; the install itself, which hard-links the %d unchanged files and fetches only the new one, takes %.2f s.",
			st, snapHuman(d.total), len(d.files), tr))
	}
	if len(hs) > 0 {
		wt := snapCollect(hs, func(r *snapRun) float64 { return r.second.wait.Seconds() }).med
		out = append(out, fmt.Sprintf("Install 2, hashicorp: the wait (%.2f s median) is the leader's replication backoff for a follower that was down (it doubles up to about 10 s in v1.7.3), not snapshot work; hashicorp has no incremental install, so it sends the whole state again, and its follower writes it twice (into the snapshot store, then through Restore into the state directory) and reads it back once to check the CRC.", wt))
	}
	return out
}

func (rep *snapReport) chunk() int64 {
	if snapFlags.chunk > 0 {
		return int64(snapFlags.chunk)
	}
	return snapshot.DefaultChunkSize
}
