package slot

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// DefaultCustomTimeout bounds each run of a Custom program when
// Custom.Timeout is zero.
const DefaultCustomTimeout = 30 * time.Second

// MaxCustomOutput caps the standard output kept from one run of a Custom
// program; a run printing more fails.
const MaxCustomOutput = 64 << 10

// CustomExitUnknownBootname is the exit status by which a Custom program
// says it does not know the bootname it was given; Custom then returns an
// error wrapping ErrUnknownBootname.
const CustomExitUnknownBootname = 3

// customStderrTail is how many trailing bytes of standard error an error
// from a failed run quotes.
const customStderrTail = 1 << 10

// customWaitDelay is how long a killed program's output pipes may stay open
// (held by its children) before they are closed under it.
const customWaitDelay = 2 * time.Second

// Custom delegates to an external program that knows the device's boot
// loader, for firmware ROTA has no backend for. The protocol (also in
// docs/bootloaders/custom.md):
//
//	PROGRAM get-primary                  prints the bootname booted next,
//	                                     or nothing when no slot is bootable
//	PROGRAM get-state BOOTNAME           prints "good", "bad" or
//	                                     "trying N" (N tries left; 0 is bad)
//	PROGRAM set-primary BOOTNAME N       boot BOOTNAME first, for N tries,
//	                                     then fall back
//	PROGRAM set-state BOOTNAME good|bad  confirm or disable BOOTNAME
//	PROGRAM get-current                  prints the bootname now running
//
// Output is one line; surrounding white space is ignored. Exit status 0 is
// success, CustomExitUnknownBootname means the bootname is unknown, any
// other status is a failure. A set- command must be durable when the program
// exits. Bootnames are ASCII letters, digits, '.', '_' and '-', never
// starting with '-' or '.', and are passed as separate arguments (no
// shell).
//
// Primary, State and Mark map directly to get-primary, get-state and
// set-primary (MarkActive, with Mark.Attempts or DefaultAttempts) or
// set-state (MarkGood, MarkBad). State reports AttemptsLeft -1 for good, 0
// for bad and N for "trying N". Booted runs get-current.
//
// Each run gets Timeout, its process group is killed when the time is up or
// the context ends, standard input is empty, standard output is capped at
// MaxCustomOutput, and errors quote the end of standard error.
type Custom struct {
	// Program is the path of the executable.
	Program string

	// Timeout bounds each run. Zero means DefaultCustomTimeout.
	Timeout time.Duration
}

// Primary runs "get-primary".
func (c *Custom) Primary(ctx context.Context) (string, error) {
	out, err := c.run(ctx, "get-primary")
	if err != nil {
		return "", err
	}
	if out != "" && !safeBootname(out) {
		return "", c.badOutput("get-primary", out)
	}
	return out, nil
}

// State runs "get-state BOOTNAME".
func (c *Custom) State(ctx context.Context, bootname string) (BootState, error) {
	if err := checkCustomBootname(bootname); err != nil {
		return BootState{}, err
	}
	out, err := c.run(ctx, "get-state", bootname)
	if err != nil {
		return BootState{}, err
	}

	switch out {
	case "good":
		return BootState{Good: true, AttemptsLeft: -1}, nil
	case "bad":
		return BootState{Bad: true}, nil
	}
	tries, ok := strings.CutPrefix(out, "trying ")
	n, err := strconv.Atoi(tries)
	if !ok || err != nil || n < 0 || strconv.Itoa(n) != tries {
		return BootState{}, c.badOutput("get-state "+bootname, out)
	}
	if n == 0 {
		return BootState{Bad: true}, nil
	}
	return BootState{AttemptsLeft: n}, nil
}

