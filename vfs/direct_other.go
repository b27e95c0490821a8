//go:build !linux

package vfs

func openDirect(File) directFile { return nil }

func aligned([]byte, int64) bool { return false }

func refused(error) bool { return false }
