package slot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
)

// Variables of the GRUB boot-once scheme, as read by
// docs/bootloaders/grub.cfg.
const (
	// grubOrderVar lists bootnames by preference, separated by spaces.
	grubOrderVar = "ORDER"

	// grubOKSuffix names <bootname>_OK: "1" when the slot may be booted.
	grubOKSuffix = "_OK"

	// grubTrySuffix names <bootname>_TRY: "1" once the script has booted
	// the slot and nobody has confirmed that boot yet.
	grubTrySuffix = "_TRY"
)

// maxEnvBootnameLen bounds a bootname used inside boot loader variable
// names; a grubenv holds only 1024 bytes.
const maxEnvBootnameLen = 32

// GRUB is a Bootloader for GRUB 2 using the widely used boot-once scheme
// kept in a grubenv file and run by the script in docs/bootloaders/grub.cfg:
//
//   - ORDER lists bootnames by preference, separated by spaces;
//   - <bootname>_OK is "1" when the slot may be booted;
//   - <bootname>_TRY is "1" once the script has booted the slot and the
//     boot has not been confirmed.
//
// At every boot the script picks the first slot in ORDER whose _OK is "1"
// and whose _TRY is not "1", sets its _TRY to "1" and saves the block. When
// no slot qualifies it first clears _TRY on every slot whose _OK is "1", so
// that a power cut before a confirmation never leaves the device without a
// bootable slot. Every boot is therefore a trial: the agent must mark the
// booted slot good after each boot, or the next boot falls back.
//
// Mark writes:
//
//   - MarkActive: the slot moves to the front of ORDER, _OK=1, _TRY=0 and
//     ROTA_<bootname>_TRIAL=1;
//   - MarkGood: _OK=1, _TRY=0, the trial variable removed;
//   - MarkBad: _OK=0, _TRY=0, the trial variable removed.
//
// MarkGood and MarkBad keep ORDER, appending the slot when it is missing.
// Mark.Attempts is ignored: the scheme gives a slot one try. The script
// never reads ROTA_<bootname>_TRIAL; it only lets State tell a slot waiting
// for its trial boot from a confirmed one, which the scheme's own variables
// cannot. State reports:
//
//   - Bad (AttemptsLeft 0) when the script would skip the slot: _OK is not
//     "1", _TRY is "1" (its try is spent, as for the running slot before it
//     is confirmed), or the slot is not in ORDER;
//   - on trial (neither Good nor Bad, AttemptsLeft 1) when it is bootable and
//     its trial variable is set;
//   - Good (AttemptsLeft -1) otherwise.
//
// Other variables in the block, and their order, are kept. A GRUB value
// holds a path and a mutex; each call reads the block and each change
// rewrites it with WriteGrubEnv. Several values must not share one file.
type GRUB struct {
	path      string
	bootnames []string
	mu        sync.Mutex
}

// NewGRUB returns a GRUB backend for the grubenv at envPath
// (DefaultGrubEnvPath when empty) and the slots named by bootnames. A
// bootname is 1 to 32 ASCII letters, digits and underscores, not starting
// with a digit, because the script builds GRUB variable names from it.
// The file must exist: provisioning creates it (docs/operations.md).
func NewGRUB(envPath string, bootnames []string) (*GRUB, error) {
	if envPath == "" {
		envPath = DefaultGrubEnvPath
	}
	if err := checkEnvBootnames(bootnames); err != nil {
		return nil, fmt.Errorf("new grub backend %s: %w", envPath, err)
	}
	return &GRUB{path: envPath, bootnames: slices.Clone(bootnames)}, nil
}

// Path returns the grubenv file's path.
func (g *GRUB) Path() string { return g.path }

