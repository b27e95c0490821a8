//go:build !linux

package main

import "os"

// preallocate extends f to size bytes; without fallocate the file is sparse.
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }
