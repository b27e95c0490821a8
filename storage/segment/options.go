package segment

import (
	"fmt"
	"log/slog"
)

// DefaultSegmentSize is the SegmentSize used when Options.SegmentSize is 0.
const DefaultSegmentSize = 64 << 20

// DefaultPreallocate is the Preallocate used when Options.Preallocate is 0.
const DefaultPreallocate = 1 << 20

// Options configure a Log. The zero value is valid and means the defaults.
type Options struct {
	// SegmentSize is the size in bytes past which the in-progress segment
	// is closed and the next Append starts a new one. A segment exceeds it
	// by at most one batch. Larger segments mean fewer files and fewer
	// directory syncs; smaller ones let TruncatePrefix free disk space in
	// finer steps and bound the memory Open needs to scan a segment.
	// 0 means DefaultSegmentSize; negative is invalid.
	SegmentSize int64
	// Preallocate is how many bytes of zeros the in-progress segment
	// keeps written and synced past its last frame. An Append that fits
	// in them overwrites allocated blocks without changing the file's
	// size, so it needs only fdatasync(2), not a full fsync; one that
	// does not fit writes its frames and the next Preallocate bytes of
	// zeros, and fsyncs. The zeros are cut when a segment is closed or
	// the log is reopened, and never reach past SegmentSize. When the
	// disk has no room for them, Append writes just the frames. 0 means
	// DefaultPreallocate; negative turns preallocation off.
	Preallocate int64
	// Logger receives recovery events (a torn tail truncated, files
	// removed at open) with the fields dir, file, offset and index. nil
	// discards them.
	Logger *slog.Logger
}

// DefaultOptions returns the options used for zero fields.
func DefaultOptions() Options {
	return Options{SegmentSize: DefaultSegmentSize, Preallocate: DefaultPreallocate}
}

// Validate reports whether o can be used, naming the bad value if not.
func (o Options) Validate() error {
	if o.SegmentSize < 0 {
		return fmt.Errorf("segment: Options.SegmentSize %d is negative", o.SegmentSize)
	}
	return nil
}

// withDefaults returns a copy of o with zero fields filled in.
func (o Options) withDefaults() Options {
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	switch {
	case o.Preallocate == 0:
		o.Preallocate = DefaultPreallocate
	case o.Preallocate < 0:
		o.Preallocate = 0
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
