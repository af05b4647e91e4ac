//go:build !linux

package main

import "os/exec"

// setParentDeathSignal does nothing where there is no parent-death signal;
// the driver stops the nodes itself when it returns.
func setParentDeathSignal(*exec.Cmd) {}