// Mark runs "set-primary BOOTNAME N" for MarkActive and "set-state BOOTNAME
// good|bad" for MarkGood and MarkBad.
func (c *Custom) Mark(ctx context.Context, bootname string, m Mark) error {
	if err := checkCustomBootname(bootname); err != nil {
		return err
	}

	var args []string
	switch m.Kind {
	case MarkGood, MarkBad:
		args = []string{"set-state", bootname, m.Kind.String()}
	case MarkActive:
		n := m.Attempts
		if n <= 0 {
			n = DefaultAttempts
		}
		args = []string{"set-primary", bootname, strconv.Itoa(n)}
	default:
		return fmt.Errorf("mark %q: unknown mark kind %d", bootname, m.Kind)
	}
	_, err := c.run(ctx, args...)
	return err
}

// Booted runs "get-current".
func (c *Custom) Booted(ctx context.Context) (string, error) {
	out, err := c.run(ctx, "get-current")
	if err != nil {
		return "", err
	}
	if !safeBootname(out) {
		return "", c.badOutput("get-current", out)
	}
	return out, nil
}

// run starts the program with args and returns its trimmed output.
func (c *Custom) run(ctx context.Context, args ...string) (string, error) {
	op := c.describe(args)
	if c.Program == "" {
		return "", fmt.Errorf("run %s: no program configured", op)
	}

	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCustomTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	stdout := &cappedBuffer{max: MaxCustomOutput}
	stderr := &tailBuffer{max: customStderrTail}
	cmd := exec.CommandContext(runCtx, c.Program, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = customWaitDelay
	killProcessGroupOnCancel(cmd)

	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("run %s: %w", op, ctx.Err())
	case runCtx.Err() != nil:
		return "", fmt.Errorf("run %s: killed after %s: %w", op, timeout, runCtx.Err())
	case err != nil:
		return "", c.failed(op, err, stderr.String())
	case stdout.overflow:
		return "", fmt.Errorf("run %s: output exceeds %d bytes", op, MaxCustomOutput)
	}

	out := strings.TrimSpace(stdout.String())
	if strings.ContainsAny(out, "\n\r") {
		return "", c.badOutput(strings.Join(args, " "), out)
	}
	return out, nil
}

// failed builds the error for a run that did not exit with status 0.
func (c *Custom) failed(op string, err error, tail string) error {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && exitErr.ExitCode() == CustomExitUnknownBootname {
		err = fmt.Errorf("%w (%w)", ErrUnknownBootname, err)
	}
	tail = strings.TrimSpace(tail)
	if tail == "" {
		return fmt.Errorf("run %s: %w", op, err)
	}
	return fmt.Errorf("run %s: %w: stderr: %s", op, err, tail)
}

// badOutput builds the error for output outside the protocol.
func (c *Custom) badOutput(command, out string) error {
	const quoted = 80
	if len(out) > quoted {
		out = out[:quoted] + "..."
	}
	return fmt.Errorf("run %s: unexpected output %q: %w", c.describe(strings.Fields(command)), out,
		ErrCorruptEnv)
}

// describe names one run in errors: the program and its arguments.
func (c *Custom) describe(args []string) string {
	return strconv.Quote(strings.Join(append([]string{c.Program}, args...), " "))
}

// checkCustomBootname refuses bootnames that could be mistaken for options
// or break the one-line protocol.
func checkCustomBootname(bootname string) error {
	if !safeBootname(bootname) {
		return fmt.Errorf("custom boot loader bootname %q: %w", bootname, ErrUnknownBootname)
	}
	return nil
}

// cappedBuffer keeps the first max bytes written to it and notes whether
// more came. It never fails a write, so the program is not stopped by a
// broken pipe before it exits.
type cappedBuffer struct {
	buf      []byte
	max      int
	overflow bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := b.max - len(b.buf)
	if len(p) > room {
		b.overflow = true
		b.buf = append(b.buf, p[:max(room, 0)]...)
		return len(p), nil
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *cappedBuffer) String() string { return string(b.buf) }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > b.max {
		p = p[len(p)-b.max:]
	}
	if drop := len(b.buf) + len(p) - b.max; drop > 0 {
		b.buf = append(b.buf[:0], b.buf[drop:]...)
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *tailBuffer) String() string { return string(b.buf) }
