//go:build !unix

package audit

import "os/exec"

// killGroup leaves cmd's cancellation as it is (kill the process only).
func killGroup(*exec.Cmd) {}
