//go:build !linux

package vfs

import "os"

func openDirect(File) *os.File { return nil }

func aligned([]byte, int64) bool { return false }

func refused(error) bool { return false }
