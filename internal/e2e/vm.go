package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmware of the test machines: Debian's OVMF build for 4 MiB flash.
const (
	// OVMFCode is the firmware, mapped read-only.
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"

	// OVMFVars is the template of the firmware's variable store; each
	// machine gets a writable copy.
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// DefaultMemory is a test machine's memory in MiB.
const DefaultMemory = 512

// ServerConfigName is the fw_cfg item through which a machine learns the
// URL of its server; the guest reads it from
// /sys/firmware/qemu_fw_cfg/by_name/opt/rota/server/raw.
const ServerConfigName = "opt/rota/server"

// VMOptions describes a test machine.
type VMOptions struct {
	// Disk is the disk image, attached as a virtio disk.
	Disk string

	// Vars is the machine's writable copy of OVMFVars.
	Vars string

	// Server is the URL the guest's agent polls, such as
	// http://10.0.2.2:8080: QEMU's user network maps 10.0.2.2 to the
	// host's loopback interface.
	Server string

	// Log receives the serial console, appended; required.
	Log io.Writer

	// Memory is in MiB; zero means DefaultMemory.
	Memory int
}

// Line is a line of the serial console.
type Line struct {
	// Time is when the host read it.
	Time time.Time

	// Text is the line without terminal control sequences.
	Text string
}

// VM is a running QEMU process: one x86_64 machine emulated with TCG,
// booting OVMF, with its serial console captured. Reboots of the guest
// happen inside the same process; Kill ends it as a power cut would.
type VM struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // the process's exit error, once exited is closed

	mu    sync.Mutex
	cond  *sync.Cond
	lines []Line
	next  int // the first line the next Expect looks at
	eof   bool
}

// StartVM starts QEMU with opts. The machine runs until the process is
// killed; its console goes to opts.Log and is kept for Expect.
func StartVM(opts VMOptions) (*VM, error) {
	if opts.Memory == 0 {
		opts.Memory = DefaultMemory
	}
	if strings.Contains(opts.Server, ",") {
		return nil, fmt.Errorf("start vm: server URL %q has a comma", opts.Server)
	}
	args := []string{
		"-accel", "tcg",
		"-machine", "q35",
		"-m", fmt.Sprint(opts.Memory),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + opts.Vars,
		"-drive", "if=virtio,format=raw,file=" + opts.Disk,
		"-nic", "user,model=virtio-net-pci",
		"-fw_cfg", "name=" + ServerConfigName + ",string=" + opts.Server,
		"-serial", "stdio",
	}
	qemu := LookTool("qemu-system-x86_64")
	if qemu == "" {
		return nil, errors.New("start vm: qemu-system-x86_64 is not installed")
	}
	cmd := exec.Command(qemu, args...)
	// A test binary killed by its -timeout runs no cleanup: the machine
	// must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start vm: %w", err)
	}
	cmd.Stderr = opts.Log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start vm: %w", err)
	}
	vm := &VM{cmd: cmd, exited: make(chan struct{})}
	vm.cond = sync.NewCond(&vm.mu)
	read := make(chan struct{})
	go func() {
		vm.read(stdout, opts.Log)
		close(read)
	}()
	go func() {
		<-read
		vm.err = cmd.Wait()
		close(vm.exited)
	}()
	return vm, nil
}

// controlRE matches terminal control sequences that firmware and GRUB
// send to the serial console.
var controlRE = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78cDEHM])`)

// read copies the console to log and splits it into lines.
func (vm *VM) read(r io.Reader, log io.Writer) {
	br := bufio.NewReader(io.TeeReader(r, log))
	for {
		s, err := br.ReadString('\n')
		if s != "" {
			text := controlRE.ReplaceAllString(s, "")
			text = strings.TrimRight(strings.ReplaceAll(text, "\r", ""), "\n")
			vm.mu.Lock()
			vm.lines = append(vm.lines, Line{Time: time.Now(), Text: text})
			vm.cond.Broadcast()
			vm.mu.Unlock()
		}
		if err != nil {
			vm.mu.Lock()
			vm.eof = true
			vm.cond.Broadcast()
			vm.mu.Unlock()
			return
		}
	}
}

// ErrVMExited is returned by Expect when the machine stopped before the
// line came.
var ErrVMExited = errors.New("e2e: vm exited")

// ErrFatalLine is returned by Expect when a line matching its fatal
// pattern came first.
var ErrFatalLine = errors.New("e2e: fatal console line")

// Expect waits up to timeout for a console line matching re, looking from
// the line after the one the previous Expect returned, and returns it. A
// line matching fatal, unless nil, that comes first ends the wait with
// ErrFatalLine.
func (vm *VM) Expect(re, fatal *regexp.Regexp, timeout time.Duration) (Line, error) {
	timer := time.AfterFunc(timeout, func() {
		vm.mu.Lock()
		vm.cond.Broadcast()
		vm.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)

	vm.mu.Lock()
	defer vm.mu.Unlock()
	for {
		for ; vm.next < len(vm.lines); vm.next++ {
			l := vm.lines[vm.next]
			if re.MatchString(l.Text) {
				vm.next++
				return l, nil
			}
			if fatal != nil && fatal.MatchString(l.Text) {
				vm.next++
				return l, fmt.Errorf("wait for console line /%s/: %w: %s", re, ErrFatalLine,
					l.Text)
			}
		}
		switch {
		case vm.eof:
			return Line{}, fmt.Errorf("wait for console line /%s/: %w", re, ErrVMExited)
		case !time.Now().Before(deadline):
			return Line{}, fmt.Errorf("wait for console line /%s/: none in %v", re, timeout)
		}
		vm.cond.Wait()
	}
}

// Lines returns the console lines read so far.
func (vm *VM) Lines() []Line {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]Line(nil), vm.lines...)
}

// Kill ends QEMU with SIGKILL, which to the guest is a power cut: what it
// had not flushed to the disk is lost. It waits for the process to end.
func (vm *VM) Kill() {
	select {
	case <-vm.exited:
		return
	default:
	}
	vm.cmd.Process.Signal(syscall.SIGKILL)
	<-vm.exited
}

// Exited is closed when the QEMU process has ended.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// CopyVars makes the writable copy of the firmware's variable store a new
// machine needs, at path.
func CopyVars(path string) error {
	if err := copyFile(OVMFVars, path, 0o644); err != nil {
		return fmt.Errorf("copy firmware variables: %w", err)
	}
	return nil
}

// Files the machines need besides the Tools.
var Files = []string{OVMFCode, OVMFVars, "/usr/lib/grub/x86_64-efi/moddep.lst"}

// missingFile returns the first of Files that does not exist, or "".
func missingFile() string {
	for _, f := range Files {
		if _, err := os.Stat(f); err != nil {
			return f
		}
	}
	return ""
}
