package snapshot

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"hash/crc32"

	"github.com/graft-raft/graft/raftpb"
)

// A file of a snapshot has two checksums in the meta table, computed in
// one pass when the snapshot is saved: its SHA-256 is its identity (an
// install reuses a local file of the same size and SHA-256 instead of
// fetching it, so a collision would install the wrong content), and its
// CRC-32C is what an install and a restart check the content against.
// CRC-32C catches the corruption that disks, memory and networks cause as
// surely as a storage engine's blocks need (it misses a random corruption
// once in 2^32) for a fifteenth of SHA-256's CPU (22 GB/s against
// 1.4 GB/s with the SHA extensions, on the bench machine), and SHA-256's
// strength protects nothing more here: whoever can change a file on the
// leader's disk can change its meta table too. In the bench's 1 GiB
// catch-up, checking SHA-256 was half of the follower's CPU; with CRC-32C
// the install took 1.09-1.14 s where it took 1.50-1.65 s (graft-only
// A/B, 3 alternating pairs of 2 runs).

// checker computes a file's checksum from its content, written to it, and
// compares it with the file's entry in a meta table: the CRC-32C when the
// entry has one, the SHA-256 for the tables of older snapshots.
type checker struct {
	want *raftpb.SnapshotFile
	hash.Hash
}

func newChecker(want *raftpb.SnapshotFile) *checker {
	if want.Crc32C != nil {
		return &checker{want: want, Hash: crc32.New(crcTable)}
	}
	return &checker{want: want, Hash: sha256.New()}
}

// mismatch returns "" when the content written matches, else the
// checksum found and the one wanted.
func (c *checker) mismatch() string {
	if crc, ok := c.Hash.(hash.Hash32); ok {
		if got := crc.Sum32(); got != c.want.GetCrc32C() {
			return fmt.Sprintf("crc32c %08x, want %08x", got, c.want.GetCrc32C())
		}
		return ""
	}
	if sum := c.Sum(nil); !bytes.Equal(sum, c.want.GetSha256()) {
		return fmt.Sprintf("sha256 %x, want %x", sum, c.want.GetSha256())
	}
	return ""
}