// Primary returns the slot the script will boot next, found as the script
// finds it (including its fallback), or "" when no slot is bootable. It
// may name a slot listed in ORDER but unknown to g.
func (g *GRUB) Primary(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("primary slot in %s: %w", g.path, err)
	}

	g.mu.Lock()
	defer g.mu.Unlock()

	env, err := ReadGrubEnv(g.path)
	if err != nil {
		return "", fmt.Errorf("primary slot: %w", err)
	}
	name, _ := grubSelect(env)
	return name, nil
}

// State returns what the grubenv records for bootname; see GRUB for the
// mapping.
func (g *GRUB) State(ctx context.Context, bootname string) (BootState, error) {
	if err := ctx.Err(); err != nil {
		return BootState{}, fmt.Errorf("state of %q in %s: %w", bootname, g.path, err)
	}
	if !slices.Contains(g.bootnames, bootname) {
		return BootState{}, fmt.Errorf("state of %q in %s: %w",
			bootname, g.path, ErrUnknownBootname)
	}

	g.mu.Lock()
	defer g.mu.Unlock()

	env, err := ReadGrubEnv(g.path)
	if err != nil {
		return BootState{}, fmt.Errorf("state of %q: %w", bootname, err)
	}
	return grubState(env, bootname), nil
}

// Mark records m for bootname and rewrites the grubenv durably, creating
// it when it does not exist.
func (g *GRUB) Mark(ctx context.Context, bootname string, m Mark) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mark %q %s in %s: %w", bootname, m.Kind, g.path, err)
	}
	if !slices.Contains(g.bootnames, bootname) {
		return fmt.Errorf("mark %q %s in %s: %w", bootname, m.Kind, g.path, ErrUnknownBootname)
	}

	g.mu.Lock()
	defer g.mu.Unlock()

	// A missing block is not created here: a block holding only the
	// bootname being marked would leave the running slot out of ORDER,
	// with nothing to fall back to. Provisioning creates it.
	env, err := ReadGrubEnv(g.path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mark %q %s: grubenv %s does not exist; create it with "+
			"grub-editenv (see docs/operations.md): %w", bootname, m.Kind, g.path, err)
	}
	if err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}

	if err := grubMark(env, bootname, m.Kind); err != nil {
		return fmt.Errorf("mark %q %s in %s: %w", bootname, m.Kind, g.path, err)
	}
	if err := WriteGrubEnv(g.path, env); err != nil {
		return fmt.Errorf("mark %q %s: %w", bootname, m.Kind, err)
	}
	return nil
}

// SimulateBoot does what docs/bootloaders/grub.cfg does at power-on: it
// picks a slot as Primary does, applies the script's fallback when needed,
// sets the chosen slot's _TRY to "1", saves the block and returns the
// bootname. When no slot is bootable it returns ErrNoBootableSlot, having
// saved nothing.
func (g *GRUB) SimulateBoot(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("simulate boot with %s: %w", g.path, err)
	}

	g.mu.Lock()
	defer g.mu.Unlock()

	env, err := ReadGrubEnv(g.path)
	if err != nil {
		return "", fmt.Errorf("simulate boot: %w", err)
	}
	name, reset := grubSelect(env)
	if name == "" {
		return "", fmt.Errorf("simulate boot with %s: %w", g.path, ErrNoBootableSlot)
	}

	for _, n := range reset {
		if err := env.Set(n+grubTrySuffix, "0"); err != nil {
			return "", fmt.Errorf("simulate boot with %s: %w", g.path, err)
		}
	}
	if err := env.Set(name+grubTrySuffix, "1"); err != nil {
		return "", fmt.Errorf("simulate boot with %s: %w", g.path, err)
	}
	if err := WriteGrubEnv(g.path, env); err != nil {
		return "", fmt.Errorf("simulate boot: %w", err)
	}
	return name, nil
}

