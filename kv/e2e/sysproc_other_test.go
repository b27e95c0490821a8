//go:build unix && !linux

package e2e

import "syscall"

// sysProcAttr puts a node in its own process group, so that Cleanup kills
// whatever it started. (Only Linux can also tie the node's life to the
// test binary's.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
