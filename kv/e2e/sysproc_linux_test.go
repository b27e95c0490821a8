package e2e

import "syscall"

// sysProcAttr puts a node in its own process group, so that Cleanup kills
// whatever it started, and has the kernel kill it if the test binary dies
// (a timeout panic, a crash, a SIGKILL) so no node outlives the test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
