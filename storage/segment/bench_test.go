package segment

import (
	"fmt"
	"testing"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/vfs"
)

// BenchmarkAppend appends batches of 256-byte entries to a log in a
// temporary directory on the real disk, so every batch pays a real fsync.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			l, err := Open(vfs.Default, b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			payload := make([]byte, 256)
			// The log keeps no reference to appended entries, so the
			// benchmark reuses them.
			es := make([]*raftpb.Entry, batch)
			for i := range es {
				es[i] = &raftpb.Entry{Term: 1, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL, Data: payload}
			}
			next := uint64(1)
			b.SetBytes(int64(batch * len(payload)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				for _, e := range es {
					e.Index = next
					next++
				}
				if err := l.Append(es); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n*batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkEntries reads runs of 64 entries of 256 bytes from a log on
// the real disk (served from the page cache).
func BenchmarkEntries(b *testing.B) {
	l, err := Open(vfs.Default, b.TempDir(), Options{SegmentSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const total, run = 16384, 64
	payload := make([]byte, 256)
	for i := uint64(1); i <= total; i += 256 {
		es := make([]*raftpb.Entry, 256)
		for j := range es {
			es[j] = &raftpb.Entry{Term: 1, Index: i + uint64(j), Data: payload}
		}
		if err := l.Append(es); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(run * int64(len(payload)))
	b.ReportAllocs()
	lo := uint64(1)
	for b.Loop() {
		es, err := l.Entries(lo, lo+run, 0)
		if err != nil || len(es) != run {
			b.Fatal(len(es), err)
		}
		lo = (lo+run*7)%(total-run) + 1
	}
}