// grubSelect runs the script's choice on env without changing it. It
// returns the slot to boot ("" when none) and, when the script had to fall
// back, the slots whose _TRY it clears first.
func grubSelect(env *GrubEnv) (string, []string) {
	order := grubOrder(env)
	for _, name := range order {
		if grubBootable(env, name) {
			return name, nil
		}
	}

	// The fallback: give every slot still marked OK another try.
	var reset []string
	for _, name := range order {
		if envNamePattern(name) && grubVar(env, name+grubOKSuffix) == "1" &&
			!slices.Contains(reset, name) {
			reset = append(reset, name)
		}
	}
	if len(reset) == 0 {
		return "", nil
	}
	return reset[0], reset
}

// grubBootable reports whether the script boots name without falling back.
// Names the script's pattern check rejects are skipped, as it skips them.
func grubBootable(env *GrubEnv, name string) bool {
	return envNamePattern(name) &&
		grubVar(env, name+grubOKSuffix) == "1" &&
		grubVar(env, name+grubTrySuffix) != "1"
}

// grubState maps env's record of bootname to a BootState.
func grubState(env *GrubEnv, bootname string) BootState {
	switch {
	case !slices.Contains(grubOrder(env), bootname) || !grubBootable(env, bootname):
		return BootState{Bad: true}
	case grubVar(env, trialVar(bootname)) == "1":
		return BootState{AttemptsLeft: 1}
	default:
		return BootState{Good: true, AttemptsLeft: -1}
	}
}

// grubMark applies a mark of kind k for bootname to env.
func grubMark(env *GrubEnv, bootname string, k MarkKind) error {
	order := grubOrder(env)
	ok, trial := "1", true
	switch k {
	case MarkActive:
		order = append([]string{bootname}, slices.DeleteFunc(order, func(n string) bool {
			return n == bootname
		})...)
	case MarkGood:
		trial = false
	case MarkBad:
		ok, trial = "0", false
	default:
		return fmt.Errorf("unknown mark kind %d", int(k))
	}
	if !slices.Contains(order, bootname) {
		order = append(order, bootname)
	}

	env.Unset(trialVar(bootname))
	sets := [][2]string{
		{grubOrderVar, strings.Join(order, " ")},
		{bootname + grubOKSuffix, ok},
		{bootname + grubTrySuffix, "0"},
	}
	if trial {
		sets = append(sets, [2]string{trialVar(bootname), "1"})
	}
	for _, kv := range sets {
		if err := env.Set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// grubOrder returns ORDER split as the script's for loop splits it.
func grubOrder(env *GrubEnv) []string {
	return strings.Fields(grubVar(env, grubOrderVar))
}

// grubVar returns a variable's value, "" when unset (as GRUB expands it).
func grubVar(env *GrubEnv, name string) string {
	v, _ := env.Get(name)
	return v
}

// trialVar names the variable ROTA sets while bootname is on trial. Boot
// scripts ignore it; it is shared by the GRUB and U-Boot backends.
func trialVar(bootname string) string {
	return "ROTA_" + bootname + "_TRIAL"
}

// checkEnvBootnames checks the bootnames given to an environment backend:
// at least one, each valid and listed once.
func checkEnvBootnames(bootnames []string) error {
	if len(bootnames) == 0 {
		return errors.New("no bootnames")
	}
	for i, name := range bootnames {
		if !validEnvBootname(name) {
			return fmt.Errorf("bootname %q: want 1 to %d letters, digits or '_', "+
				"not starting with a digit", name, maxEnvBootnameLen)
		}
		if slices.Contains(bootnames[:i], name) {
			return fmt.Errorf("bootname %q listed twice", name)
		}
	}
	return nil
}

// validEnvBootname reports whether name can be spliced into boot loader
// variable names and script commands: 1 to maxEnvBootnameLen ASCII
// letters, digits and underscores, not starting with a digit.
func validEnvBootname(name string) bool {
	return len(name) <= maxEnvBootnameLen && envNamePattern(name)
}

// envNamePattern reports whether name matches the pattern the boot scripts
// check before using a name from the boot order: ^[A-Za-z_][A-Za-z0-9_]*$.
func envNamePattern(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
