package snapshot

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/graft-raft/graft/vfs"
)

// TestCopyWriteBehind copies files larger than two write-behind steps
// onto the operating system's disk, whole chunks and odd ones, with
// holes, through the page cache and with Direct: what lands is what was
// sent.
func TestCopyWriteBehind(t *testing.T) {
	defer func(s int64) { writeBehindStep = s }(writeBehindStep)
	writeBehindStep = 64 << 10
	dir := t.TempDir()
	e := newCopyEnv(t, vfs.NewMem(), "/leader", vfs.Default, filepath.Join(dir, "follower"), FileServiceOptions{})
	big := pattern(1, int(40*writeBehindStep+12345))
	clear(big[writeBehindStep : 3*writeBehindStep+100])
	fs := files{"big": big, "odd": pattern(2, int(2*writeBehindStep+1)), "small": pattern(3, 100)}
	uri, want := e.serve(t, 20, 2, fs)
	for _, direct := range []bool{false, true} {
		for _, chunk := range []int64{0, 8 << 10, 3*writeBehindStep + 7} {
			dst := openStore(t, vfs.Default, filepath.Join(dir, fmt.Sprintf("dst-%d-%v", chunk, direct)))
			r, err := Copy(context.Background(), dst, uri, want, CopyOptions{Transport: e.tr, ChunkSize: chunk, Direct: direct, Logger: testLogger(t)})
			if err != nil {
				t.Fatalf("chunk %d, direct %v: %v", chunk, direct, err)
			}
			checkReader(t, r, 20, fs)
			_ = r.Close()
		}
	}
}
