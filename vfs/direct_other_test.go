//go:build !linux

package vfs

func canDirect(string) bool { return false }
