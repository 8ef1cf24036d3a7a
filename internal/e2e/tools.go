package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
)

// Tools are the host commands the image builder and the virtual machine
// run, all userspace: no mounts, loop devices or root privileges.
var Tools = []string{
	"qemu-system-x86_64", "grub-mkstandalone", "grub-editenv",
	"mkfs.vfat", "mmd", "mcopy", "sfdisk", "mkfs.ext4", "e2fsck", "debugfs",
	"busybox", "apt-get", "apt-cache", "dpkg-deb",
}

// LookTool returns the path of a host command: from PATH, or from
// /usr/sbin or /sbin, which a user's PATH often lacks. It returns "" when
// the command is missing.
func LookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// commandContext is exec.CommandContext for a host command found with
// LookTool; a missing command fails when it is run.
func commandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	if p := LookTool(name); p != "" {
		name = p
	}
	return exec.CommandContext(ctx, name, args...)
}
