package rota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"
)

// Defaults for hooks and health checks.
const (
	// DefaultHookTimeout bounds each hook executable.
	DefaultHookTimeout = 60 * time.Second

	// DefaultHealthTimeout bounds each health-check executable.
	DefaultHealthTimeout = 120 * time.Second

	// maxProgramOutput caps what is kept of a program's output.
	maxProgramOutput = 4 << 10
)

// runDir runs every executable regular file in dir whose name has the
// given prefix (all of them when prefix is ""), in lexical order, each
// with timeout and env added to the agent's environment. It stops at the
// first failure and returns it, naming the program and quoting the tail of
// its output. A missing directory runs nothing.
func runDir(ctx context.Context, dir, prefix string, timeout time.Duration, env []string) error {
	if dir == "" {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		name := e.Name()
		if prefix != "" && name != prefix && !hasPrefixDot(name, prefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode()&0o111 == 0 {
			continue
		}
		if err := runProgram(ctx, filepath.Join(dir, name), timeout, env); err != nil {
			return err
		}
	}
	return nil
}

// hasPrefixDot reports whether name is prefix followed by "." or "-",
// such as "reboot.enter.10-app" for prefix "reboot.enter".
func hasPrefixDot(name, prefix string) bool {
	return len(name) > len(prefix) && name[:len(prefix)] == prefix &&
		(name[len(prefix)] == '.' || name[len(prefix)] == '-')
}

// tailBuffer keeps the last bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > maxProgramOutput {
		t.b = append(t.b[:0], t.b[len(t.b)-maxProgramOutput:]...)
	}
	return len(p), nil
}

func runProgram(ctx context.Context, path string, timeout time.Duration, env []string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = append(os.Environ(), env...)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so a timeout kills what it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("run %s: timed out after %s: %s", path, timeout, bytes.TrimSpace(out.b))
	}
	if err != nil {
		return fmt.Errorf("run %s: %w: %s", path, err, bytes.TrimSpace(out.b))
	}
	return nil
}
