package segment

import (
	"fmt"
	"log/slog"
)

// DefaultSegmentSize is the SegmentSize used when Options.SegmentSize is 0.
const DefaultSegmentSize = 64 << 20

// Options configure a Log. The zero value is valid and means the defaults.
type Options struct {
	// SegmentSize is the size in bytes past which the in-progress segment
	// is closed and the next Append starts a new one. A segment exceeds it
	// by at most one batch. Larger segments mean fewer files and fewer
	// directory syncs; smaller ones let TruncatePrefix free disk space in
	// finer steps and bound the memory Open needs to scan a segment.
	// 0 means DefaultSegmentSize; negative is invalid.
	SegmentSize int64
	// Logger receives recovery events (a torn tail truncated, files
	// removed at open) with the fields dir, file, offset and index. nil
	// discards them.
	Logger *slog.Logger
}

// DefaultOptions returns the options used for zero fields.
func DefaultOptions() Options {
	return Options{SegmentSize: DefaultSegmentSize}
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
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
