//go:build !unix

package slot

import "os/exec"

// killProcessGroupOnCancel leaves exec's default (kill the process only)
// where process groups do not exist.
func killProcessGroupOnCancel(*exec.Cmd) {}
