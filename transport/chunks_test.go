package transport

import "testing"

func TestChunkBufferSizes(t *testing.T) {
	for _, n := range []int{1, 100, 4096, 4097, 1 << 20, 1<<20 + 1, 1 << 26} {
		b := ChunkBuffer(n)
		if len(b) != n {
			t.Errorf("ChunkBuffer(%d) has length %d", n, len(b))
		}
		if c := cap(b); c&(c-1) != 0 || c < n || c >= 2*max(n, 4096) {
			t.Errorf("ChunkBuffer(%d) has capacity %d, want the size class holding it", n, c)
		}
		RecycleChunk(b)
		if b := ChunkBuffer(n); len(b) != n {
			t.Errorf("after a recycle, ChunkBuffer(%d) has length %d", n, len(b))
		}
	}
	if b := ChunkBuffer(0); b != nil {
		t.Errorf("ChunkBuffer(0) = %d bytes, want nil", len(b))
	}
	if b := ChunkBuffer(1<<26 + 1); len(b) != 1<<26+1 {
		t.Errorf("an oversized ChunkBuffer has length %d", len(b))
	}
}

// Buffers of capacities outside the size classes are dropped, so a later
// ChunkBuffer never returns one too small for its class.
func TestRecycleChunkIgnoresForeignCapacities(t *testing.T) {
	for _, c := range []int{0, 100, 5000, 3 << 20, 1 << 27} {
		RecycleChunk(make([]byte, 0, c))
	}
	for range 100 {
		if b := ChunkBuffer(8192); len(b) != 8192 || cap(b) != 8192 {
			t.Fatalf("ChunkBuffer(8192): length %d, capacity %d", len(b), cap(b))
		}
	}
}
