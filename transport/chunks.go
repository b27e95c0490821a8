package transport

import (
	"math/bits"
	"sync"
)

// A snapshot install moves gigabytes through GetFile, a chunk (1 MiB by
// default) per response. Allocating, zeroing and collecting a fresh buffer
// for every chunk costs the serving process more CPU than reading the
// file, so the FileHandler that fills a response's Data and the transport
// that sends it share buffers through ChunkBuffer and RecycleChunk.
//
// Buffers are pooled in power-of-two size classes from 4 KiB to 64 MiB (a
// smaller request gets a 4 KiB buffer); larger requests are plain
// allocations.
const (
	minChunkShift = 12 // 4 KiB
	maxChunkShift = 26 // 64 MiB, DefaultMaxMessageSize of transport/grpc
)

var chunkPools [maxChunkShift + 1]sync.Pool // index: log2 of the capacity

// ChunkBuffer returns a buffer of length n for a GetFile response's Data.
// Its contents are arbitrary: the caller overwrites what it uses.
func ChunkBuffer(n int) []byte {
	if n <= 0 {
		return nil
	}
	shift := bits.Len(uint(n - 1)) // the smallest class holding n
	shift = max(shift, minChunkShift)
	if shift > maxChunkShift {
		return make([]byte, n)
	}
	if p, ok := chunkPools[shift].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<shift)
}

// RecycleChunk offers b for reuse by a later ChunkBuffer. Call it only
// when nothing refers to b any more. A transport calls it for a GetFile
// response's Data once the response is sent, and a copier once it has
// written a received chunk out; a buffer that ChunkBuffer did not hand out
// is kept only if its capacity is one of the pool's size classes.
func RecycleChunk(b []byte) {
	c := cap(b)
	if c < 1<<minChunkShift || c > 1<<maxChunkShift || c&(c-1) != 0 {
		return
	}
	b = b[:0]
	chunkPools[bits.TrailingZeros(uint(c))].Put(&b)
}
