package poll

import (
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// systemFacts adds the kernel release, the machine and the free space of
// dataDir.
func systemFacts(dataDir string, inv inventory) {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		inv.set("kernel", unix.ByteSliceToString(u.Release[:]))
		inv.set("hardware", unix.ByteSliceToString(u.Machine[:]))
	}
	if dataDir == "" {
		return
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil {
		inv.set("error.data.free", err.Error())
		return
	}
	inv.set("data.free", strconv.FormatUint(st.Bavail*uint64(st.Bsize), 10))
}

// killGroupOnCancel runs cmd in its own process group and kills the whole
// group when its context ends, so that a script's children die with it.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
