package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has the node processes stopped when this driver
// goes, however it ends.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
