package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// baseline is what the disk under the data directory does by itself, the
// floor under any durable log's latency and throughput.
type baseline struct {
	// fsync256 is the latency of appending 256 B to a growing file and
	// fsyncing it: what storage/segment does per batch.
	fsync256 latencies
	// fsync256x3 is fsync256 with three appenders at once, each on its own
	// file: what the three nodes of a cluster on one disk do.
	fsync256x3 latencies
	// fdatasync256 is the same with fdatasync (nil where unsupported).
	fdatasync256 *latencies
	// overwrite256 is a 256 B write into an already allocated file
	// followed by fdatasync: no size change, so no metadata to journal
	// (close to what bbolt does; nil where unsupported).
	overwrite256 *latencies
	// seqMiBps is sequential write bandwidth: 1 MiB writes, each followed
	// by fsync, to a growing file.
	seqMiBps float64
}

type latencies struct {
	p50, p99 time.Duration
	n        int
}

func (l latencies) String() string { return fmtDur(l.p50) + " / " + fmtDur(l.p99) }

// measureBaseline runs the disk measurements in a fresh directory under dir.
func measureBaseline(dir string, syncs int, seqBytes int64) (b baseline, err error) {
	d, err := os.MkdirTemp(dir, "baseline-")
	if err != nil {
		return b, err
	}
	defer os.RemoveAll(d)
	if b.fsync256, err = appendSyncLatency(filepath.Join(d, "fsync"), syncs, false, (*os.File).Sync); err != nil {
		return b, err
	}
	if b.fsync256x3, err = concurrentAppendSyncLatency(d, 3, syncs); err != nil {
		return b, err
	}
	if fdatasync != nil {
		appended, err := appendSyncLatency(filepath.Join(d, "fdatasync"), syncs, false, fdatasync)
		if err != nil {
			return b, err
		}
		overwritten, err := appendSyncLatency(filepath.Join(d, "overwrite"), syncs, true, fdatasync)
		if err != nil {
			return b, err
		}
		b.fdatasync256, b.overwrite256 = &appended, &overwritten
	}
	b.seqMiBps, err = seqWrite(filepath.Join(d, "seq"), seqBytes)
	return b, err
}

// appendSyncLatency writes 256 B records one after another and syncs after
// each, n times. With prealloc the file is first filled and synced, so the
// records overwrite allocated blocks and the size never changes.
func appendSyncLatency(name string, n int, prealloc bool, sync func(*os.File) error) (latencies, error) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return latencies{}, err
	}
	defer f.Close()
	rec := make([]byte, 256)
	rand.Read(rec)
	if prealloc {
		if _, err := f.Write(make([]byte, 256*n)); err != nil {
			return latencies{}, err
		}
		if err := f.Sync(); err != nil {
			return latencies{}, err
		}
	}
	var h histogram
	for i := range n {
		t0 := time.Now()
		if _, err := f.WriteAt(rec, int64(i*len(rec))); err != nil {
			return latencies{}, err
		}
		if err := sync(f); err != nil {
			return latencies{}, err
		}
		h.record(time.Since(t0))
	}
	return h.latencies(), nil
}

// concurrentAppendSyncLatency runs k appenders at once, each appending
// 256 B records to its own file and fsyncing after each, n times.
func concurrentAppendSyncLatency(dir string, k, n int) (latencies, error) {
	hs := make([]histogram, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("concurrent-%d", i)))
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			rec := make([]byte, 256)
			for range n {
				t0 := time.Now()
				if _, err := f.Write(rec); err != nil {
					errs[i] = err
					return
				}
				if err := f.Sync(); err != nil {
					errs[i] = err
					return
				}
				hs[i].record(time.Since(t0))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return latencies{}, err
	}
	var h histogram
	for i := range hs {
		h.merge(&hs[i])
	}
	return h.latencies(), nil
}

// seqWrite writes total bytes in 1 MiB writes, fsyncing after each, and
// returns MiB/s.
func seqWrite(name string, total int64) (float64, error) {
	f, err := os.Create(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return timeWrites(f, make([]byte, 1<<20), total, true)
}

// timeWrites fills buf with random bytes and writes it to f until total
// bytes are written, fsyncing after each write (syncEach) or once at the
// end, and returns MiB/s.
func timeWrites(f *os.File, buf []byte, total int64, syncEach bool) (float64, error) {
	rand.Read(buf)
	t0 := time.Now()
	for w := int64(0); w < total; w += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if syncEach || w+int64(len(buf)) >= total {
			if err := f.Sync(); err != nil {
				return 0, err
			}
		}
	}
	return float64(total) / (1 << 20) / time.Since(t0).Seconds(), nil
}
