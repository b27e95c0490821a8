package segment

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/storage/memory"
	"github.com/graft-raft/graft/vfs"
)

// TestMatchesMemory drives a segment.Log and a memory.Log with the same
// random operations, including crashes and reopens of the segment log,
// and checks they always agree. The seed is printed on failure.
func TestMatchesMemory(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed))
		mem := vfs.NewMem()
		opts := Options{SegmentSize: int64(64 + rng.IntN(512))}
		seg, err := Open(mem, dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		ref := memory.NewLog()
		term := uint64(1)
		var history []string // printed on failure
		for step := range 300 {
			fail := func(format string, args ...any) {
				t.Helper()
				for _, h := range history {
					t.Log(h)
				}
				t.Fatalf("seed %d step %d: "+format, append([]any{seed, step}, args...)...)
			}
			do := func(format string, args ...any) { history = append(history, fmt.Sprintf(format, args...)) }
			first, last := ref.FirstIndex(), ref.LastIndex()
			if seg.FirstIndex() != first || seg.LastIndex() != last {
				fail("segment log is [%d, %d], memory log [%d, %d]", seg.FirstIndex(), seg.LastIndex(), first, last)
			}
			// Indexes around the log's range.
			pick := func() uint64 { return uint64(max(1, int64(first)+int64(rng.IntN(int(last+5-first)))-2)) }
			var errSeg, errRef error
			switch r := rng.IntN(100); {
			case r < 45:
				n := 1 + rng.IntN(8)
				if rng.IntN(10) == 0 {
					term++
				}
				es := make([]*raftpb.Entry, n)
				for i := range es {
					idx := last + 1 + uint64(i)
					es[i] = &raftpb.Entry{Index: idx, Term: term, Data: bytes.Repeat([]byte{byte(idx)}, rng.IntN(40))}
				}
				if rng.IntN(20) == 0 {
					es[0].Index++ // not contiguous
				}
				do("Append [%d, %d] term %d", es[0].Index, es[n-1].Index, term)
				errSeg, errRef = seg.Append(es), ref.Append(es)
			case r < 55:
				k := pick()
				do("TruncateSuffix(%d)", k)
				errSeg, errRef = seg.TruncateSuffix(k), ref.TruncateSuffix(k)
			case r < 62:
				f := pick()
				do("TruncatePrefix(%d)", f)
				errSeg, errRef = seg.TruncatePrefix(f), ref.TruncatePrefix(f)
			case r < 65:
				n := pick()
				do("Reset(%d)", n)
				errSeg, errRef = seg.Reset(n), ref.Reset(n)
			case r < 70:
				crash := rng.IntN(2) == 0
				do("reopen (crash: %v)", crash)
				if crash {
					mem.Crash()
				}
				seg.Close()
				if seg, err = Open(mem, dir, opts); err != nil {
					fail("reopen: %v", err)
				}
			case r < 85:
				lo, hi := pick(), pick()
				maxBytes := uint64(rng.IntN(100))
				got, errSeg := seg.Entries(lo, hi, maxBytes)
				want, errRef := ref.Entries(lo, hi, maxBytes)
				if !sameError(errSeg, errRef) {
					fail("Entries(%d, %d, %d) = %v, memory %v", lo, hi, maxBytes, errSeg, errRef)
				}
				if len(got) != len(want) {
					fail("Entries(%d, %d, %d) returned %d entries, memory %d", lo, hi, maxBytes, len(got), len(want))
				}
				for i := range got {
					g, w := got[i], want[i]
					if g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || !bytes.Equal(g.Data, w.Data) {
						fail("entry %d differs: %v vs %v", w.Index, g, w)
					}
				}
			default:
				i := pick()
				a, errSeg := seg.Term(i)
				b, errRef := ref.Term(i)
				if a != b || !sameError(errSeg, errRef) {
					fail("Term(%d) = %d, %v; memory %d, %v", i, a, errSeg, b, errRef)
				}
			}
			if !sameError(errSeg, errRef) {
				fail("segment error %v, memory error %v", errSeg, errRef)
			}
		}
		seg.Close()
	}
}

func sameError(a, b error) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	for _, target := range []error{storage.ErrOutOfRange, storage.ErrClosed, storage.ErrCorrupt} {
		if errors.Is(a, target) != errors.Is(b, target) {
			return false
		}
	}
	return true
}
