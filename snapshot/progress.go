package snapshot

import (
	"sync"
	"time"
)

// Progress is the live state of a Copy: Copy updates it, Snapshot reads
// it. The zero value is ready to use; it is safe for concurrent use, and a
// nil *Progress reads as zero.
type Progress struct {
	mu   sync.Mutex
	info ProgressInfo
}

// ProgressInfo is a point-in-time view of a Copy's progress.
type ProgressInfo struct {
	// FilesDone counts the files complete (reused or downloaded and
	// verified) out of FilesTotal.
	FilesDone, FilesTotal int
	// BytesDone counts the bytes of complete files plus those received of
	// files in progress, out of BytesTotal (the snapshot's size).
	BytesDone, BytesTotal int64
	// BytesReused counts the bytes of files linked from the previous
	// snapshot or kept from an interrupted Copy instead of fetched.
	BytesReused int64
	// BytesFetched counts the file bytes actually downloaded, including
	// those fetched again after a checksum mismatch.
	BytesFetched int64
	// BytesPerSec is BytesFetched divided by the time since Started.
	BytesPerSec float64
	// Started is when the Copy began.
	Started time.Time
}

// Snapshot returns the current progress.
func (p *Progress) Snapshot() ProgressInfo {
	if p == nil {
		return ProgressInfo{}
	}
	p.mu.Lock()
	info := p.info
	p.mu.Unlock()
	if !info.Started.IsZero() {
		if el := time.Since(info.Started).Seconds(); el > 0 {
			info.BytesPerSec = float64(info.BytesFetched) / el
		}
	}
	return info
}

// update runs fn on the progress under its lock.
func (p *Progress) update(fn func(*ProgressInfo)) {
	p.mu.Lock()
	fn(&p.info)
	p.mu.Unlock()
}
