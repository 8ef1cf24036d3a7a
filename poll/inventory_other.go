//go:build !linux

package poll

import "os/exec"

// systemFacts adds nothing outside Linux.
func systemFacts(string, inventory) {}

// killGroupOnCancel keeps exec's default of killing the process only.
func killGroupOnCancel(*exec.Cmd) {}
