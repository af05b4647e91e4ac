//go:build linux

package node_test

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes a child node process get SIGKILL when the test
// binary dies, so a crashed or timed-out test leaves no node running.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
